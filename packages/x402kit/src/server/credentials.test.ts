import { beforeEach, describe, expect, it } from 'vitest'
import * as Base64Json from '../core/Base64Json.ts'
import { settleResponse } from '../core/Facilitator.ts'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import * as Credential from '../credential/Credential.ts'
import { credentialKeys } from '../credential/Keys.ts'
import { credentialIssuer } from '../facilitator/credentials.ts'
import { fakeFacilitator, offersOf, type Payer, payer, payTo, requiredOf } from './internal/fakeFacilitator.ts'
import { createPaywall, type PaywallConfig } from './paywall.ts'

const issuer = 'https://facilitator.test'
const audience = 'https://api.test'
const keys = credentialKeys()
const issuing = credentialIssuer({ issuer, keys }, { now: Date.now, onError: (error) => errors.push(error) })
const keyFetches: string[] = []
const errors: unknown[] = []
let served: Record<string, number> = {}
let buyer: Payer

const facilitator = fakeFacilitator()

const config: PaywallConfig = {
  facilitator,
  payTo,
  network: 'eip155:84532',
  routes: {
    'GET /feed/*': { price: '$0.10', grants: { uses: 3 } },
    'GET /news/*': { price: '$0.05', grants: { window: '1h' } },
    'GET /weather': { price: '$0.001' },
    'GET /admin': { price: '$5', grants: { uses: 3 } },
  },
  credentials: {
    audience,
    trust: [{ issuer }],
    keys: {
      fetch: (async (url: string) => {
        keyFetches.push(url)
        return new Response(JSON.stringify(await keys.jwks()))
      }) as typeof fetch,
    },
  },
  onError: (error) => void errors.push(error),
}
const paywall = createPaywall(config)

/** The app: `/feed/fail` answers 500, `/feed/slow` takes 30 ms; everything else answers 200 at once. */
async function app(request: Request): Promise<Response> {
  const { pathname } = new URL(request.url)
  served[pathname] = (served[pathname] ?? 0) + 1
  if (pathname === '/feed/fail') return new Response('down', { status: 500 })
  if (pathname === '/feed/slow') await new Promise((resolve) => setTimeout(resolve, 30))
  return new Response(JSON.stringify({ path: pathname }), { headers: { 'content-type': 'application/json' } })
}

const get = (path: string, headers: Record<string, string> = {}, target?: string) =>
  paywall.handle(new Request(`http://localhost${path}`, { headers }), app, target ? { path: target } : undefined)
const withCredential = (path: string, token: string, target?: string) => get(path, { 'PAYMENT-CREDENTIAL': token }, target)
const reasonOf = (response: Response) => requiredOf(response)?.error
const totalServed = () => Object.values(served).reduce((sum, count) => sum + count, 0)

/** Pays for `path` and returns the credential the answer carries. */
async function buy(path: string): Promise<{ response: Response; token: string }> {
  const response = await get(path, { 'PAYMENT-SIGNATURE': await buyer.answer(await get(path)) })
  expect(response.status).toBe(200)
  return { response, token: response.headers.get('PAYMENT-CREDENTIAL')! }
}

/** A credential made here, on the terms of the offer for `path` unless overridden. */
async function mint(path: string, overrides: Partial<Credential.Claims> = {}, signer?: Credential.Signer): Promise<string> {
  const offer = offersOf(await get(path))[0]!
  const iat = Math.floor(Date.now() / 1000)
  return Credential.issue(signer ?? (await keys.signer()), {
    iss: issuer,
    aud: audience,
    sub: buyer.address,
    scope: 'GET /feed/*',
    paid: { scheme: 'exact', network: offer.network, asset: offer.asset, amount: offer.amount, payTo: offer.payTo, transaction: '0x1' },
    iat,
    exp: iat + 600,
    jti: crypto.randomUUID(),
    uses: 3,
    ...overrides,
  })
}

beforeEach(async () => {
  facilitator.reset()
  const settle = facilitator.onSettle
  facilitator.onSettle = async (payment) => issuing.issue(payment, await settle(payment))
  buyer ??= await payer()
  served = {}
  errors.length = 0
})

describe('a route that grants access', () => {
  it('asks for the credential in its offers’ extra.grant', async () => {
    const [offer] = offersOf(await get('/feed/today'))
    expect(offer?.extra).toEqual({ name: 'USDC', version: '2', grant: { audience, scope: 'GET /feed/*', uses: 3 } })
    expect(offersOf(await get('/news/today'))[0]?.extra?.grant).toEqual({ audience, scope: 'GET /news/*', windowSeconds: 3600 })
    expect(offersOf(await get('/weather'))[0]?.extra?.grant).toBeUndefined()
  })

  it('hands out the credential a payment earns in PAYMENT-CREDENTIAL, also in PAYMENT-RESPONSE', async () => {
    const { response, token } = await buy('/feed/today')
    expect(token).toMatch(/^ey[\w-]+\.[\w-]+\.[\w-]+$/)
    expect(response.headers.get('access-control-expose-headers')).toBe('PAYMENT-RESPONSE, PAYMENT-CREDENTIAL')
    const settlement = Base64Json.decode(response.headers.get('PAYMENT-RESPONSE')!, settleResponse)
    expect(settlement.extensions?.credential).toEqual({ token, expiresAt: expect.any(String) })
    expect(Credential.decode(token)).toMatchObject({ aud: audience, scope: 'GET /feed/*', uses: 3, sub: buyer.address })
    expect(errors).toEqual([])
  })

  it('serves an N-use credential N times without the facilitator, then asks for payment again', async () => {
    const { token } = await buy('/feed/today')
    facilitator.reset()
    for (const path of ['/feed/a', '/feed/b', '/feed/a']) {
      const response = await withCredential(path, token)
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual({ path })
      expect(response.headers.get('cache-control')).toBe('private')
    }
    const fourth = await withCredential('/feed/a', token)
    expect(fourth.status).toBe(402)
    expect(reasonOf(fourth)).toBe('credential_uses_exhausted')
    expect(offersOf(fourth)).toHaveLength(1)
    expect(facilitator.calls).toEqual({ verify: [], settle: [] })
    expect(totalServed()).toBe(4)
  })

  it.each([4, 20])('serves a 3-use credential sent %i times at once exactly 3 times', async (times) => {
    const token = await mint('/feed/slow', { uses: 3 })
    const responses = await Promise.all(Array.from({ length: times }, () => withCredential('/feed/slow', token)))
    const statuses = responses.map((response) => response.status)
    expect(statuses.filter((status) => status === 200)).toHaveLength(3)
    expect(responses.filter((response) => response.status === 402).map(reasonOf)).toEqual(
      Array(times - 3).fill('credential_uses_exhausted'),
    )
    expect(served['/feed/slow']).toBe(3)
  })

  it('gives the use back when the handler fails: a failed answer costs nothing', async () => {
    const token = await mint('/feed/x', { uses: 1 })
    expect((await withCredential('/feed/fail', token)).status).toBe(500)
    expect((await withCredential('/feed/fail', token)).status).toBe(500)
    expect((await withCredential('/feed/ok', token)).status).toBe(200)
    expect(reasonOf(await withCredential('/feed/ok', token))).toBe('credential_uses_exhausted')
  })

  it('serves a window credential any number of times until it expires', async () => {
    const { token } = await buy('/news/today')
    facilitator.reset()
    for (let i = 0; i < 10; i++) expect((await withCredential(`/news/${i}`, token)).status).toBe(200)
    expect(facilitator.calls.verify).toHaveLength(0)
    const iat = Math.floor(Date.now() / 1000) - 3600
    const expired = await mint('/news/x', { scope: 'GET /news/*', uses: undefined, iat, exp: iat + 3600 })
    expect(reasonOf(await withCredential('/news/x', expired))).toBe('credential_expired')
  })

  it('fetches the issuer’s keys once for all of it', async () => {
    const fresh = createPaywall(config)
    const before = keyFetches.length
    const token = await mint('/news/x', { scope: 'GET /news/*', uses: undefined })
    for (let i = 0; i < 20; i++)
      expect((await fresh.handle(new Request('http://localhost/news/x', { headers: { 'PAYMENT-CREDENTIAL': token } }), app)).status).toBe(
        200,
      )
    expect(keyFetches.slice(before)).toEqual(['https://facilitator.test/.well-known/jwks.json'])
  })
})

describe('credentials it refuses, each with its code and the offers to pay instead', () => {
  const forger = credentialKeys()
  const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')

  it.each<[string, string, () => Promise<string>, string?]>([
    ['forged (unknown key)', '/feed/x', async () => mint('/feed/x', {}, await forger.signer()), 'invalid_credential'],
    ['expired', '/feed/x', () => mint('/feed/x', { iat: 1_700_000_000, exp: 1_700_000_600 }), 'credential_expired'],
    ['for another server', '/feed/x', () => mint('/feed/x', { aud: 'https://other.test' }), 'credential_audience_mismatch'],
    ['from an untrusted issuer', '/feed/x', () => mint('/feed/x', { iss: 'https://evil.test' }), 'credential_untrusted_issuer'],
    [
      'alg none',
      '/feed/x',
      async () => `${b64url({ alg: 'none' })}.${b64url(Credential.decode(await mint('/feed/x')))}.`,
      'credential_algorithm_not_allowed',
    ],
    ['garbage', '/feed/x', async () => 'garbage', 'invalid_credential'],
    ['oversized', '/feed/x', async () => 'e'.repeat(5000), 'invalid_credential'],
    ['for another route', '/news/x', () => mint('/feed/x'), 'credential_scope_mismatch'],
    ['on a route that sells single calls', '/weather', () => mint('/feed/x'), 'credential_scope_mismatch'],
    ['stretched over ../ to a dearer route', '/admin', () => mint('/feed/x'), 'credential_scope_mismatch'],
    [
      'bought with a cheaper offer',
      '/feed/x',
      async () => mint('/feed/x', { paid: await paidFor('/feed/x', { amount: '99999' }) }),
      'credential_scope_mismatch',
    ],
    [
      'paid to someone else',
      '/feed/x',
      async () => mint('/feed/x', { paid: await paidFor('/feed/x', { payTo: buyer.address }) }),
      'credential_scope_mismatch',
    ],
    [
      'in another asset',
      '/feed/x',
      async () => mint('/feed/x', { paid: await paidFor('/feed/x', { asset: '0x0000000000000000000000000000000000000001' }) }),
      'credential_scope_mismatch',
    ],
    ['with more uses than the route sells', '/feed/x', () => mint('/feed/x', { uses: 4 }), 'credential_scope_mismatch'],
    ['with no use limit on a route that sells uses', '/feed/x', () => mint('/feed/x', { uses: undefined }), 'credential_scope_mismatch'],
    [
      'for a longer window than the route sells',
      '/news/x',
      () => mint('/news/x', { scope: 'GET /news/*', uses: undefined, exp: Math.floor(Date.now() / 1000) + 7200 }),
      'credential_scope_mismatch',
    ],
    ['whose scope is not a route key', '/feed/x', () => mint('/feed/x', { scope: '/feed/%2e%2e' }), 'credential_scope_mismatch'],
  ])('refuses a credential %s', async (_, path, make, reason) => {
    const token = await make()
    const target = path === '/admin' ? '/feed/../admin' : undefined
    const response = await withCredential(path, token, target)
    expect(response.status).toBe(402)
    expect(reasonOf(response)).toBe(reason)
    expect(offersOf(response).length).toBeGreaterThan(0)
    expect(totalServed()).toBe(0)
    expect(facilitator.calls).toEqual({ verify: [], settle: [] })
  })

  async function paidFor(path: string, change: Partial<PaymentRequirements>): Promise<Credential.Claims['paid']> {
    const offer = { ...offersOf(await get(path))[0]!, ...change }
    return { scheme: 'exact', network: offer.network, asset: offer.asset, amount: offer.amount, payTo: offer.payTo, transaction: '0x1' }
  }
})

describe('alongside payments', () => {
  it('takes a payment sent with a credential as a payment', async () => {
    const token = await mint('/feed/x')
    const payment = await buyer.answer(await get('/feed/x'))
    const response = await get('/feed/x', { 'PAYMENT-SIGNATURE': payment, 'PAYMENT-CREDENTIAL': token })
    expect(response.status).toBe(200)
    expect(facilitator.calls.settle).toHaveLength(1)
  })

  it('hands on no credential this paywall would refuse, and reports it', async () => {
    const settle = facilitator.onSettle
    const stranger = credentialIssuer({ issuer: 'https://stranger.test' }, { now: Date.now, onError: () => {} })
    facilitator.onSettle = async (payment) => stranger.issue(payment, await settle(payment))
    const response = await get('/feed/x', { 'PAYMENT-SIGNATURE': await buyer.answer(await get('/feed/x')) })
    expect(response.status).toBe(200)
    expect(response.headers.get('PAYMENT-CREDENTIAL')).toBeNull()
    expect(errors).toMatchObject([{ code: 'credential_untrusted_issuer' }])
  })

  it('ignores credentials without a credentials config, and refuses grants there', async () => {
    const plain = createPaywall({ ...config, credentials: undefined, routes: { 'GET /weather': { price: '$0.001' } } })
    const response = await plain.handle(
      new Request('http://localhost/weather', { headers: { 'PAYMENT-CREDENTIAL': await mint('/feed/x') } }),
      app,
    )
    expect(reasonOf(response)).toBe('payment_required')
    expect(() => createPaywall({ ...config, credentials: undefined })).toThrow(
      /Route "GET \/feed\/\*" grants access, but the paywall takes no credentials/,
    )
    expect(() => createPaywall({ ...config, routes: { '/a': { price: '$1', grants: { window: '1 hour' as never } } } })).toThrow(
      /Route "\/a": The grant window "1 hour" is not a duration/,
    )
  })
})
