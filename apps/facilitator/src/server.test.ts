import { mkdtemp, rm } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Payment, SchemeFacilitator } from 'x402kit'
import { httpFacilitator } from 'x402kit/facilitator'
import { ConfigError } from './config.ts'
import { type FacilitatorService, startFacilitatorService } from './server.ts'

const network = 'eip155:84532'
const requirements = { scheme: 'exact', network, amount: '1000', asset: '0xasset', payTo: '0xpayto', maxTimeoutSeconds: 60 }
const payment = (nonce: string): Payment => ({ requirements, payload: { x402Version: 2, accepted: requirements, payload: { nonce } } })

/** Stands in for the chain: counts settlements, each with its own hash. */
function fakeScheme(settleMs = 0) {
  const calls = { settle: 0 }
  const scheme: SchemeFacilitator = {
    scheme: 'exact',
    networks: [network],
    verify: async () => ({ isValid: true, payer: '0xpayer' }),
    settle: async () => {
      const call = ++calls.settle
      await new Promise((resolve) => setTimeout(resolve, settleMs))
      return { success: true, payer: '0xpayer', transaction: `0x${call}`, network }
    },
    settlementKey: (paid) => String(paid.payload.payload.nonce),
    signers: () => ['0x1111111111111111111111111111111111111111'],
  }
  return Object.assign(scheme, { calls })
}

/** A raw POST, so the declared length can differ from the body. */
function rawPost(url: string, path: string, headers: Record<string, string | number>, body: string) {
  return new Promise<{ status: number; connection: string | undefined; body: unknown }>((resolve, reject) => {
    const request = httpRequest(`${url}${path}`, { method: 'POST', headers, agent: false }, (response) => {
      let text = ''
      response.on('data', (chunk) => (text += chunk))
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, connection: response.headers.connection, body: JSON.parse(text) }),
      )
    })
    request.on('error', reject)
    request.end(body)
  })
}

describe('startFacilitatorService', () => {
  let dataDir: string
  let service: FacilitatorService | undefined

  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'x402-service-'))
  })
  afterEach(async () => {
    await service?.close()
    service = undefined
    await rm(dataDir, { recursive: true, force: true })
  })

  const start = (scheme: SchemeFacilitator) => startFacilitatorService({ port: 0, dataDir }, { schemes: [scheme] })

  it('serves the facilitator API over HTTP with a PGlite store', async () => {
    service = await start(fakeScheme())
    expect(service.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    const client = httpFacilitator(service.url)
    expect(await client.verify(payment('a'))).toEqual({ isValid: true, payer: '0xpayer' })
    expect(await client.settle(payment('a'))).toEqual({ success: true, payer: '0xpayer', transaction: '0x1', network })
    expect((await client.supported()).signers).toEqual({ 'eip155:*': ['0x1111111111111111111111111111111111111111'] })
    expect(await (await fetch(`${service.url}/health`)).json()).toEqual({ status: 'ok', database: 'pglite' })
  })

  it('refuses oversized and malformed bodies over a real socket with JSON problems', async () => {
    service = await start(fakeScheme())
    // Declared far beyond the limit and never sent: answered at once, and the connection closed rather than drained.
    const declared = await rawPost(service.url, '/verify', { 'content-type': 'application/json', 'content-length': 10_000_000_000 }, '{}')
    expect(declared).toMatchObject({ status: 413, connection: 'close', body: { code: 'body_too_large', status: 413 } })
    const chunked = await rawPost(
      service.url,
      '/settle',
      { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      'x'.repeat(70_000),
    )
    expect(chunked).toMatchObject({ status: 413, body: { code: 'body_too_large' } })
    expect(await rawPost(service.url, '/verify', { 'content-type': 'application/json' }, 'nope')).toMatchObject({
      status: 400,
      body: { code: 'invalid_json' },
    })
    const missing = await fetch(`${service.url}/nowhere`)
    expect(missing.status).toBe(404)
    expect(await missing.json()).toMatchObject({ code: 'not_found' })
    const wrongMethod = await fetch(`${service.url}/health`, { method: 'DELETE' })
    expect(wrongMethod.status).toBe(405)
  })

  it('keeps settlements across a restart: a settled payment is answered from the database', async () => {
    const first = fakeScheme()
    service = await start(first)
    const result = await httpFacilitator(service.url).settle(payment('b'))
    await service.close()

    const second = fakeScheme()
    service = await start(second)
    expect(await httpFacilitator(service.url).settle(payment('b'))).toEqual(result)
    expect(await httpFacilitator(service.url).verify(payment('b'))).toMatchObject({ isValid: false })
    expect(second.calls.settle).toBe(0)
  })

  it('lets a settlement in progress finish when it closes', async () => {
    service = await start(fakeScheme(200))
    const settling = httpFacilitator(service.url).settle(payment('c'))
    await new Promise((resolve) => setTimeout(resolve, 50))
    await service.close()
    expect(await settling).toMatchObject({ success: true, transaction: '0x1' })
  })

  it('counts and times every answer by scheme, network and outcome at /metrics', async () => {
    service = await start(fakeScheme())
    const client = httpFacilitator(service.url)
    await client.verify(payment('0xm1'))
    await client.verify(payment('0xm1')) // the same authorization again: refused with its reason
    await client.settle(payment('0xm1'))
    const response = await fetch(`${service.url}/metrics`)
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/)
    const text = await response.text()
    const labels = `scheme="exact",network="${network}"`
    expect(text).toContain(`x402_facilitator_answers_total{operation="verify",${labels},outcome="valid"} 1`)
    expect(text).toContain(`x402_facilitator_answers_total{operation="verify",${labels},outcome="invalid_exact_evm_nonce_already_used"} 1`)
    expect(text).toContain(`x402_facilitator_answers_total{operation="settle",${labels},outcome="settled"} 1`)
    expect(text).toMatch(new RegExp(`x402_facilitator_answer_seconds_count\\{operation="settle",${labels},outcome="settled"\\} 1`))
    expect(text).toContain('x402_facilitator_process_resident_memory_bytes')
  })

  it('is ready while its database answers, and not once it is closing', async () => {
    service = await start(fakeScheme(300))
    expect((await fetch(`${service.url}/ready`)).status).toBe(200)
    const settling = httpFacilitator(service.url).settle(payment('0xr1'))
    await new Promise((resolve) => setTimeout(resolve, 50))
    const closed = service.close()
    // Closing: new connections are refused or answered 503; the settlement in progress still finishes.
    const ready = await fetch(`${service.url}/ready`).then(
      (answer) => answer.status,
      () => 'refused',
    )
    expect([503, 'refused']).toContain(ready)
    expect(await settling).toMatchObject({ success: true })
    await closed
    service = undefined
  })

  it('reports an unreachable database on /health', async () => {
    service = await start(fakeScheme())
    await service.database.close()
    const response = await fetch(`${service.url}/health`)
    expect(response.status).toBe(503)
    expect(await response.json()).toMatchObject({ code: 'database_unavailable' })
  })

  it('refuses to start with no networks and no schemes', async () => {
    await expect(startFacilitatorService({ port: 0, dataDir })).rejects.toThrow(ConfigError)
    await expect(startFacilitatorService({ port: 0, dataDir })).rejects.toThrow(/networks: none configured/)
  })

  it('reports a port in use', async () => {
    service = await start(fakeScheme())
    const port = Number(new URL(service.url).port)
    const other = await mkdtemp(join(tmpdir(), 'x402-service-'))
    await expect(startFacilitatorService({ port, dataDir: other }, { schemes: [fakeScheme()] })).rejects.toThrow(/EADDRINUSE/)
    await rm(other, { recursive: true, force: true })
  })
})
