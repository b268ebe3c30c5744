import { beforeEach, describe, expect, it, vi } from 'vitest'
import * as Base64Json from '../core/Base64Json.ts'
import { settleResponse } from '../core/Facilitator.ts'
import { fakeFacilitator, network, offersOf, type Payer, payer, payTo, requiredOf, transaction } from './internal/fakeFacilitator.ts'
import { createPaywall, type PaywallConfig, type SettledInfo } from './paywall.ts'

const facilitator = fakeFacilitator()
const errors: unknown[] = []
const settled: SettledInfo[] = []
let served = 0
let buyer: Payer

const config: PaywallConfig = {
  facilitator,
  payTo,
  network,
  routes: {
    'GET /weather': { price: '$0.001', description: 'Current weather', mimeType: 'application/json' },
    'GET /forecast': { price: async (request) => `$0.00${new URL(request.url).searchParams.get('days') ?? '1'}` },
    'GET /report': { price: '$0.01', accepts: [{ price: '$0.02', network: 'base' }] },
    'POST /answer': { price: { atomic: '20000' } },
    '/status/*': { price: '$0.001' },
  },
  onError: (error) => errors.push(error),
  onSettled: (info) => void settled.push(info),
}
const paywall = createPaywall(config)

/** The protected app: `/status/<code>` answers that status; everything else a sunny JSON body. */
async function app(request: Request): Promise<Response> {
  served++
  const { pathname } = new URL(request.url)
  const status = Number(/^\/status\/(\d+)/.exec(pathname)?.[1] ?? 200)
  const body = request.method === 'POST' ? await request.text() : JSON.stringify({ weather: 'sunny', secret: 's3cret' })
  return new Response(status === 204 ? null : body, { status, headers: { 'content-type': 'application/json', 'x-handler': 'yes' } })
}

function get(path: string, headers: Record<string, string> = {}, init: RequestInit = {}): Promise<Response> {
  return paywall.handle(new Request(`http://localhost${path}`, { headers, ...init }), app)
}

async function paid(path: string, index = 0): Promise<Response> {
  return get(path, { 'PAYMENT-SIGNATURE': await buyer.answer(await get(path), index) })
}

beforeEach(async () => {
  facilitator.reset()
  errors.length = 0
  settled.length = 0
  buyer ??= await payer()
  served = 0
})

describe('asking for payment', () => {
  it('passes a request no route covers to next, untouched', async () => {
    const request = new Request('http://localhost/free')
    const answer = new Response('free')
    const next = vi.fn(async () => answer)
    expect(await paywall.handle(request, next)).toBe(answer)
    expect(next).toHaveBeenCalledWith(request)
    expect(paywall.covers(request)).toBe(false)
  })

  it('answers 402 with PAYMENT-REQUIRED (version 2) and a version 1 JSON body', async () => {
    const response = await get('/weather?city=Paris')
    expect(response.status).toBe(402)
    expect(served).toBe(0)
    expect(Object.fromEntries([...response.headers].filter(([name]) => name !== 'payment-required'))).toMatchInlineSnapshot(`
      {
        "access-control-expose-headers": "PAYMENT-REQUIRED",
        "cache-control": "no-store",
        "content-type": "application/json",
        "x-content-type-options": "nosniff",
      }
    `)
    expect(requiredOf(response)).toMatchInlineSnapshot(`
      {
        "accepts": [
          {
            "amount": "1000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "extra": {
              "name": "USDC",
              "version": "2",
            },
            "maxTimeoutSeconds": 300,
            "network": "eip155:84532",
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "scheme": "exact",
          },
        ],
        "error": "payment_required",
        "resource": {
          "description": "Current weather",
          "mimeType": "application/json",
          "url": "http://localhost/weather?city=Paris",
        },
        "x402Version": 2,
      }
    `)
    expect(await response.json()).toMatchInlineSnapshot(`
      {
        "accepts": [
          {
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "description": "Current weather",
            "extra": {
              "name": "USDC",
              "version": "2",
            },
            "maxAmountRequired": "1000",
            "maxTimeoutSeconds": 300,
            "mimeType": "application/json",
            "network": "base-sepolia",
            "outputSchema": null,
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "resource": "http://localhost/weather?city=Paris",
            "scheme": "exact",
          },
        ],
        "error": "payment_required",
        "x402Version": 1,
      }
    `)
  })

  it('asks for payment on HEAD of a GET route', async () => {
    const response = await get('/weather', {}, { method: 'HEAD' })
    expect(response.status).toBe(402)
    expect(served).toBe(0)
  })

  it('prices a dynamic route per request', async () => {
    expect(offersOf(await get('/forecast?days=3')).map((offer) => offer.amount)).toEqual(['3000'])
    expect(offersOf(await get('/forecast')).map((offer) => offer.amount)).toEqual(['1000'])
    const response = await paid('/forecast?days=3')
    expect(response.status).toBe(200)
    expect(facilitator.calls.settle[0]?.requirements.amount).toBe('3000')
  })

  it('refuses a payment made for another dynamic price', async () => {
    const cheap = await buyer.answer(await get('/forecast?days=1'))
    const response = await get('/forecast?days=5', { 'PAYMENT-SIGNATURE': cheap })
    expect(requiredOf(response)?.error).toBe('payment_offer_mismatch')
    expect(facilitator.calls.verify).toHaveLength(0)
  })

  it('offers several ways to pay, in both versions, and takes any of them', async () => {
    const asked = await get('/report')
    expect(offersOf(asked).map((offer) => [offer.network, offer.amount])).toEqual([
      ['eip155:84532', '10000'],
      ['eip155:8453', '20000'],
    ])
    expect((await asked.json()).accepts.map((offer: { network: string }) => offer.network)).toEqual(['base-sepolia', 'base'])
    const response = await paid('/report', 1)
    expect(response.status).toBe(200)
    expect(facilitator.calls.settle[0]?.requirements).toMatchObject({ network: 'eip155:8453', amount: '20000' })
  })
})

describe('taking payment', () => {
  it('serves a paid request with PAYMENT-RESPONSE, settling once', async () => {
    const response = await paid('/weather')
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ weather: 'sunny', secret: 's3cret' })
    expect(served).toBe(1)
    expect(response.headers.get('x-handler')).toBe('yes')
    expect(response.headers.get('access-control-expose-headers')).toBe('PAYMENT-RESPONSE')
    expect(response.headers.get('cache-control')).toBe('private')
    expect(response.headers.get('X-PAYMENT-RESPONSE')).toBeNull()
    const receipt = Base64Json.decode(response.headers.get('PAYMENT-RESPONSE') ?? '', settleResponse)
    expect(receipt).toEqual({ success: true, transaction, network, payer: buyer.address, amount: '1000' })
    expect(facilitator.calls.verify).toHaveLength(1)
    expect(facilitator.calls.settle).toHaveLength(1)
    expect(settled).toMatchObject([{ route: 'GET /weather', payer: buyer.address, settlement: receipt }])
  })

  it('checks the payment against its own offer, not the payer’s copy', async () => {
    const [offer] = offersOf(await get('/weather'))
    // Fields `matches` does not compare (they do not move money) may differ in the payer's copy.
    const payment = await buyer.pay(offer!, { maxTimeoutSeconds: 604800, extra: { name: 'Not USDC', version: '9' } })
    expect((await get('/weather', { 'PAYMENT-SIGNATURE': payment })).status).toBe(200)
    expect(facilitator.calls.verify[0]?.requirements).toEqual(offer)
    expect(facilitator.calls.settle[0]?.requirements).toEqual(offer)
  })

  it('answers a version 1 X-PAYMENT with X-PAYMENT-RESPONSE', async () => {
    const [offer] = offersOf(await get('/weather'))
    const response = await get('/weather', { 'X-PAYMENT': await buyer.payV1(offer!) })
    expect(response.status).toBe(200)
    expect(response.headers.get('PAYMENT-RESPONSE')).toBeNull()
    expect(Base64Json.decode(response.headers.get('X-PAYMENT-RESPONSE') ?? '', settleResponse).success).toBe(true)
    expect(response.headers.get('access-control-expose-headers')).toBe('X-PAYMENT-RESPONSE')
    expect(facilitator.calls.settle[0]?.requirements).toEqual(offer)
  })

  it('answers a version 2 payload sent in X-PAYMENT with X-PAYMENT-RESPONSE', async () => {
    const response = await get('/weather', { 'X-PAYMENT': await buyer.answer(await get('/weather')) })
    expect(response.status).toBe(200)
    expect(response.headers.get('X-PAYMENT-RESPONSE')).not.toBeNull()
  })

  it('leaves the request body to the handler', async () => {
    const request = (payment: string) =>
      new Request('http://localhost/answer', { method: 'POST', body: '{"question":42}', headers: { 'PAYMENT-SIGNATURE': payment } })
    const asked = await paywall.handle(new Request('http://localhost/answer', { method: 'POST', body: 'x' }), app)
    const response = await paywall.handle(request(await buyer.answer(asked)), app)
    expect(await response.text()).toBe('{"question":42}')
  })

  it('keeps a paid answer out of shared caches', async () => {
    const cached = async () => new Response('ok', { headers: { 'cache-control': 'public, max-age=60, s-maxage=600' } })
    const payment = await buyer.answer(await get('/weather'))
    const response = await paywall.handle(new Request('http://localhost/weather', { headers: { 'PAYMENT-SIGNATURE': payment } }), cached)
    expect(response.headers.get('cache-control')).toBe('max-age=60, private')
  })

  it('serves an empty paid answer (204)', async () => {
    const response = await paid('/status/204')
    expect(response.status).toBe(204)
    expect(response.body).toBeNull()
    expect(facilitator.calls.settle).toHaveLength(1)
  })

  it('still serves a settled payment when onSettled throws', async () => {
    const throwing = createPaywall({ ...config, onSettled: () => Promise.reject(new Error('audit log down')) })
    const payment = await buyer.answer(await get('/weather'))
    const response = await throwing.handle(new Request('http://localhost/weather', { headers: { 'PAYMENT-SIGNATURE': payment } }), app)
    expect(response.status).toBe(200)
    expect(errors).toMatchObject([{ message: 'audit log down' }])
  })
})

describe('refusing payment', () => {
  it('refuses an oversized header unparsed, without asking the facilitator', async () => {
    const response = await get('/weather', { 'PAYMENT-SIGNATURE': 'A'.repeat(16 * 1024 + 1) })
    expect(response.status).toBe(402)
    expect(requiredOf(response)?.error).toBe('payment_header_too_large')
    expect((await response.json()).errorMessage).toBe('The PAYMENT-SIGNATURE header is 16385 bytes; the limit is 16384.')
    expect(facilitator.calls.verify).toHaveLength(0)

    const strict = createPaywall({ ...config, maxPaymentHeaderBytes: 100 })
    const real = await buyer.answer(await get('/weather'))
    const refused = await strict.handle(new Request('http://localhost/weather', { headers: { 'X-PAYMENT': real } }), app)
    expect(requiredOf(refused)?.error).toBe('payment_header_too_large')
  })

  it.each([
    ['not base64', '%%%not-base64%%%', 'The payment header is not base64.'],
    ['not JSON', Buffer.from('hello').toString('base64'), 'The payment header is not base64 of JSON.'],
    [
      'not a payload',
      Base64Json.encode({ x402Version: 2, accepted: {}, payload: {} }),
      'The payment header does not match the schema at accepted.scheme: Invalid input: expected string, received undefined.',
    ],
    [
      'of an unknown version',
      Base64Json.encode({ x402Version: 3 }),
      expect.stringMatching(/^The payment header does not match the schema/),
    ],
  ])('refuses a header that is %s as invalid_payload, saying why', async (_, header, message) => {
    const response = await get('/weather', { 'PAYMENT-SIGNATURE': header })
    expect(response.status).toBe(402)
    expect(requiredOf(response)?.error).toBe('invalid_payload')
    expect(await response.json()).toMatchObject({ x402Version: 1, error: 'invalid_payload', errorMessage: message })
    expect(facilitator.calls.verify).toHaveLength(0)
    expect(served).toBe(0)
  })

  it.each([
    ['another amount', { amount: '1' }],
    ['another payTo', { payTo: '0x857b06519E91e3A54538791bDbb0E22373e36b66' }],
    ['another asset', { asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913' }],
    ['another network', { network: 'eip155:8453' }],
    ['another scheme', { scheme: 'upto' }],
  ])('refuses a payment for %s as payment_offer_mismatch', async (_, tamper) => {
    const [offer] = offersOf(await get('/weather'))
    const response = await get('/weather', { 'PAYMENT-SIGNATURE': await buyer.pay(offer!, tamper) })
    expect(requiredOf(response)?.error).toBe('payment_offer_mismatch')
    expect(offersOf(response)).toEqual([offer])
    expect(facilitator.calls.verify).toHaveLength(0)
    expect(served).toBe(0)
  })

  it('refuses a version 1 payment on a network the route does not offer', async () => {
    const [offer] = offersOf(await get('/weather'))
    const response = await get('/weather', { 'X-PAYMENT': await buyer.payV1({ ...offer!, network: 'eip155:8453' }) })
    expect(requiredOf(response)?.error).toBe('payment_offer_mismatch')
  })

  it('refuses what the facilitator finds invalid, and never runs the handler', async () => {
    const [offer] = offersOf(await get('/weather'))
    // Signed for another recipient, while claiming the route's offer.
    const signedElsewhere = JSON.parse(
      Buffer.from(await buyer.pay({ ...offer!, payTo: '0x857b06519E91e3A54538791bDbb0E22373e36b66' }), 'base64').toString(),
    )
    const response = await get('/weather', { 'PAYMENT-SIGNATURE': Base64Json.encode({ ...signedElsewhere, accepted: offer }) })
    expect(response.status).toBe(402)
    expect(requiredOf(response)?.error).toBe('invalid_exact_evm_recipient_mismatch')
    expect(offersOf(response)).toEqual([offer])
    expect(served).toBe(0)
    expect(facilitator.calls.settle).toHaveLength(0)
  })

  it('passes the facilitator’s reason and message on', async () => {
    facilitator.onVerify = async () => ({
      isValid: false,
      invalidReason: 'invalid_exact_evm_insufficient_balance',
      invalidMessage: 'Balance 0 < 1000',
    })
    const response = await paid('/weather')
    expect(await response.json()).toMatchObject({ error: 'invalid_exact_evm_insufficient_balance', errorMessage: 'Balance 0 < 1000' })
    expect(served).toBe(0)
  })

  it('echoes nothing a facilitator says that is not a code, and escapes its message', async () => {
    facilitator.onVerify = async () => ({
      isValid: false,
      invalidReason: '<script>alert(1)</script>',
      invalidMessage: '<img src=x onerror=alert(1)>&',
    })
    const response = await paid('/weather')
    expect(requiredOf(response)?.error).toBe('unexpected_verify_error')
    const text = await response.text()
    expect(text).not.toMatch(/[<>&]/)
    expect(JSON.parse(text).errorMessage).toBe('<img src=x onerror=alert(1)>&')
  })

  it('does not settle a handler that fails (500), and returns its answer as is', async () => {
    const response = await paid('/status/500')
    expect(response.status).toBe(500)
    expect(response.headers.get('PAYMENT-RESPONSE')).toBeNull()
    expect(facilitator.calls.verify).toHaveLength(1)
    expect(facilitator.calls.settle).toHaveLength(0)
  })

  it('does not settle a 4xx answer', async () => {
    const response = await paid('/status/404')
    expect(response.status).toBe(404)
    expect(facilitator.calls.settle).toHaveLength(0)
  })

  it('withholds the answer when settlement fails, and asks again', async () => {
    facilitator.onSettle = async ({ requirements }) => ({
      success: false,
      errorReason: 'invalid_exact_evm_nonce_already_used',
      transaction: '',
      network: requirements.network,
    })
    const response = await paid('/weather')
    expect(served).toBe(1)
    expect(response.status).toBe(402)
    expect(response.headers.get('x-handler')).toBeNull()
    const text = await response.text()
    expect(text).not.toContain('s3cret')
    expect(JSON.parse(text)).toMatchObject({
      x402Version: 1,
      error: 'invalid_exact_evm_nonce_already_used',
      accepts: [{ maxAmountRequired: '1000' }],
    })
    expect(Base64Json.decode(response.headers.get('PAYMENT-RESPONSE') ?? '', settleResponse).success).toBe(false)
    expect(response.headers.get('access-control-expose-headers')).toBe('PAYMENT-REQUIRED, PAYMENT-RESPONSE')
    expect(settled).toHaveLength(0)
  })

  it('serves one of two requests carrying the same payment', async () => {
    const nonces = new Set<string>()
    facilitator.onSettle = async ({ payload, requirements }) => {
      const nonce = (payload.payload as { authorization: { nonce: string } }).authorization.nonce
      if (nonces.has(nonce))
        return { success: false, errorReason: 'invalid_exact_evm_nonce_already_used', transaction: '', network: requirements.network }
      nonces.add(nonce)
      return { success: true, transaction, network: requirements.network }
    }
    const payment = await buyer.answer(await get('/weather'))
    const answers = await Promise.all([
      get('/weather', { 'PAYMENT-SIGNATURE': payment }),
      get('/weather', { 'PAYMENT-SIGNATURE': payment }),
    ])
    expect(answers.map((response) => response.status).sort()).toEqual([200, 402])
  })
})

describe('when the facilitator fails', () => {
  const hang = () => new Promise<never>(() => {})
  const quick = createPaywall({ ...config, timeoutMs: { verify: 50, settle: 50 } })
  const quickGet = async (path: string) =>
    quick.handle(new Request(`http://localhost${path}`, { headers: { 'PAYMENT-SIGNATURE': await buyer.answer(await get(path)) } }), app)

  it.each([
    ['verify throws', () => (facilitator.onVerify = () => Promise.reject(new Error('ECONNREFUSED'))), 0],
    ['verify times out', () => (facilitator.onVerify = hang), 0],
    ['settle throws', () => (facilitator.onSettle = () => Promise.reject(new Error('ECONNRESET'))), 1],
    ['settle times out', () => (facilitator.onSettle = hang), 1],
  ])('answers 503 facilitator_unavailable and serves nothing when %s', async (_, breakIt, handlerRuns) => {
    breakIt()
    const response = await quickGet('/weather')
    expect(response.status).toBe(503)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
    const text = await response.text()
    expect(text).not.toContain('s3cret')
    expect(JSON.parse(text)).toMatchObject({ type: 'about:blank', status: 503, code: 'facilitator_unavailable' })
    expect(served).toBe(handlerRuns)
    expect(errors).toHaveLength(1)
  })

  it('says what the 503 means', async () => {
    facilitator.onVerify = () => Promise.reject(new Error('ECONNREFUSED'))
    expect(await (await quickGet('/weather')).json()).toMatchInlineSnapshot(`
      {
        "code": "facilitator_unavailable",
        "detail": "The payment facilitator could not be reached to verify the payment; nothing was charged. Try again shortly.",
        "status": 503,
        "title": "Service Unavailable",
        "type": "about:blank",
      }
    `)
    facilitator.reset()
    facilitator.onSettle = () => Promise.reject(new Error('ECONNREFUSED'))
    expect((await (await quickGet('/weather')).json()).detail).toMatchInlineSnapshot(
      `"The payment facilitator could not confirm settlement, so the answer is withheld. Try again shortly."`,
    )
  })

  it('answers 503 when a facilitator URL does not answer', async () => {
    const remote = createPaywall({ ...config, facilitator: 'http://127.0.0.1:9/' })
    const payment = await buyer.answer(await get('/weather'))
    const response = await remote.handle(new Request('http://localhost/weather', { headers: { 'PAYMENT-SIGNATURE': payment } }), app)
    expect(response.status).toBe(503)
    expect(served).toBe(0)
    expect(errors).toMatchObject([{ code: 'facilitator_unavailable' }])
  })
})

describe('tricks around the paywall', () => {
  it.each([
    '/Weather',
    '//weather',
    '/x/../weather',
    '/%77eather',
    '/weather/',
    '/weather%2F',
    '/weather%252F',
    '/weather;x=1',
    '/weather%00',
  ])('asks for payment on %s', async (path) => {
    const response = await get(path)
    expect(response.status).toBe(402)
    expect(served).toBe(0)
  })

  it.each(['X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override'])(
    'refuses a method override on a paid path: %s',
    async (name) => {
      const response = await get('/weather', { [name]: 'GET' }, { method: 'POST', body: '' })
      expect(response.status).toBe(400)
      expect(await response.json()).toMatchObject({ code: 'method_override_refused' })
      expect(served).toBe(0)
    },
  )

  it('refuses a _method query on a paid path, and lets overrides through elsewhere', async () => {
    expect((await get('/weather?_method=GET', {}, { method: 'POST' })).status).toBe(400)
    const next = vi.fn(async () => new Response('free'))
    await paywall.handle(
      new Request('http://localhost/free?_method=DELETE', { method: 'POST', headers: { 'X-HTTP-Method-Override': 'DELETE' } }),
      next,
    )
    expect(next).toHaveBeenCalledOnce()
  })

  it('refuses a path encoded past three rounds', async () => {
    const response = await get('/weather%2525252F')
    expect(response.status).toBe(400)
    expect(await response.json()).toMatchObject({ code: 'invalid_path' })
  })

  it('reads the raw target too, as Node servers route on it', async () => {
    // `request.url` resolved `..`; a router matching raw segments would serve the tail route.
    const request = new Request('http://localhost/free')
    expect(paywall.covers(request)).toBe(false)
    expect(paywall.covers(request, { path: '/status/../free' })).toBe(true)
  })
})

describe('config', () => {
  it('refuses a facilitator that is neither a URL nor a client', () => {
    expect(() => createPaywall({ ...config, facilitator: 'ftp://x' })).toThrow(/is not an http\(s\) URL/)
    expect(() => createPaywall({ ...config, facilitator: {} as never })).toThrow(/neither a URL nor an object with verify and settle/)
    expect(() => createPaywall({ ...config, maxPaymentHeaderBytes: 0 })).toThrow(/maxPaymentHeaderBytes must be a positive integer/)
  })

  it('refuses a dynamic price that fails, as a fault, not a 402', async () => {
    const broken = createPaywall({ ...config, routes: { 'GET /x': { price: () => 'lots' } } })
    await expect(broken.handle(new Request('http://localhost/x'), app)).rejects.toThrow(/The price function of route "GET \/x" failed/)
    expect(served).toBe(0)
  })
})
