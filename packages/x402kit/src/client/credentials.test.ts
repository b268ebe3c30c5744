import { privateKeyToAccount } from 'viem/accounts'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { credentialKeys } from '../credential/Keys.ts'
import { credentialIssuer } from '../facilitator/credentials.ts'
import { fakeFacilitator, network, payTo } from '../server/internal/fakeFacilitator.ts'
import { createPaywall } from '../server/paywall.ts'
import { type Fetch, wrapFetch } from './fetch.ts'
import { getPaymentResult } from './PaymentResult.ts'

const issuer = 'https://facilitator.test'
const audience = 'http://api.test'
const keys = credentialKeys()
const account = privateKeyToAccount('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d')
const facilitator = fakeFacilitator()
const issuing = credentialIssuer({ issuer, keys }, { now: Date.now, onError: () => {} })

const paywall = createPaywall({
  facilitator,
  payTo,
  network,
  routes: {
    'GET /feed/*': { price: '$0.01', grants: { uses: 3 } },
    'GET /news/*': { price: '$0.01', grants: { window: '1h' } },
    'GET /weather': { price: '$0.001' },
  },
  credentials: {
    audience,
    trust: [{ issuer }],
    keys: { fetch: (async () => new Response(JSON.stringify(await keys.jwks()))) as unknown as typeof fetch },
  },
})

let served: string[] = []
let sent: Request[] = []

/** The network between client and server: every request recorded, then answered by the paywall in front of the app. */
const network_: Fetch = async (input, init) => {
  const request = new Request(input, init)
  sent.push(request.clone())
  if (new URL(request.url).origin !== audience) return new Response('elsewhere')
  return paywall.handle(request, async (request) => {
    const { pathname } = new URL(request.url)
    served.push(pathname)
    return new Response(pathname === '/feed/fail' ? 'down' : 'ok', { status: pathname === '/feed/fail' ? 500 : 200 })
  })
}

const budget = { perRequest: '$0.05' }
const carried = () => sent.map((request) => request.headers.get('PAYMENT-CREDENTIAL') !== null)
const paid = () => sent.filter((request) => request.headers.has('PAYMENT-SIGNATURE')).length

beforeEach(() => {
  facilitator.reset()
  const settle = facilitator.onSettle
  facilitator.onSettle = async (payment) => issuing.issue(payment, await settle(payment))
  served = []
  sent = []
})

afterEach(() => {
  vi.useRealTimers()
})

describe('wrapFetch with access credentials', () => {
  it('pays once, then sends the credential for the next N requests it covers, then pays again', async () => {
    const pay = wrapFetch(network_, { account, budget })
    const first = await pay(`${audience}/feed/a`)
    expect(getPaymentResult(first)).toMatchObject({
      paid: true,
      granted: { scope: 'GET /feed/*', usesLeft: 3, expiresAt: expect.any(Number) },
    })

    const results = []
    for (const path of ['/feed/b', '/feed/c', '/feed/b']) {
      const response = await pay(`${audience}${path}`)
      expect(response.status).toBe(200)
      results.push(getPaymentResult(response))
    }
    expect(results).toMatchObject([
      { paid: false, credential: { scope: 'GET /feed/*', usesLeft: 2 } },
      { paid: false, credential: { usesLeft: 1 } },
      { paid: false, credential: { usesLeft: 0 } },
    ])
    expect(results.every((result) => result?.reason === undefined)).toBe(true)
    expect(facilitator.calls.settle).toHaveLength(1)

    // Used up as the client counts: the fifth request goes without it, and pays.
    const fifth = await pay(`${audience}/feed/d`)
    expect(getPaymentResult(fifth)).toMatchObject({ paid: true, granted: { usesLeft: 3 } })
    expect(carried()).toEqual([false, false, true, true, true, false, false])
    expect(served).toEqual(['/feed/a', '/feed/b', '/feed/c', '/feed/b', '/feed/d'])
  })

  it('sends a credential only to its origin and the routes its scope covers', async () => {
    const pay = wrapFetch(network_, { account, budget })
    await pay(`${audience}/news/today`)
    sent = []
    await pay(`${audience}/news/tomorrow`)
    await pay(`${audience}/weather`)
    await pay('http://other.test/news/today')
    await pay(`${audience}/NEWS/today`, { method: 'HEAD' })
    expect(carried()).toEqual([true, false, false, false, true])
  })

  it('reserves uses before sending: concurrent requests never count on more uses than are left', async () => {
    const pay = wrapFetch(network_, { account, budget })
    await pay(`${audience}/feed/a`)
    sent = []
    const responses = await Promise.all(Array.from({ length: 5 }, (_, i) => pay(`${audience}/feed/${i}`)))
    expect(responses.map((response) => response.status)).toEqual([200, 200, 200, 200, 200])
    expect(responses.map((response) => Boolean(getPaymentResult(response)?.credential))).toEqual([true, true, true, false, false])
    expect(paid()).toBe(2)
  })

  it('keeps the use when the handler fails, as the server gives it back', async () => {
    const pay = wrapFetch(network_, { account, budget })
    await pay(`${audience}/feed/a`)
    expect((await pay(`${audience}/feed/fail`)).status).toBe(500)
    expect(getPaymentResult(await pay(`${audience}/feed/b`))).toMatchObject({ credential: { usesLeft: 2 } })
  })

  it('drops a credential the server refuses and pays instead, once', async () => {
    const pay = wrapFetch(network_, { account, budget })
    const other = wrapFetch(network_, { account, budget })
    await pay(`${audience}/feed/a`)
    await pay(`${audience}/feed/b`)
    const token = sent.at(-1)!.headers.get('PAYMENT-CREDENTIAL')!
    // Someone else spends the same credential's uses: the server's count is what counts.
    for (let i = 0; i < 2; i++) expect((await other(`${audience}/feed/x`, { headers: { 'PAYMENT-CREDENTIAL': token } })).status).toBe(200)
    sent = []
    const response = await pay(`${audience}/feed/c`)
    expect(response.status).toBe(200)
    expect(getPaymentResult(response)).toMatchObject({
      paid: true,
      credentialRefused: 'credential_uses_exhausted',
      granted: { usesLeft: 3 },
    })
    expect(carried()).toEqual([true, false])
    expect(paid()).toBe(1)
  })

  it('stops sending a credential once it expires, and pays again', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const pay = wrapFetch(network_, { account, budget })
    await pay(`${audience}/news/a`)
    vi.setSystemTime(Date.now() + 3599_500)
    sent = []
    expect(getPaymentResult(await pay(`${audience}/news/b`))).toMatchObject({ paid: true })
    expect(carried()).toEqual([false, false])
  })

  it('leaves a request’s own PAYMENT-CREDENTIAL alone, and keeps none with credentials: false', async () => {
    const pay = wrapFetch(network_, { account, budget, credentials: false })
    expect(getPaymentResult(await pay(`${audience}/news/a`))).toMatchObject({ paid: true })
    expect(getPaymentResult(await pay(`${audience}/news/b`))).toMatchObject({ paid: true })
    const own = wrapFetch(network_, { account, budget })
    await own(`${audience}/news/a`)
    sent = []
    await own(`${audience}/news/b`, { headers: { 'PAYMENT-CREDENTIAL': 'mine' } })
    expect(sent[0]?.headers.get('PAYMENT-CREDENTIAL')).toBe('mine')
  })
})
