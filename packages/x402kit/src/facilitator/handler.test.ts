import { describe, expect, it } from 'vitest'
import { createFacilitator } from './createFacilitator.ts'
import { fakeScheme, network, payer, payment, requirements } from './internal/fakeScheme.ts'
import { memoryStore } from './Store.ts'

const base = 'http://facilitator.test'

function setup(options: { maxBodyBytes?: number } = {}) {
  const scheme = fakeScheme()
  const facilitator = createFacilitator({ schemes: [scheme], ...options })
  return { scheme, handle: facilitator.handler }
}

function post(path: string, body: BodyInit | null, headers: Record<string, string> = {}) {
  return new Request(`${base}${path}`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', ...headers },
    duplex: 'half',
  } as RequestInit)
}

function v2Body(nonce: string, offer = {}) {
  const { payload, requirements } = payment(nonce, offer)
  return JSON.stringify({ x402Version: 2, paymentPayload: payload, paymentRequirements: requirements })
}

/** A body stream of `chunks` chunks of `size` bytes that counts how many were pulled. */
function stream(chunks: number, size: number) {
  const state = { pulled: 0 }
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (state.pulled === chunks) return controller.close()
      state.pulled++
      controller.enqueue(new Uint8Array(size).fill(0x20))
    },
  })
  return { body, state }
}

async function expectProblem(response: Response, status: number, code: string, detail?: RegExp) {
  expect(response.status).toBe(status)
  expect(response.headers.get('content-type')).toBe('application/problem+json')
  const body = await response.json()
  expect(body).toEqual({ type: 'about:blank', title: expect.any(String), status, detail: expect.any(String), code })
  if (detail) expect(body.detail).toMatch(detail)
  return body
}

describe('bad requests get a JSON problem with a stable code', () => {
  it('non-JSON body: 400 invalid_json', async () => {
    await expectProblem(await setup().handle(post('/verify', '{"x402Version": 2,')), 400, 'invalid_json', /not JSON/)
  })

  it('empty body: 400 invalid_json', async () => {
    await expectProblem(await setup().handle(post('/settle', null)), 400, 'invalid_json', /empty/)
  })

  it('body that is not UTF-8: 400 invalid_json', async () => {
    await expectProblem(await setup().handle(post('/verify', new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))), 400, 'invalid_json', /UTF-8/)
  })

  it('declared Content-Length over the limit: 413 body_too_large, before reading the body', async () => {
    const { body, state } = stream(100, 1024)
    const response = await setup().handle(post('/verify', body, { 'content-length': String(100 * 1024) }))
    await expectProblem(response, 413, 'body_too_large', /102400 bytes; the limit is 65536/)
    expect(state.pulled).toBeLessThanOrEqual(1)
  })

  it('actual body over the limit with no Content-Length: 413 body_too_large, reading stops at the limit', async () => {
    const { body, state } = stream(1000, 1024)
    const response = await setup({ maxBodyBytes: 8 * 1024 }).handle(post('/settle', body))
    await expectProblem(response, 413, 'body_too_large', /exceeds the limit of 8192 bytes/)
    expect(state.pulled).toBeLessThan(20)
  })

  it('a body within a custom limit is read', async () => {
    const response = await setup({ maxBodyBytes: 8 * 1024 }).handle(post('/verify', v2Body('0x1')))
    expect(response.status).toBe(200)
  })

  it('a body that misses a field: 400 invalid_request naming the field', async () => {
    const { payload, requirements: offer } = payment('0x1')
    const { amount: _, ...withoutAmount } = offer
    const body = JSON.stringify({ x402Version: 2, paymentPayload: payload, paymentRequirements: withoutAmount })
    await expectProblem(
      await setup().handle(post('/verify', body)),
      400,
      'invalid_request',
      /at paymentRequirements\.amount: Invalid input/,
    )
  })

  it('a version 1 body with a version 2 offer: 400 invalid_request naming the version 1 field', async () => {
    const { payload, requirements: offer } = payment('0x1')
    const body = JSON.stringify({
      x402Version: 1,
      paymentPayload: { ...payload, x402Version: 1, scheme: 'exact', network: 'base-sepolia' },
      paymentRequirements: offer,
    })
    await expectProblem(await setup().handle(post('/verify', body)), 400, 'invalid_request', /at paymentRequirements\.maxAmountRequired/)
  })

  it.each([['{}'], ['[]'], ['"verify"'], ['{"x402Version": 3, "paymentPayload": {}, "paymentRequirements": {}}']])(
    'a body that is no verify request (%s): 400 invalid_request',
    async (body) => {
      await expectProblem(await setup().handle(post('/verify', body)), 400, 'invalid_request', /x402Version.*1 or 2/)
    },
  )

  it('wrong method: 405 method_not_allowed with Allow', async () => {
    const response = await setup().handle(new Request(`${base}/verify`))
    await expectProblem(response, 405, 'method_not_allowed', /accepts POST, not GET/)
    expect(response.headers.get('allow')).toBe('POST')
    await expectProblem(await setup().handle(post('/supported', '{}')), 405, 'method_not_allowed')
  })

  it('unknown path: 404 not_found', async () => {
    await expectProblem(await setup().handle(new Request(`${base}/discovery/resources`)), 404, 'not_found', /POST \/verify/)
    await expectProblem(await setup().handle(post('/verify/../admin', '{}')), 404, 'not_found')
  })

  it('a store fault: 500 internal_error, without its message', async () => {
    const store = {
      ...memoryStore(),
      get: async () => {
        throw new Error('password authentication failed for user "x402"')
      },
      reserve: async () => {
        throw new Error('password authentication failed for user "x402"')
      },
    }
    const facilitator = createFacilitator({ schemes: [fakeScheme()], store, onError: () => {} })
    const body = await expectProblem(await facilitator.handler(post('/verify', v2Body('0x1'))), 500, 'internal_error')
    expect(body.detail).not.toMatch(/password/)
  })
})

describe('payments get 200 with the verdict', () => {
  it('verify: valid', async () => {
    const response = await setup().handle(post('/verify', v2Body('0x1')))
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toBe('application/json')
    expect(await response.json()).toEqual({ isValid: true, payer })
  })

  it('verify: unknown scheme and unknown network', async () => {
    const { handle } = setup()
    const scheme = await handle(post('/verify', v2Body('0x1', { scheme: 'upto' })))
    expect(scheme.status).toBe(200)
    expect(await scheme.json()).toMatchObject({ isValid: false, invalidReason: 'unsupported_scheme' })
    expect(await (await handle(post('/verify', v2Body('0x1', { network: 'eip155:1' })))).json()).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_network',
    })
  })

  it('settle: success, then the same answer again', async () => {
    const { handle, scheme } = setup()
    const first = await handle(post('/settle', v2Body('0x2')))
    expect(first.status).toBe(200)
    const result = await first.json()
    expect(result).toEqual({ success: true, payer, transaction: `0x${'1'.padStart(64, '0')}`, network })
    expect(await (await handle(post('/settle', v2Body('0x2')))).json()).toEqual(result)
    expect(scheme.calls.settle).toBe(1)
  })

  it('settle: unknown network', async () => {
    const response = await setup().handle(post('/settle', v2Body('0x1', { network: 'eip155:1' })))
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({
      success: false,
      errorReason: 'invalid_network',
      errorMessage: 'No scheme "exact" on eip155:1.',
      transaction: '',
      network: 'eip155:1',
    })
  })

  it('version 1: routed by its network name, and answered in it', async () => {
    const { handle } = setup()
    const { amount, ...offer } = requirements
    const v1Offer = { ...offer, network: 'base-sepolia', maxAmountRequired: amount, resource: 'https://api.test/weather', description: '' }
    const body = (nonce: string, v1Network = 'base-sepolia') =>
      JSON.stringify({
        x402Version: 1,
        paymentPayload: { x402Version: 1, scheme: 'exact', network: v1Network, payload: { nonce } },
        paymentRequirements: { ...v1Offer, network: v1Network },
      })
    expect(await (await handle(post('/verify', body('0x3')))).json()).toEqual({ isValid: true, payer })
    expect(await (await handle(post('/settle', body('0x3')))).json()).toMatchObject({ success: true, network: 'base-sepolia' })
    expect(await (await handle(post('/verify', body('0x4', 'atlantis')))).json()).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_network',
    })
    expect(await (await handle(post('/settle', body('0x4', 'atlantis')))).json()).toMatchObject({
      success: false,
      errorReason: 'invalid_network',
      network: 'atlantis',
    })
  })

  it('GET /supported and GET /health', async () => {
    const { handle } = setup()
    const supported = await handle(new Request(`${base}/supported`))
    expect(supported.status).toBe(200)
    expect(await supported.json()).toMatchObject({
      kinds: [{ x402Version: 2, scheme: 'exact', network }, { x402Version: 1 }],
      extensions: [],
    })
    expect(await (await handle(new Request(`${base}/health/`))).json()).toEqual({ status: 'ok' })
  })
})
