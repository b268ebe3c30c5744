import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it } from 'vitest'
import { BaseError } from '../core/Errors.ts'
import { createFacilitator } from './createFacilitator.ts'
import { FacilitatorUnavailableError, httpFacilitator } from './http.ts'
import { fakeScheme, network, payer, payment } from './internal/fakeScheme.ts'

const url = 'http://facilitator.test/'

/** A fetch that answers from a handler in-process, recording what was sent. */
function through(handle: (request: Request) => Promise<Response>) {
  const sent: Request[] = []
  const fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = new Request(input, init)
    sent.push(request.clone())
    return handle(request)
  }
  return { fetch: fetch as typeof globalThis.fetch, sent }
}

const answer = (body: string, status = 200, headers: Record<string, string> = {}) =>
  through(async () => new Response(body, { status, headers: { 'content-type': 'application/json', ...headers } }))

async function unavailable(promise: Promise<unknown>): Promise<FacilitatorUnavailableError> {
  const error = await promise.then(
    () => undefined,
    (error: unknown) => error,
  )
  expect(error).toBeInstanceOf(FacilitatorUnavailableError)
  expect((error as BaseError).code).toBe('facilitator_unavailable')
  return error as FacilitatorUnavailableError
}

describe('httpFacilitator', () => {
  it('verifies, settles and lists kinds through a facilitator HTTP API, in version 2 bodies', async () => {
    const facilitator = createFacilitator({ schemes: [fakeScheme()] })
    const { fetch, sent } = through(facilitator.handler)
    const client = httpFacilitator(url, { fetch, headers: { authorization: 'Bearer t' } })
    expect(await client.verify(payment('0x1'))).toEqual({ isValid: true, payer })
    expect(await client.settle(payment('0x1'))).toMatchObject({ success: true, transaction: `0x${'1'.padStart(64, '0')}`, network })
    expect((await client.supported()).kinds[0]).toMatchObject({ scheme: 'exact', network })

    expect(sent.map((request) => `${request.method} ${request.url}`)).toEqual([
      'POST http://facilitator.test/verify',
      'POST http://facilitator.test/settle',
      'GET http://facilitator.test/supported',
    ])
    expect(sent[0]?.headers.get('authorization')).toBe('Bearer t')
    expect(sent[0]?.headers.get('content-type')).toBe('application/json')
    const { payload, requirements } = payment('0x1')
    expect(await sent[0]?.json()).toEqual({ x402Version: 2, paymentPayload: payload, paymentRequirements: requirements })
  })

  it('asks a headers function per call', async () => {
    const { fetch, sent } = answer('{"kinds":[]}')
    await httpFacilitator(url, { fetch, headers: async (path) => ({ 'x-path': path }) }).supported()
    expect(sent[0]?.headers.get('x-path')).toBe('supported')
  })

  it('returns a verdict a facilitator sends with a 4xx status', async () => {
    const { fetch } = answer('{"isValid":false,"invalidReason":"invalid_exact_evm_signature"}', 400)
    expect(await httpFacilitator(url, { fetch }).verify(payment('0x1'))).toEqual({
      isValid: false,
      invalidReason: 'invalid_exact_evm_signature',
    })
  })

  it('throws facilitator_unavailable on a problem answer, with its code and detail', async () => {
    const { fetch } = answer('{"type":"about:blank","status":500,"code":"internal_error","detail":"try again"}', 500)
    const error = await unavailable(httpFacilitator(url, { fetch }).settle(payment('0x1')))
    expect(error.message).toMatch(/answered settle with status 500/)
    expect(error.details).toBe('internal_error: try again')
  })

  it('throws facilitator_unavailable on a body that is not JSON', async () => {
    const { fetch } = answer('<html>Bad Gateway</html>', 502)
    const error = await unavailable(httpFacilitator(url, { fetch }).verify(payment('0x1')))
    expect(error.message).toMatch(/status 502 and a body that is not JSON/)
    expect(error.details).toBe('<html>Bad Gateway</html>')
  })

  it('throws facilitator_unavailable on a 200 that does not match the schema', async () => {
    const { fetch } = answer('{"valid":true}')
    const error = await unavailable(httpFacilitator(url, { fetch }).verify(payment('0x1')))
    expect(error.details).toMatch(/^isValid: Invalid input/)
  })

  it('throws facilitator_unavailable on an answer over the size limit', async () => {
    const { fetch } = answer(JSON.stringify({ kinds: [], padding: 'x'.repeat(2048) }))
    const error = await unavailable(httpFacilitator(url, { fetch, maxResponseBytes: 1024 }).supported())
    expect(error.message).toMatch(/unreadable supported answer/)
  })

  it('throws facilitator_unavailable when no answer comes within the deadline', async () => {
    const hang = (async (_: unknown, init?: RequestInit) =>
      new Promise((_resolve, reject) => init?.signal?.addEventListener('abort', () => reject(init.signal?.reason)))) as typeof fetch
    const started = Date.now()
    const error = await unavailable(httpFacilitator(url, { fetch: hang, timeoutMs: 50 }).verify(payment('0x1')))
    expect(error.message).toMatch(/did not answer verify within 50 ms/)
    expect(Date.now() - started).toBeLessThan(1_000)
  })

  it('the deadline covers a body that stalls after the headers', async () => {
    const server = createServer((_, response) => {
      response.writeHead(200, { 'content-type': 'application/json' })
      response.write('{"isValid":')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = server.address() as AddressInfo
      const error = await unavailable(httpFacilitator(`http://127.0.0.1:${port}`, { timeoutMs: 100 }).verify(payment('0x1')))
      expect(error.message).toMatch(/within 100 ms/)
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })

  it('throws facilitator_unavailable when nothing listens', async () => {
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    await new Promise((resolve) => server.close(resolve))
    const error = await unavailable(httpFacilitator(`http://127.0.0.1:${port}`).supported())
    expect(error.message).toMatch(/could not be reached for supported/)
  })

  it('refuses a URL that is not http(s)', () => {
    expect(() => httpFacilitator('localhost:4020')).toThrow(/is not an http\(s\) URL/)
    expect(() => httpFacilitator('ftp://example.com')).toThrow(BaseError)
  })
})
