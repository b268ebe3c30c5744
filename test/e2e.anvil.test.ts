/**
 * End to end on the local chain with real USDC: our client (`wrapFetch`) → a paid API behind each
 * framework adapter → our facilitator (over HTTP, or in-process) → the chain. Every payment is
 * checked where it lands: the balances of payer and payTo, and the settlement transaction's receipt.
 */
import type { DevnetAccount } from '@x402kit/devnet'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HttpHeader, PaymentPayload, PaymentRequired } from 'x402kit'
import { decodePaymentResponse, type Fetch, getPaymentResult, wrapFetch } from 'x402kit/client'
import { exactEvmFacilitator } from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import {
  adapters,
  authorizationUsed,
  budget,
  capturePayment,
  carriesPayment,
  type PaidApi,
  prices,
  rawRequest,
  recordingFetch,
  type Stack,
  settlementOnChain,
  startPaidApi,
  startStack,
  weather,
} from './support.ts'

const concurrentPayers = 50
// Payers of the single-payer tests, then the concurrent ones.
const payerOf = { hono: 0, express: 1, fastify: 2, inProcess: 3, v1: 4, acrossServers: 5 } as const
const firstConcurrent = 6

let stack: Stack
const apis = {} as Record<(typeof adapters)[number], PaidApi>

beforeAll(async () => {
  stack = await startStack({ payers: firstConcurrent + concurrentPayers, spareSigners: 1 })
  for (const adapter of adapters) apis[adapter] = await startPaidApi(stack, adapter)
})

afterAll(async () => {
  await Promise.all(Object.values(apis).map((api) => api.close()))
  await stack?.stop()
})

/**
 * Sends one captured payment 20 times at once, spread over `targets`: exactly one is served and
 * settled, and the same payment sent again later is refused; the money moves once.
 */
async function expectReplaysRefused(targets: PaidApi[], payer: DevnetAccount) {
  const header = await capturePayment(payer, `${targets[0]!.url}/weather`)
  const served = () => targets.reduce((sum, api) => sum + (api.served['/weather'] ?? 0), 0)
  const servedBefore = served()
  const before = await stack.balances([payer.address, stack.payTo])
  const once = [before[0]! - prices.weather, before[1]! + prices.weather]
  const send = (api: PaidApi) => fetch(`${api.url}/weather`, { headers: { [HttpHeader.paymentSignature]: header } })
  const reasonOf = (response: Response) => PaymentRequired.decode(response.headers.get(HttpHeader.paymentRequired)!).error

  const responses = await Promise.all(Array.from({ length: 20 }, (_, index) => send(targets[index % targets.length]!)))
  const statuses = responses.map((response) => response.status)
  expect(statuses.filter((status) => status === 200)).toHaveLength(1)
  expect(statuses.filter((status) => status === 402)).toHaveLength(19)
  for (const refusal of responses.filter((response) => response.status === 402))
    expect(['invalid_exact_evm_nonce_already_used', 'settlement_pending']).toContain(reasonOf(refusal))
  const paid = responses.find((response) => response.status === 200)!
  expect(await paid.json()).toEqual(weather)
  expect(await settlementOnChain(stack.devnet, decodePaymentResponse(paid.headers)!.transaction)).toEqual({
    status: 'success',
    transfers: [{ from: payer.address, to: stack.payTo, value: prices.weather }],
  })
  expect(await stack.balances([payer.address, stack.payTo])).toEqual(once)
  expect(served()).toBe(servedBefore + 1)

  for (const api of targets) {
    const again = await send(api)
    expect(again.status).toBe(402)
    expect(reasonOf(again)).toBe('invalid_exact_evm_nonce_already_used')
  }
  expect(await stack.balances([payer.address, stack.payTo])).toEqual(once)
  expect(served()).toBe(servedBefore + 1)
}

/** Pays for one resource and checks the money where it lands: balances, receipt, Transfer log. */
async function expectPaidOnChain(
  response: Response,
  payer: string,
  amount: bigint,
  before: bigint[],
  receiptHeader: string = HttpHeader.paymentResponse,
) {
  expect(response.status).toBe(200)
  expect(await response.json()).toEqual(weather)
  const settlement = decodePaymentResponse(response.headers)
  expect(response.headers.get(receiptHeader)).not.toBeNull()
  expect(settlement).toMatchObject({ success: true, network: stack.network, payer, amount: String(amount) })
  expect(settlement?.transaction).toMatch(/^0x[0-9a-f]{64}$/)
  expect(await settlementOnChain(stack.devnet, settlement!.transaction)).toEqual({
    status: 'success',
    transfers: [{ from: payer, to: stack.payTo, value: amount }],
  })
  expect(await stack.balances([payer, stack.payTo])).toEqual([before[0]! - amount, before[1]! + amount])
}

describe.each(adapters)('through the %s adapter and our facilitator over HTTP', (adapter) => {
  const payer = () => stack.payers[payerOf[adapter]]!
  const api = () => apis[adapter]
  const pay = (fetch: Fetch = globalThis.fetch) => wrapFetch(fetch, { account: privateKeyToAccount(payer().privateKey), budget })

  it('pays once for /weather: the payer loses and payTo gains exactly the price, in a real transaction', async () => {
    const before = await stack.balances([payer().address, stack.payTo])
    const { fetch, sent } = recordingFetch()
    const response = await pay(fetch)(`${api().url}/weather`)
    await expectPaidOnChain(response, payer().address, prices.weather, before)
    expect(sent.map(carriesPayment)).toEqual([false, true])
    expect(getPaymentResult(response)).toMatchObject({ paid: true, x402Version: 2, payer: payer().address })
    expect(api().served['/weather']).toBe(1)
  })

  it('does not charge for a handler that answers 500', async () => {
    const before = await stack.balances([payer().address, stack.payTo])
    const { fetch, sent } = recordingFetch()
    const response = await pay(fetch)(`${api().url}/broken`)
    expect(response.status).toBe(500)
    expect(await response.json()).toEqual({ error: 'the weather station is down' })
    expect(response.headers.get(HttpHeader.paymentResponse)).toBeNull()
    expect(sent.map(carriesPayment)).toEqual([false, true])
    expect(api().served['/broken']).toBe(1)
    expect(await stack.balances([payer().address, stack.payTo])).toEqual(before)
    // Not settled later either: the authorization the client signed is still unused on chain.
    const sentPayment = PaymentPayload.decode(sent[1]!.headers.get(HttpHeader.paymentSignature)!)
    expect(await authorizationUsed(stack.devnet, sentPayment.payload.authorization as { from: string; nonce: string })).toBe(false)
  })

  it('does not pay for a route over budget: no payment is sent, nothing moves', async () => {
    const before = await stack.balances([payer().address, stack.payTo])
    const { fetch, sent } = recordingFetch()
    const response = await pay(fetch)(`${api().url}/premium`)
    expect(response.status).toBe(402)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'over_budget' })
    expect(sent).toHaveLength(1)
    expect(sent.some(carriesPayment)).toBe(false)
    expect(api().served['/premium']).toBeUndefined()
    expect(await stack.balances([payer().address, stack.payTo])).toEqual(before)
  })

  it('settles a payment sent 20 times at once exactly once, and refuses it when sent again later', async () => {
    await expectReplaysRefused([api()], payer())
  })

  it.each([
    ['GET', '/Weather'],
    ['GET', '//weather'],
    ['GET', '/%77eather'],
    ['GET', '/x/../weather'],
    ['GET', '/WEATHER/'],
    ['GET', '/weather%2F'],
    ['GET', '/weather;x=1'],
    ['GET', 'http://elsewhere/weather'],
    ['HEAD', '/weather'],
  ])('asks for payment on %s %s rather than serving it unpaid', async (method, target) => {
    const served = api().served['/weather'] ?? 0
    const response = await rawRequest(api().url, target, { method })
    expect(response.status).toBe(402)
    expect(response.body).not.toContain('Lisbon')
    expect(api().served['/weather'] ?? 0).toBe(served)
  })

  it('refuses a payer without the money: 402, the handler never runs, nothing moves', async () => {
    const broke = privateKeyToAccount(generatePrivateKey())
    const served = api().served['/weather'] ?? 0
    const before = await stack.balances([stack.payTo])
    const response = await wrapFetch(fetch, { account: broke, budget })(`${api().url}/weather`)
    expect(response.status).toBe(402)
    expect(getPaymentResult(response)).toMatchObject({
      paid: false,
      reason: 'payment_rejected',
      error: 'invalid_exact_evm_insufficient_balance',
    })
    expect(api().served['/weather'] ?? 0).toBe(served)
    expect(await stack.balances([stack.payTo, broke.address])).toEqual([before[0], 0n])
  })

  it('reports no paywall faults', () => {
    expect(api().errors).toEqual([])
  })
})

describe('with an in-process facilitator', () => {
  let api: PaidApi
  beforeAll(async () => {
    const facilitator = createFacilitator({
      schemes: [
        exactEvmFacilitator({
          networks: { [stack.network]: { rpcUrl: stack.devnet.rpcUrl, signers: [stack.spareSigners[0]!.privateKey] } },
        }),
      ],
    })
    api = await startPaidApi(stack, 'hono', { facilitator })
  })
  afterAll(() => api?.close())

  it('pays once for /weather, settled by the in-process facilitator’s own key', async () => {
    const payer = stack.payers[payerOf.inProcess]!
    const before = await stack.balances([payer.address, stack.payTo])
    const response = await wrapFetch(fetch, { account: privateKeyToAccount(payer.privateKey), budget })(`${api.url}/weather`)
    await expectPaidOnChain(response, payer.address, prices.weather, before)
    const { transaction } = decodePaymentResponse(response.headers)!
    const sent = await stack.devnet.publicClient.getTransaction({ hash: transaction as `0x${string}` })
    expect(sent.from.toLowerCase()).toBe(stack.spareSigners[0]!.address.toLowerCase())
    expect(api.errors).toEqual([])
  })

  it('settles a payment sent 20 times at once exactly once, and refuses it when sent again later', async () => {
    await expectReplaysRefused([api], stack.payers[payerOf.inProcess]!)
    expect(api.errors).toEqual([])
  })
})

describe('one payment sent to every server at once', () => {
  it('is served and settled by exactly one of them', async () => {
    await expectReplaysRefused(
      adapters.map((adapter) => apis[adapter]),
      stack.payers[payerOf.acrossServers]!,
    )
  })
})

describe('a version 1 client', () => {
  it('reads the JSON body, pays with X-PAYMENT and gets X-PAYMENT-RESPONSE, settled on chain', async () => {
    const payer = stack.payers[payerOf.v1]!
    const sent: Request[] = []
    // A version 1 server: only the JSON body says what to pay.
    const v1Server: Fetch = async (input, init) => {
      const request = new Request(input, init)
      sent.push(request.clone())
      const response = await fetch(request)
      const headers = new Headers(response.headers)
      headers.delete(HttpHeader.paymentRequired)
      return new Response(response.body, { status: response.status, headers })
    }
    const before = await stack.balances([payer.address, stack.payTo])
    const response = await wrapFetch(v1Server, { account: privateKeyToAccount(payer.privateKey), budget })(`${apis.express.url}/weather`)
    expect(sent[1]?.headers.has(HttpHeader.paymentSignature)).toBe(false)
    const header = sent[1]?.headers.get(HttpHeader.xPayment)
    expect(PaymentPayload.decode(header!)).toMatchObject({ x402Version: 1, scheme: 'exact', network: 'localhost' })
    expect(response.headers.get(HttpHeader.paymentResponse)).toBeNull()
    await expectPaidOnChain(response, payer.address, prices.weather, before, HttpHeader.xPaymentResponse)
    expect(getPaymentResult(response)).toMatchObject({ paid: true, x402Version: 1 })
  })
})

describe(`${concurrentPayers} payers at once`, () => {
  it('all get 200, each pays exactly once, and payTo gains exactly 50 × the price', async () => {
    const payers = stack.payers.slice(firstConcurrent)
    expect(payers).toHaveLength(concurrentPayers)
    const addresses = payers.map((payer) => payer.address)
    const before = await stack.balances([...addresses, stack.payTo])
    const served = adapters.map((adapter) => apis[adapter].served['/weather'] ?? 0)

    const responses = await Promise.all(
      payers.map((payer, index) =>
        wrapFetch(fetch, { account: privateKeyToAccount(payer.privateKey), budget })(`${apis[adapters[index % 3]!].url}/weather`),
      ),
    )
    expect(responses.map((response) => response.status)).toEqual(payers.map(() => 200))
    const settlements = responses.map((response) => decodePaymentResponse(response.headers)!)
    expect(settlements.map((settlement) => settlement.payer)).toEqual(addresses)
    expect(new Set(settlements.map((settlement) => settlement.transaction)).size).toBe(concurrentPayers)
    const onChain = await Promise.all(settlements.map((settlement) => settlementOnChain(stack.devnet, settlement.transaction)))
    expect(onChain).toEqual(addresses.map((from) => ({ status: 'success', transfers: [{ from, to: stack.payTo, value: prices.weather }] })))

    const after = await stack.balances([...addresses, stack.payTo])
    expect(after).toEqual([
      ...before.slice(0, -1).map((balance) => balance - prices.weather),
      before.at(-1)! + BigInt(concurrentPayers) * prices.weather,
    ])
    expect(adapters.map((adapter) => apis[adapter].served['/weather'])).toEqual(served.map((count, index) => count + (index < 2 ? 17 : 16)))
    expect(stack.facilitatorErrors).toEqual([])
    expect(adapters.flatMap((adapter) => apis[adapter].errors)).toEqual([])
  })
})
