/**
 * Interoperability with the reference x402 SDK (`@x402/*` 2.27) on the local chain with real USDC:
 * each of our roles paired with the reference's other roles, every payment checked on chain.
 */
import { decodePaymentRequiredHeader, decodePaymentResponseHeader } from '@x402/core/http'
import { PaymentPayloadV2Schema, PaymentRequiredV1Schema, PaymentRequiredV2Schema } from '@x402/core/schemas'
import type { Address, Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HttpHeader, PaymentRequired } from 'x402kit'
import { decodePaymentResponse, getPaymentResult, wrapFetch } from 'x402kit/client'
import { exactEvmClient, exactEvmServer, toEvmSigner } from 'x402kit/evm'
import { type Listening, referenceFacilitator, referenceFetch, startReferenceFacilitator, startReferenceServer } from './reference.ts'
import {
  authorizationUsed,
  budget,
  type PaidApi,
  prices,
  type Stack,
  settlementOnChain,
  startPaidApi,
  startStack,
  weather,
} from './support.ts'

// Payers, one per test that pays, so each test's balances are its own.
const payerOf = {
  referenceClientHono: 0,
  referenceClientExpress: 1,
  ourClient: 2,
  ourPayload: 3,
  referenceStack: 4,
  referenceFacilitator: 5,
} as const
// Spare signers: one per reference facilitator, so no two facilitators share a nonce sequence.
const signerOf = { referenceHttp: 0, referenceInProcess: 1 } as const

let stack: Stack
const started: { close(): Promise<void> }[] = []

beforeAll(async () => {
  stack = await startStack({ payers: 6, spareSigners: 2 })
})

afterAll(async () => {
  await Promise.all(started.map((server) => server.close()))
  await stack?.stop()
})

/** The reference client, told the local chain's USDC is a token it may pay in. */
function referenceClient(key: Hex) {
  return referenceFetch(privateKeyToAccount(key), [{ network: stack.network, asset: stack.devnet.usdc }])
}

async function ourApi(adapter: 'hono' | 'express'): Promise<PaidApi> {
  const api = await startPaidApi(stack, adapter)
  started.push(api)
  return api
}

async function referenceServer(facilitatorUrl: string): Promise<Listening> {
  const server = await startReferenceServer({
    facilitatorUrl,
    network: stack.network,
    payTo: stack.payTo,
    asset: stack.devnet.usdc,
    amount: String(prices.weather),
  })
  started.push(server)
  return server
}

/** The money moved exactly once, from payer to payTo, in a successful transaction. */
async function expectSettled(transaction: string, payer: Address, before: bigint[]) {
  expect(transaction).toMatch(/^0x[0-9a-f]{64}$/)
  expect(await settlementOnChain(stack.devnet, transaction)).toEqual({
    status: 'success',
    transfers: [{ from: payer, to: stack.payTo, value: prices.weather }],
  })
  expect(await stack.balances([payer, stack.payTo])).toEqual([before[0]! - prices.weather, before[1]! + prices.weather])
}

describe('the reference client pays our server through our facilitator', () => {
  it.each([
    ['hono', payerOf.referenceClientHono],
    ['express', payerOf.referenceClientExpress],
  ] as const)('%s: 200, balances exact, our PAYMENT-RESPONSE read by the reference decoder', async (adapter, index) => {
    const api = await ourApi(adapter)
    const payer = stack.payers[index]!
    const before = await stack.balances([payer.address, stack.payTo])
    const response = await referenceClient(payer.privateKey)(`${api.url}/weather`)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual(weather)
    const header = response.headers.get(HttpHeader.paymentResponse)
    expect(header).not.toBeNull()
    const settlement = decodePaymentResponseHeader(header!)
    expect(settlement).toMatchObject({ success: true, network: stack.network, payer: payer.address, amount: String(prices.weather) })
    await expectSettled(settlement.transaction, payer.address, before)
    expect(api.served['/weather']).toBe(1)
    expect(api.errors).toEqual([])
  })
})

describe('our client pays the reference server through our facilitator', () => {
  it('200, settled, balances exact', async () => {
    const server = await referenceServer(stack.service.url)
    const payer = stack.payers[payerOf.ourClient]!
    const before = await stack.balances([payer.address, stack.payTo])
    const response = await wrapFetch(fetch, { account: privateKeyToAccount(payer.privateKey), budget })(`${server.url}/weather`)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual(weather)
    expect(getPaymentResult(response)).toMatchObject({ paid: true, x402Version: 2 })
    const settlement = decodePaymentResponse(response.headers)
    expect(settlement).toMatchObject({ success: true, network: stack.network, payer: payer.address })
    await expectSettled(settlement!.transaction, payer.address, before)
    expect(stack.facilitatorErrors).toEqual([])
  })
})

describe('the reference facilitator takes payloads our client signs', () => {
  it('verifies them valid and settles them; the authorization is used on chain', async () => {
    const facilitator = referenceFacilitator({
      rpcUrl: stack.devnet.rpcUrl,
      chain: stack.devnet.chain,
      privateKey: stack.spareSigners[signerOf.referenceInProcess]!.privateKey,
      network: stack.network,
    })
    const payer = stack.payers[payerOf.ourPayload]!
    const offer = exactEvmServer().requirements({ price: '$0.001', network: stack.network, payTo: stack.payTo, asset: stack.asset })
    const resource = 'http://127.0.0.1/weather'
    const signed = await exactEvmClient(await toEvmSigner(privateKeyToAccount(payer.privateKey))).createPayload(offer, { resource })
    const payload = { x402Version: 2, resource: { url: resource }, accepted: offer, payload: signed }
    // What our client sends is what the reference's schema expects.
    expect(PaymentPayloadV2Schema.safeParse(payload).success).toBe(true)
    const before = await stack.balances([payer.address, stack.payTo])

    expect(await facilitator.verify(payload as never, offer as never)).toMatchObject({ isValid: true, payer: payer.address })
    const settlement = await facilitator.settle(payload as never, offer as never)
    expect(settlement).toMatchObject({ success: true, network: stack.network, payer: payer.address })
    await expectSettled(settlement.transaction, payer.address, before)
    const { authorization } = signed as { authorization: { from: Address; nonce: Hex } }
    expect(await authorizationUsed(stack.devnet, authorization)).toBe(true)
    expect((await facilitator.verify(payload as never, offer as never)).isValid).toBe(false)
  })
})

describe('with the reference facilitator over HTTP', () => {
  let reference: Listening
  let referenceFacilitatorUrl: string
  beforeAll(async () => {
    const facilitator = await startReferenceFacilitator({
      rpcUrl: stack.devnet.rpcUrl,
      chain: stack.devnet.chain,
      privateKey: stack.spareSigners[signerOf.referenceHttp]!.privateKey,
      network: stack.network,
    })
    started.push(facilitator)
    referenceFacilitatorUrl = facilitator.url
    reference = await referenceServer(facilitator.url)
  })

  it('our PAYMENT-REQUIRED decodes with the reference decoder and passes its schemas, both versions', async () => {
    const api = await ourApi('hono')
    const response = await fetch(`${api.url}/weather`)
    expect(response.status).toBe(402)
    const required = decodePaymentRequiredHeader(response.headers.get(HttpHeader.paymentRequired)!)
    expect(PaymentRequiredV2Schema.safeParse(required).error).toBeUndefined()
    expect(PaymentRequiredV1Schema.safeParse(await response.json()).error).toBeUndefined()
  })

  it('our 402 and the reference’s have the same shape and, for the same price, the same offer, field for field', async () => {
    const api = await ourApi('express')
    const ours = await fetch(`${api.url}/weather`)
    const theirs = await fetch(`${reference.url}/weather`)
    expect([ours.status, theirs.status]).toEqual([402, 402])
    const ourRequired = decodePaymentRequiredHeader(ours.headers.get(HttpHeader.paymentRequired)!)
    // The reference's 402 reads with our decoder (schema-checked), and ours with theirs.
    const theirRequired = PaymentRequired.decode(theirs.headers.get(HttpHeader.paymentRequired)!)
    const shape = (value: object) => Object.keys(value).sort()
    expect(shape(ourRequired)).toEqual(shape(theirRequired))
    expect(ourRequired.accepts).toHaveLength(1)
    expect(theirRequired.accepts).toHaveLength(1)
    const [ourOffer, theirOffer] = [ourRequired.accepts[0]!, theirRequired.accepts[0]!]
    expect(ourOffer).toEqual(theirOffer)
    expect(shape(ourRequired.resource)).toEqual(shape(theirRequired.resource))
    expect(ourRequired.resource.url).toBe(`${api.url}/weather`)
    expect(theirRequired.resource.url).toBe(`${reference.url}/weather`)
  })

  it('our server pays through the reference facilitator over HTTP', async () => {
    const api = await startPaidApi(stack, 'fastify', { facilitator: referenceFacilitatorUrl })
    started.push(api)
    const payer = stack.payers[payerOf.referenceFacilitator]!
    const before = await stack.balances([payer.address, stack.payTo])
    const response = await wrapFetch(fetch, { account: privateKeyToAccount(payer.privateKey), budget })(`${api.url}/weather`)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual(weather)
    const settlement = decodePaymentResponse(response.headers)
    expect(settlement).toMatchObject({ success: true, network: stack.network, payer: payer.address })
    await expectSettled(settlement!.transaction, payer.address, before)
    expect(api.errors).toEqual([])
  })

  it('the reference stack alone pays too: same chain, same token, same balances arithmetic', async () => {
    const payer = stack.payers[payerOf.referenceStack]!
    const before = await stack.balances([payer.address, stack.payTo])
    const response = await referenceClient(payer.privateKey)(`${reference.url}/weather`)
    expect(response.status).toBe(200)
    const settlement = decodePaymentResponseHeader(response.headers.get(HttpHeader.paymentResponse)!)
    expect(settlement).toMatchObject({ success: true, payer: payer.address })
    await expectSettled(settlement.transaction, payer.address, before)
  })
})
