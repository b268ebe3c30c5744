/**
 * batch-settlement interop: the reference client (`@x402/fetch` with the `@x402/evm` batch-settlement
 * client scheme) pays our paywall over one channel in our escrow, placed at the canonical address.
 * Our server keeps the channel: the first request's deposit goes through our facilitator, every later
 * voucher is checked and charged by the server alone. (Claims, sweeps and refunds handed to a
 * facilitator are in `batch-settlement.seller.anvil.test.ts`, against the reference facilitator.)
 */
import { BatchSettlementEvmScheme, computeChannelId, signVoucher } from '@x402/evm/batch-settlement/client'
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch'
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import { Hono } from 'hono'
import { type Address, type Hex, zeroAddress } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Asset, HttpHeader, Network, PaymentPayload, PaymentRequired, Reason } from 'x402kit'
import {
  type BatchSettlementEvmFacilitator,
  type BatchSettlementEvmSeller,
  batchSettlementEvmFacilitator,
  batchSettlementEvmServer,
  Channel,
} from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import { placeEscrow } from './batch-settlement.seller.support.ts'

const price = 1_000n
const deposit = 100_000n
const requests = 5

let devnet: Devnet
let payer: DevnetAccount
let authorizer: DevnetAccount
let topUpPayer: DevnetAccount
let usdc: Asset
let payTo: Address
let scheme: BatchSettlementEvmFacilitator
let seller: BatchSettlementEvmSeller
let app: Hono
let served = 0
/** Every PAYMENT-SIGNATURE header the app received, in order. */
const sent: string[] = []

const fetchApp = async (input: RequestInfo | URL, init?: RequestInit) => {
  const request = new Request(input, init)
  const header = request.headers.get(HttpHeader.paymentSignature)
  if (header) sent.push(header)
  return app.request(request)
}

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 3 })
  ;[payer, authorizer, topUpPayer] = devnet.accounts as [DevnetAccount, DevnetAccount, DevnetAccount]
  payTo = privateKeyToAccount(generatePrivateKey()).address
  await placeEscrow(devnet)

  usdc = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
  Network.registerAsset(devnet.network, devnet.chainId, usdc)
  scheme = batchSettlementEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [authorizer.privateKey] } } })
  const facilitator = createFacilitator({ schemes: [scheme] })
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
    return c.json({ symbol: 'ETH', usd: 3_000 })
  })
})
afterAll(async () => {
  await seller?.close()
  scheme?.stop()
  await devnet?.stop()
})

/** The channel the reference client opens with the offer: default salt, the payer as its own authorizer. */
const channelConfig = () => ({
  payer: payer.address,
  payerAuthorizer: payer.address,
  receiver: payTo,
  receiverAuthorizer: authorizer.address,
  token: devnet.usdc,
  withdrawDelay: Channel.minWithdrawDelay,
  salt: `0x${'00'.repeat(32)}` as Hex,
})

/** Sends a hand-made voucher for the channel, as the reference client would, and returns the answer. */
async function payWithVoucher(maxClaimableAmount: bigint) {
  const offer = PaymentRequired.decode((await app.request('http://localhost/quote')).headers.get(HttpHeader.paymentRequired)!).accepts[0]!
  const id = computeChannelId(channelConfig(), devnet.network)
  const voucher = await signVoucher(privateKeyToAccount(payer.privateKey), id, maxClaimableAmount.toString(), devnet.network)
  const payment = { x402Version: 2, accepted: offer, payload: { type: 'voucher', channelConfig: channelConfig(), voucher } }
  return app.request('http://localhost/quote', { headers: { [HttpHeader.paymentSignature]: PaymentPayload.encode(payment as never) } })
}

const errorOf = (response: Response) => PaymentRequired.decode(response.headers.get(HttpHeader.paymentRequired)!).error

describe('the reference client pays our server over a channel', () => {
  it('offers batch-settlement with what the reference client needs to open a channel', async () => {
    const response = await app.request('http://localhost/quote')
    expect(response.status).toBe(402)
    expect(PaymentRequired.decode(response.headers.get(HttpHeader.paymentRequired)!).accepts).toEqual([
      {
        scheme: 'batch-settlement',
        network: devnet.network,
        amount: '1000',
        asset: devnet.usdc,
        payTo,
        maxTimeoutSeconds: 300,
        extra: {
          name: 'USD Coin',
          version: '2',
          assetTransferMethod: 'eip3009',
          receiverAuthorizer: authorizer.address,
          withdrawDelay: 900,
          minDeposit: '100000',
        },
      },
    ])
  })

  it(`serves ${requests} paid requests: a deposit first, then vouchers`, async () => {
    const client = new BatchSettlementEvmScheme(privateKeyToAccount(payer.privateKey) as never)
    const pay = wrapFetchWithPaymentFromConfig(
      fetchApp as typeof fetch,
      {
        schemes: [{ network: 'eip155:*', client }],
        spendControls: { allowedAssets: [{ network: devnet.network, asset: devnet.usdc }] },
      } as never,
    )
    const before = await devnet.usdcBalance(payer.address)
    for (let i = 0; i < requests; i++) {
      const response = await pay('http://localhost/quote')
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual({ symbol: 'ETH', usd: 3_000 })
    }
    expect(served).toBe(requests)
    const payloads = sent.map(
      (header) => PaymentPayload.decode(header).payload as { type: string; voucher: { maxClaimableAmount: string } },
    )
    expect(payloads.map(({ type }) => type)).toEqual(['deposit', ...Array(requests - 1).fill('voucher')])
    expect(payloads.map(({ voucher }) => voucher.maxClaimableAmount)).toEqual(
      Array.from({ length: requests }, (_, i) => String(price * BigInt(i + 1))),
    )
    // The deposit moved once; the vouchers touched no chain.
    expect(await devnet.usdcBalance(payer.address)).toBe(before - deposit)
    const id = computeChannelId(channelConfig(), devnet.network)
    const channel = seller.channel(id)
    expect(channel).toMatchObject({ balance: deposit, charged: price * BigInt(requests), totalClaimed: 0n, withdrawRequestedAt: 0 })
    expect(channel?.config.payerAuthorizer).not.toBe(zeroAddress)
    // The facilitator saw the deposit (and its voucher) alone.
    expect(scheme.channel(id)).toMatchObject({ balance: deposit, charged: price, signedMax: price })
  })

  it('refuses a replayed voucher, a lower one and one not covering the price, serving nothing', async () => {
    const replayed = await app.request('http://localhost/quote', { headers: { [HttpHeader.paymentSignature]: sent.at(-1)! } })
    expect(replayed.status).toBe(402)
    expect(errorOf(replayed)).toBe(Reason.batchVoucherAlreadyUsed)

    // A lower voucher the payer never sent (those it sent are refused as used).
    const lower = await payWithVoucher(price * BigInt(requests - 2) + 1n)
    expect(lower.status).toBe(402)
    expect(errorOf(lower)).toBe(Reason.batchCumulativeBelowClaimed)

    const short = await payWithVoucher(price * BigInt(requests) + price / 2n)
    expect(short.status).toBe(402)
    expect(errorOf(short)).toBe(Reason.batchCumulativeAmountMismatch)

    const overdrawn = await payWithVoucher(deposit + price)
    expect(overdrawn.status).toBe(402)
    expect(errorOf(overdrawn)).toBe(Reason.batchCumulativeExceedsBalance)
    expect(served).toBe(requests)
  })

  it('charges one of two concurrent vouchers for the same increment', async () => {
    const charged = price * BigInt(requests)
    const answers = await Promise.all([payWithVoucher(charged + price), payWithVoucher(charged + price + 1n)])
    // One request per channel is served at a time: the other is refused before its handler runs.
    expect(answers.map(({ status }) => status).sort()).toEqual([200, 402])
    const refused = answers.find(({ status }) => status === 402)!
    expect(errorOf(refused)).toBe(Reason.batchChannelBusy)
    expect(await refused.text()).not.toContain('usd')
    expect(served).toBe(requests + 1)
    const charges = [charged + price, charged + price + 1n]
    expect(charges).toContain(seller.channel(computeChannelId(channelConfig(), devnet.network))?.charged)
  })
})

describe('a channel that runs dry', () => {
  it('tops the channel up through the facilitator and goes on with vouchers checked by the server', async () => {
    const receiver = privateKeyToAccount(generatePrivateKey()).address
    const channels = batchSettlementEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [authorizer.privateKey] } },
    })
    const facilitator = createFacilitator({ schemes: [channels] })
    const shopSeller = batchSettlementEvmServer({ receiverAuthorizer: authorizer.address, minDeposit: 4n * price, facilitator })
    const shop = new Hono()
    shop.use(
      paywall({
        facilitator,
        payTo: receiver,
        network: devnet.network,
        schemes: [shopSeller],
        routes: { 'GET /quote': { price: { atomic: price.toString() }, scheme: 'batch-settlement', asset: usdc } },
      }),
    )
    shop.get('/quote', (c) => c.json({ symbol: 'ETH', usd: 3_000 }))
    const types: string[] = []
    const fetchShop = async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init)
      const header = request.headers.get(HttpHeader.paymentSignature)
      if (header) types.push((PaymentPayload.decode(header).payload as { type: string }).type)
      return shop.request(request)
    }
    const pay = wrapFetchWithPaymentFromConfig(
      fetchShop as typeof fetch,
      {
        schemes: [{ network: 'eip155:*', client: new BatchSettlementEvmScheme(privateKeyToAccount(topUpPayer.privateKey) as never) }],
        spendControls: { allowedAssets: [{ network: devnet.network, asset: devnet.usdc }] },
      } as never,
    )
    const before = await devnet.usdcBalance(topUpPayer.address)
    for (let i = 0; i < 6; i++) expect((await pay('http://localhost/quote')).status).toBe(200)
    // 4,000 deposited first; the fifth request needs 5,000 and deposits again.
    expect(types).toEqual(['deposit', 'voucher', 'voucher', 'voucher', 'deposit', 'voucher'])
    expect(await devnet.usdcBalance(topUpPayer.address)).toBe(before - 8n * price)
    const config = { ...channelConfig(), payer: topUpPayer.address, payerAuthorizer: topUpPayer.address, receiver }
    expect(shopSeller.channel(computeChannelId(config, devnet.network))).toMatchObject({ balance: 8n * price, charged: 6n * price })
    await shopSeller.close()
    channels.stop()
  })
})
