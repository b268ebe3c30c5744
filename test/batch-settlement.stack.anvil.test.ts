/**
 * Channels on our stack alone: our client (`wrapFetch` with `channels`) pays our paywall, whose
 * channel seller checks every voucher itself and hands the deposit, the claims, the sweep and the
 * cooperative refund to our facilitator — which sees no voucher on the request path. Balances are
 * read on chain at the end: the receiver has exactly what was served, the payer the rest.
 */
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import { Hono } from 'hono'
import type { Address, Hex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Asset, type FacilitatorClient, HttpHeader, PaymentPayload } from 'x402kit'
import { getPaymentResult, wrapFetch } from 'x402kit/client'
import { type BatchSettlementEvmSeller, batchSettlementEvmFacilitator, batchSettlementEvmServer } from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import { escrowChannel, placeEscrow } from './batch-settlement.client.support.ts'

const price = 1_000n
const deposit = 30_000n
const requests = 25
const url = 'http://shop.test/quote'

let devnet: Devnet
let authorizer: DevnetAccount
let payer: DevnetAccount
let usdc: Asset
let payTo: Address
let seller: BatchSettlementEvmSeller
let app: Hono
let served = 0
/** The channel of the replay test's payer, which the next test's client forgets. */
let replayedChannel: Hex | undefined
/** The payload types our facilitator was asked to verify and to settle, in order. */
const seen: { verify: string[]; settle: string[] } = { verify: [], settle: [] }

const typeOf = (payment: { payload: { payload: Record<string, unknown> } }) => String(payment.payload.payload.type)
const shop = (input: RequestInfo | URL, init?: RequestInit) => app.request(new Request(input, init))

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 3 })
  ;[authorizer, payer] = devnet.accounts as [DevnetAccount, DevnetAccount]
  usdc = await placeEscrow(devnet)
  payTo = privateKeyToAccount(generatePrivateKey()).address
  const ours = createFacilitator({
    schemes: [
      batchSettlementEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [authorizer.privateKey] } } }),
    ],
  })
  const facilitator: FacilitatorClient = {
    ...ours,
    verify: (payment) => {
      seen.verify.push(typeOf(payment))
      return ours.verify(payment)
    },
    settle: (payment) => {
      seen.settle.push(typeOf(payment))
      return ours.settle(payment)
    },
  }
  seller = batchSettlementEvmServer({ receiverAuthorizer: authorizer.address, minDeposit: deposit, facilitator })
  app = new Hono()
  app.use(
    paywall({
      facilitator,
      payTo,
      network: devnet.network,
      schemes: [seller],
      routes: { 'GET /quote': { price: { atomic: price.toString() }, scheme: 'batch-settlement', asset: usdc } },
    }),
  )
  app.get('/quote', (c) => {
    served++
    return c.json({ usd: 3_000 })
  })
})
afterAll(async () => {
  await seller?.close()
  await devnet?.stop()
})

describe('our client, our seller, our facilitator', () => {
  it('serves every voucher without the facilitator, claims and sweeps exactly what was served, and refunds the rest', async () => {
    const account = privateKeyToAccount(payer.privateKey)
    const pay = wrapFetch(shop as typeof fetch, {
      account,
      budget: { perRequest: '$0.01' },
      channels: { deposit: { atomic: deposit }, publicClient: devnet.publicClient as never },
    })
    const before = await devnet.usdcBalance(account.address)
    for (let i = 0; i < requests; i++) {
      const response = await pay(url)
      expect(response.status).toBe(200)
      expect(getPaymentResult(response)?.channel?.voucher).toBe(String(price * BigInt(i + 1)))
    }
    expect(served).toBe(requests)
    // The facilitator saw the deposit only: every voucher was checked by the seller.
    expect(seen.verify).toEqual(['deposit'])
    expect(seen.settle).toEqual(['deposit'])
    expect(await devnet.usdcBalance(account.address)).toBe(before - deposit)

    const [channel] = await pay.channels.list()
    expect(channel).toMatchObject({ balance: deposit, charged: price * BigInt(requests) })
    const claims = await seller.claim()
    expect(claims.length).toBeGreaterThan(0)
    expect(seen.settle).toContain('claim')
    expect(await escrowChannel(devnet, channel!.id)).toEqual({ balance: deposit, totalClaimed: price * BigInt(requests) })
    expect(await devnet.usdcBalance(payTo)).toBe(price * BigInt(requests))

    // A cooperative refund through the seller and our facilitator gives back what was not spent.
    const [closed] = await pay.channels.close({ fetch: shop as typeof fetch })
    expect(closed).toMatchObject({ how: 'refund', ok: true })
    expect(seen.settle).toContain('refund')
    expect(await devnet.usdcBalance(account.address)).toBe(before - price * BigInt(requests))
    expect(await devnet.usdcBalance(payTo)).toBe(price * BigInt(requests))
    const after = await escrowChannel(devnet, channel!.id)
    expect(after.balance).toBe(after.totalClaimed)
    expect(served).toBe(requests)
  })

  it('refuses a replayed voucher without serving or charging it', async () => {
    const account = privateKeyToAccount(devnet.accounts[2]!.privateKey)
    const headers: string[] = []
    const recording = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init)
      const header = request.headers.get(HttpHeader.paymentSignature)
      if (header) headers.push(header)
      return app.request(request)
    }) as typeof fetch
    const pay = wrapFetch(recording, { account, budget: { perRequest: '$0.01' }, channels: { deposit: { atomic: deposit } } })
    for (let i = 0; i < 3; i++) expect((await pay(url)).status).toBe(200)
    const servedBefore = served
    const last = headers.at(-1)!
    expect(PaymentPayload.decode(last).payload).toMatchObject({ type: 'voucher' })
    const replay = await app.request(url, { headers: { [HttpHeader.paymentSignature]: last } })
    expect(replay.status).toBe(402)
    expect(served).toBe(servedBefore)
    const [channel] = await pay.channels.list()
    expect(seller.channel(channel!.id)).toMatchObject({ charged: 3n * price })
    replayedChannel = channel!.id
  })

  it("a client that lost its store picks up from the seller's corrective 402, paying only the next increment", async () => {
    const account = privateKeyToAccount(devnet.accounts[2]!.privateKey)
    const id = replayedChannel!
    const before = { escrow: await escrowChannel(devnet, id), charged: seller.channel(id)!.charged, served }
    // A new client with an empty store and no chain to read: only the seller can tell it the count.
    const pay = wrapFetch(shop as typeof fetch, { account, budget: { perRequest: '$0.01' }, channels: { deposit: { atomic: deposit } } })
    const response = await pay(url)
    expect(response.status).toBe(200)
    expect(served).toBe(before.served + 1)
    expect(seller.channel(id)?.charged).toBe(before.charged + price)
    expect(getPaymentResult(response)?.channel?.voucher).toBe(String(before.charged + price))
    expect(await escrowChannel(devnet, id)).toEqual(before.escrow)
  })
})
