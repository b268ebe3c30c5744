import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type Address, getAddress, verifyTypedData } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterEach, describe, expect, it } from 'vitest'
import * as Base64Json from '../core/Base64Json.ts'
import type { SettleResponse } from '../core/Facilitator.ts'
import * as Network from '../core/Network.ts'
import * as PaymentPayload from '../core/PaymentPayload.ts'
import * as PaymentRequired from '../core/PaymentRequired.ts'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import type { SchemeClient } from '../core/Scheme.ts'
import * as Eip3009 from '../evm/exact/Eip3009.ts'
import { exactEvmServer } from '../evm/exact/server.ts'
import { type Fetch, PaymentSigningError, wrapFetch } from './fetch.ts'
import { getPaymentResult } from './PaymentResult.ts'

const account = privateKeyToAccount(generatePrivateKey())
const payTo = getAddress('0x2222222222222222222222222222222222222222')
const localUsdc = getAddress('0x5FbDB2315678afecb367f032d93F642f64180aa3')
const baseUsdc = getAddress('0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913')
const url = 'http://api.test/weather'

// At load, not in a hook: `it.each` tables below build offers while tests are collected.
Network.registerAsset('eip155:31337', 31337, {
  address: localUsdc,
  name: 'USDC',
  version: '2',
  decimals: 6,
  symbol: 'USDC',
  transfer: 'eip3009',
})

function offer(price: string, network: `${string}:${string}` = 'eip155:31337'): PaymentRequirements {
  return exactEvmServer().requirements({ price, network, payTo })
}

function atomicOffer(amount: string): PaymentRequirements {
  return { ...offer('$0'), amount }
}

function required(accepts: PaymentRequirements[], extra: Partial<PaymentRequired.PaymentRequired> = {}): PaymentRequired.PaymentRequired {
  return { x402Version: 2, error: 'Payment required', resource: { url, description: 'Weather' }, accepts, ...extra }
}

const settled: SettleResponse = { success: true, transaction: `0x${'ab'.repeat(32)}`, network: 'eip155:31337', payer: account.address }

function paymentRequired(body: PaymentRequired.PaymentRequired): Response {
  return new Response('{}', {
    status: 402,
    headers: { 'PAYMENT-REQUIRED': PaymentRequired.encode(body), 'content-type': 'application/json' },
  })
}

function paid(settlement: unknown = settled, header = 'PAYMENT-RESPONSE'): Response {
  return new Response('sunny', { status: 200, headers: { [header]: Base64Json.encode(settlement) } })
}

/** A fetch that plays a server: records each request and answers with `handler`. */
function server(handler: (request: Request, count: number) => Response | Promise<Response>): { fetch: Fetch; requests: Request[] } {
  const requests: Request[] = []
  return {
    requests,
    fetch: async (input, init) => {
      const request = new Request(input, init)
      requests.push(request.clone())
      return handler(request, requests.length)
    },
  }
}

/** A server asking for `body` and serving once paid with PAYMENT-SIGNATURE. */
function v2Server(body: PaymentRequired.PaymentRequired) {
  return server((request) => (request.headers.has('PAYMENT-SIGNATURE') ? paid() : paymentRequired(body)))
}

async function expectValidAuthorization(payload: Record<string, unknown>, accepted: PaymentRequirements, chainId: number) {
  const { signature, authorization } = Eip3009.payload.parse(payload)
  expect(authorization).toMatchObject({ from: account.address, to: getAddress(accepted.payTo), value: accepted.amount })
  const domain = {
    name: String(accepted.extra?.name),
    version: String(accepted.extra?.version),
    chainId,
    verifyingContract: accepted.asset as Address,
  }
  const valid = await verifyTypedData({
    address: account.address,
    signature: signature as `0x${string}`,
    ...Eip3009.typedData(domain, authorization),
  })
  expect(valid).toBe(true)
}

describe('wrapFetch, version 2', () => {
  it('pays a 402 once with a valid EIP-3009 authorization and reports the settlement', async () => {
    const offered = offer('$0.01')
    const { fetch, requests } = v2Server(required([offered], { extensions: { bazaar: { info: {}, schema: {} } } }))
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)

    expect(response.status).toBe(200)
    expect(await response.text()).toBe('sunny')
    expect(requests).toHaveLength(2)
    expect(requests[0]?.headers.has('PAYMENT-SIGNATURE')).toBe(false)
    const payment = PaymentPayload.decode(requests[1]?.headers.get('PAYMENT-SIGNATURE') ?? '')
    expect(payment).toMatchObject({
      x402Version: 2,
      resource: { url, description: 'Weather' },
      accepted: offered,
      extensions: { bazaar: { info: {}, schema: {} } },
    })
    await expectValidAuthorization(payment.payload, offered, 31337)
    expect(getPaymentResult(response)).toEqual({
      paid: true,
      x402Version: 2,
      offer: offered,
      settlement: settled,
      payer: account.address,
      rejected: [],
    })
  })

  it('pays the cheapest offer within budget, ignoring offers it cannot pay', async () => {
    const offers = [
      offer('$0.03'),
      { ...offer('$0.0001'), scheme: 'upto' },
      { ...offer('$0.0001'), network: 'solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp', asset: 'EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v' },
      offer('$0.02', 'eip155:8453'),
      offer('$0.04'),
    ]
    const { fetch, requests } = v2Server(required(offers))
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)

    const payment = PaymentPayload.decode(requests[1]?.headers.get('PAYMENT-SIGNATURE') ?? '')
    expect(payment.accepted).toEqual(offers[3])
    await expectValidAuthorization(payment.payload, offers[3]!, 8453)
    expect(getPaymentResult(response)?.rejected?.map((r) => r.reason)).toEqual(['unsupported', 'unsupported'])
  })

  it('makes no second request for an offer over budget, and returns the 402 readable', async () => {
    const { fetch, requests } = v2Server(required([offer('$0.06'), offer('$1')]))
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)

    expect(requests).toHaveLength(1)
    expect(response.status).toBe(402)
    expect(await response.text()).toBe('{}')
    expect(getPaymentResult(response)).toMatchObject({
      paid: false,
      reason: 'over_budget',
      rejected: [{ reason: 'over_budget', message: 'The offer costs $0.06; the limit per request is $0.05.' }, { reason: 'over_budget' }],
    })
  })

  it.each([
    ['50000', 2],
    ['50001', 1],
  ])('with $0.05 to spend, an offer of %s atomic units of a 6-decimal USDC takes %i requests', async (amount, count) => {
    const { fetch, requests } = v2Server(required([atomicOffer(amount)]))
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
    expect(requests).toHaveLength(count)
    expect(getPaymentResult(response)?.paid).toBe(count === 2)
  })

  it('refuses an offer in an asset it cannot value', async () => {
    const unknown = { ...offer('$0.01'), asset: '0x1111111111111111111111111111111111111111' }
    const { fetch, requests } = v2Server(required([unknown]))
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
    expect(requests).toHaveLength(1)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'asset_not_in_budget' })
  })

  it('returns a second 402 after paying, without paying again', async () => {
    const body = required([offer('$0.01')])
    const { fetch, requests } = server((request) =>
      request.headers.has('PAYMENT-SIGNATURE') ? paymentRequired({ ...body, error: 'insufficient_funds' }) : paymentRequired(body),
    )
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)

    expect(requests).toHaveLength(2)
    expect(response.status).toBe(402)
    expect(getPaymentResult(response)).toMatchObject({
      paid: false,
      reason: 'payment_rejected',
      error: 'insufficient_funds',
      payer: account.address,
    })
  })

  it('does not call a payment paid when the server fails after it was sent', async () => {
    const body = required([offer('$0.01')])
    const { fetch, requests } = server((request) =>
      request.headers.has('PAYMENT-SIGNATURE')
        ? Response.json({ code: 'facilitator_unavailable', detail: 'The facilitator did not answer.' }, { status: 503 })
        : paymentRequired(body),
    )
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
    expect(requests).toHaveLength(2)
    expect(response.status).toBe(503)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'payment_unconfirmed', payer: account.address })
  })

  it('reports a failed settlement as a rejected payment', async () => {
    const failed = { success: false, errorReason: 'invalid_exact_evm_insufficient_balance', transaction: '', network: 'eip155:31337' }
    const body = required([offer('$0.01')])
    const { fetch } = server((request) => {
      if (!request.headers.has('PAYMENT-SIGNATURE')) return paymentRequired(body)
      const response = paymentRequired(body)
      response.headers.set('PAYMENT-RESPONSE', Base64Json.encode(failed))
      return response
    })
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
    expect(getPaymentResult(response)).toMatchObject({
      paid: false,
      reason: 'payment_rejected',
      error: 'invalid_exact_evm_insufficient_balance',
      settlement: failed,
    })
  })

  it('keeps a response with a malformed PAYMENT-RESPONSE, saying why there is no settlement', async () => {
    const { fetch } = server((request) =>
      request.headers.has('PAYMENT-SIGNATURE') ? paid({ success: 'yes' }) : paymentRequired(required([offer('$0.01')])),
    )
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
    expect(response.status).toBe(200)
    const result = getPaymentResult(response)
    expect(result).toMatchObject({
      paid: true,
      error: expect.stringMatching(/PAYMENT-RESPONSE header does not match the schema at success/),
    })
    expect(result?.settlement).toBeUndefined()
  })

  it.each([
    ['not base64', '%%%'],
    ['base64 of text', Buffer.from('hello').toString('base64')],
    ['a version 1 answer', Base64Json.encode({ x402Version: 1, accepts: [] })],
    ['no offers', Base64Json.encode({ ...required([]) })],
    ['a negative amount', Base64Json.encode(required([{ ...offer('$0.01'), amount: '-1' }]))],
    ['an amount in dollars', Base64Json.encode(required([{ ...offer('$0.01'), amount: '0.01' }]))],
    ['an oversized header', Base64Json.encode(required([{ ...offer('$0.01'), extra: { name: 'x'.repeat(70_000) } }]))],
  ])('pays nothing on a PAYMENT-REQUIRED header of %s', async (_, header) => {
    const { fetch, requests } = server(() => new Response(null, { status: 402, headers: { 'PAYMENT-REQUIRED': header } }))
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
    expect(requests).toHaveLength(1)
    expect(response.status).toBe(402)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'invalid_payment_required', error: expect.any(String) })
  })

  it('returns other answers untouched', async () => {
    const answer = new Response('free', { status: 200 })
    const { fetch, requests } = server(() => answer)
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
    expect(response).toBe(answer)
    expect(requests).toHaveLength(1)
    expect(getPaymentResult(response)).toBeUndefined()
  })
})

describe('wrapFetch, version 1', () => {
  const v1Offer = {
    scheme: 'exact',
    network: 'base',
    maxAmountRequired: '10000',
    resource: url,
    description: 'Weather',
    mimeType: 'application/json',
    payTo,
    maxTimeoutSeconds: 60,
    asset: baseUsdc,
    extra: { name: 'USD Coin', version: '2' },
  }

  it('answers a JSON-body 402 with X-PAYMENT in version 1 and reads X-PAYMENT-RESPONSE', async () => {
    const v1Settled = { success: true, transaction: `0x${'cd'.repeat(32)}`, network: 'base', payer: account.address }
    const { fetch, requests } = server((request) =>
      request.headers.has('X-PAYMENT')
        ? paid(v1Settled, 'X-PAYMENT-RESPONSE')
        : Response.json(
            { x402Version: 1, error: 'X-PAYMENT header is required', accepts: [{ ...v1Offer, network: 'unknown-net' }, v1Offer] },
            { status: 402 },
          ),
    )
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)

    expect(requests).toHaveLength(2)
    expect(requests[1]?.headers.has('PAYMENT-SIGNATURE')).toBe(false)
    const payment = PaymentPayload.decode(requests[1]?.headers.get('X-PAYMENT') ?? '')
    expect(payment).toMatchObject({ x402Version: 1, scheme: 'exact', network: 'base' })
    expect(Object.keys(payment).sort()).toEqual(['network', 'payload', 'scheme', 'x402Version'])
    const { maxAmountRequired, resource, description, mimeType, ...rest } = v1Offer
    await expectValidAuthorization(payment.payload, { ...rest, network: 'eip155:8453', amount: maxAmountRequired }, 8453)
    expect(getPaymentResult(response)).toMatchObject({
      paid: true,
      x402Version: 1,
      offer: { network: 'eip155:8453', amount: '10000' },
      settlement: v1Settled,
    })
  })

  it.each([
    ['not JSON', '<html>402</html>'],
    ['not x402', JSON.stringify({ error: 'pay up' })],
    ['an amount in dollars', JSON.stringify({ x402Version: 1, accepts: [{ ...v1Offer, maxAmountRequired: '0.01' }] })],
    ['too large', JSON.stringify({ x402Version: 1, accepts: [v1Offer], padding: 'x'.repeat(70_000) })],
    ['declared too large', JSON.stringify({ x402Version: 1, accepts: [v1Offer] }), { 'content-length': '70000' }],
  ] as [string, string, Record<string, string>?][])('pays nothing on a body %s', async (_, body, headers = {}) => {
    const { fetch, requests } = server(() => new Response(body, { status: 402, headers }))
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
    expect(requests).toHaveLength(1)
    expect(await response.text()).toBe(body)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'invalid_payment_required' })
  })

  it('reports a version 1 refusal from the body', async () => {
    const { fetch } = server((request) =>
      Response.json(
        { x402Version: 1, error: request.headers.has('X-PAYMENT') ? 'invalid_exact_evm_signature' : 'pay', accepts: [v1Offer] },
        { status: 402 },
      ),
    )
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'payment_rejected', error: 'invalid_exact_evm_signature' })
  })
})

describe('wrapFetch, requests', () => {
  const servers: { close(): void }[] = []
  afterEach(() => {
    for (const s of servers.splice(0)) s.close()
  })

  it('replays a JSON body identically over real HTTP', async () => {
    const seen: { method?: string; url?: string; headers: IncomingHttpHeaders; body: string }[] = []
    const http = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', () => {
        seen.push({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
        if (req.headers['payment-signature']) {
          res.writeHead(200, { 'PAYMENT-RESPONSE': Base64Json.encode(settled) }).end('answered')
          return
        }
        res.writeHead(402, { 'PAYMENT-REQUIRED': PaymentRequired.encode(required([offer('$0.01')])) }).end()
      })
    })
    servers.push(http)
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
    const { port } = http.address() as AddressInfo

    const body = JSON.stringify({ question: 'Will it rain?', n: 1 })
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(`http://127.0.0.1:${port}/answer?x=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-trace': 'abc' },
      body,
    })

    expect(await response.text()).toBe('answered')
    expect(getPaymentResult(response)).toMatchObject({ paid: true, settlement: settled })
    expect(seen).toHaveLength(2)
    for (const request of seen) {
      expect(request).toMatchObject({
        method: 'POST',
        url: '/answer?x=1',
        body,
        headers: { 'content-type': 'application/json', 'x-trace': 'abc' },
      })
    }
    expect(seen[0]?.headers['payment-signature']).toBeUndefined()
    expect(seen[1]?.headers['payment-signature']).toEqual(expect.any(String))
  })

  it('replays the body of a Request', async () => {
    const { fetch, requests } = v2Server(required([offer('$0.01')]))
    const request = new Request(url, { method: 'PUT', body: new Uint8Array([1, 2, 3]) })
    await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(request)
    expect(requests).toHaveLength(2)
    for (const r of requests) expect(new Uint8Array(await r.arrayBuffer())).toEqual(new Uint8Array([1, 2, 3]))
  })

  it('refuses to pay for a request whose stream body is spent', async () => {
    const { fetch, requests } = v2Server(required([offer('$0.01')]))
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('once'))
        controller.close()
      },
    })
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url, {
      method: 'POST',
      body,
      duplex: 'half',
    } as RequestInit)
    expect(requests).toHaveLength(1)
    expect(response.status).toBe(402)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'unreplayable_body', offer: { amount: '10000' } })
  })

  it('does not pay over a payment header the caller set', async () => {
    const { fetch, requests } = server(() => paymentRequired(required([offer('$0.01')])))
    const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url, { headers: { 'PAYMENT-SIGNATURE': 'abc' } })
    expect(requests).toHaveLength(1)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'payment_already_attached' })
  })

  it('pays once when wrapped twice', async () => {
    const body = required([offer('$0.01')])
    const { fetch, requests } = server(() => paymentRequired(body))
    const inner = wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })
    const response = await wrapFetch(inner, { account, budget: { perRequest: '$0.05' } })(url)
    expect(requests).toHaveLength(2)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'payment_rejected' })
  })
})

describe('wrapFetch, config', () => {
  it('calls onPayment once per payment sent, and survives a hook that throws', async () => {
    const events: unknown[] = []
    const { fetch } = v2Server(required([offer('$0.01')]))
    const pay = wrapFetch(fetch, {
      account,
      budget: { perRequest: '$0.05' },
      onPayment: (event) => {
        events.push(event)
        throw new Error('hook bug')
      },
    })
    const response = await pay(url)
    expect(response.status).toBe(200)
    expect(events).toEqual([{ ...getPaymentResult(response), url }])
  })

  it('resolves a provider account on the first 402, once', async () => {
    const calls: string[] = []
    const provider = {
      async request({ method, params }: { method: string; params?: unknown }) {
        calls.push(method)
        if (method === 'eth_requestAccounts' || method === 'eth_accounts') return [account.address]
        if (method === 'eth_signTypedData_v4') {
          const typed = JSON.parse((params as string[])[1] ?? '')
          return account.signTypedData({ ...typed, message: Eip3009.typedData(typed.domain, typed.message).message })
        }
        throw new Error(`unexpected ${method}`)
      },
    }
    let count = 0
    const { fetch } = server((request) => {
      count++
      if (count === 1) return new Response('free')
      return request.headers.has('PAYMENT-SIGNATURE') ? paid() : paymentRequired(required([offer('$0.01')]))
    })
    const pay = wrapFetch(fetch, { account: { provider } as never, budget: { perRequest: '$0.05' } })
    await pay(url)
    expect(calls).toEqual([])
    expect(getPaymentResult(await pay(url))?.paid).toBe(true)
    expect(getPaymentResult(await pay(url))?.paid).toBe(true)
    expect(calls.filter((m) => m === 'eth_requestAccounts')).toHaveLength(1)
    expect(calls.filter((m) => m === 'eth_signTypedData_v4')).toHaveLength(2)
  })

  it('pays with schemes alone, before the account', async () => {
    const scheme: SchemeClient = { scheme: 'exact', canPay: () => true, createPayload: async (_, { resource }) => ({ signed: resource }) }
    const { fetch, requests } = v2Server(required([offer('$0.01')]))
    await wrapFetch(fetch, { schemes: [scheme], account, budget: { perRequest: '$0.05' } })(url)
    expect(PaymentPayload.decode(requests[1]?.headers.get('PAYMENT-SIGNATURE') ?? '').payload).toEqual({ signed: url })
  })

  it('throws when signing fails, having sent no payment', async () => {
    const scheme: SchemeClient = {
      scheme: 'exact',
      canPay: () => true,
      createPayload: async () => {
        throw new Error('User rejected the request.')
      },
    }
    const { fetch, requests } = v2Server(required([offer('$0.01')]))
    const error = await wrapFetch(fetch, { schemes: [scheme], budget: { perRequest: '$0.05' } })(url).catch((e) => e)
    expect(error).toBeInstanceOf(PaymentSigningError)
    expect(error).toMatchObject({ code: 'payment_signing_failed', details: 'User rejected the request.' })
    expect(requests).toHaveLength(1)
  })

  it('refuses a config with nothing to pay with, or no limit', () => {
    expect(() => wrapFetch(fetch, { budget: { perRequest: '$1' } })).toThrow(/nothing to pay with/)
    expect(() => wrapFetch(fetch, { account, budget: {} })).toThrow(/no limit/)
  })
})
