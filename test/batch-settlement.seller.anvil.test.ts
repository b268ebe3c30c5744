/**
 * The seller side of batch-settlement channels against the REFERENCE facilitator, with our escrow at
 * the canonical address: the reference client pays our paywall; vouchers are checked by our server
 * alone (the facilitator sees only the deposit); claims, sweeps and refunds are handed to the
 * reference facilitator's `/settle` and land on chain; channel state outlives a restart in PGlite.
 */
import { PGlite } from '@electric-sql/pglite'
import { toClientEvmSigner } from '@x402/evm'
import { BatchSettlementEvmScheme, computeChannelId, signVoucher } from '@x402/evm/batch-settlement/client'
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch'
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import { Hono } from 'hono'
import { type Address, type Hex, zeroAddress } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Asset, HttpHeader, Network, PaymentPayload, PaymentRequired, Reason } from 'x402kit'
import {
  type BatchSettlementEvmSeller,
  type BatchSettlementEvmSellerOptions,
  batchSettlementEvmServer,
  Channel,
  type SellerChannelStore,
  sqlSellerChannelStore,
} from 'x402kit/evm'
import { httpFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import { batchSettlementAbi } from '../contracts/artifacts/index.ts'
import { escrowChannel } from './batch-settlement.client.support.ts'
import { placeEscrow, type ReferenceBatchFacilitator, startReferenceBatchFacilitator } from './batch-settlement.seller.support.ts'

const price = 1_000n
const deposit = 50_000n

let devnet: Devnet
let payer: DevnetAccount
let sender: DevnetAccount
let authorizer: DevnetAccount
let other: DevnetAccount
let asker: DevnetAccount
let steady: DevnetAccount
let usdc: Asset
let payTo: Address
let reference: ReferenceBatchFacilitator
let db: PGlite
let store: SellerChannelStore
let seller: BatchSettlementEvmSeller
let app: Hono
let served = 0

function startSeller(options: Partial<BatchSettlementEvmSellerOptions> = {}) {
  seller = batchSettlementEvmServer({
    receiverAuthorizer: authorizer.address,
    minDeposit: deposit,
    facilitator: httpFacilitator(reference.url),
    store,
    refreshIntervalMs: 60_000,
    ...options,
  })
  app = new Hono()
  app.use(
    paywall({
      facilitator: reference.url,
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
}

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 6 })
  ;[payer, sender, authorizer, other, asker, steady] = devnet.accounts as [
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
  ]
  payTo = privateKeyToAccount(generatePrivateKey()).address
  await placeEscrow(devnet)
  usdc = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
  Network.registerAsset(devnet.network, devnet.chainId, usdc)
  reference = await startReferenceBatchFacilitator(devnet, { sender: sender.privateKey, authorizer: authorizer.privateKey })
  db = await PGlite.create()
  store = sqlSellerChannelStore(db)
  startSeller()
})
afterAll(async () => {
  await seller?.close()
  await reference?.close()
  await db?.close()
  await devnet?.stop()
})

/** The reference client; `reading` gives it the chain to read, which it needs to take a server's corrective 402. */
const referencePay = (key: Hex, options: { reading?: boolean } = {}) =>
  wrapFetchWithPaymentFromConfig(
    (async (input: RequestInfo | URL, init?: RequestInit) => app.request(new Request(input, init))) as typeof fetch,
    {
      schemes: [
        {
          network: 'eip155:*',
          client: new BatchSettlementEvmScheme(
            (options.reading
              ? toClientEvmSigner(privateKeyToAccount(key) as never, devnet.publicClient as never)
              : privateKeyToAccount(key)) as never,
          ),
        },
      ],
      spendControls: { allowedAssets: [{ network: devnet.network, asset: devnet.usdc }] },
    } as never,
  )

const configOf = (account: DevnetAccount) => ({
  payer: account.address,
  payerAuthorizer: account.address,
  receiver: payTo,
  receiverAuthorizer: authorizer.address,
  token: devnet.usdc,
  withdrawDelay: Channel.minWithdrawDelay,
  salt: `0x${'00'.repeat(32)}` as Hex,
})

/** A hand-made voucher request, as the reference client would send it. */
async function payWith(options: { amount: bigint; signer?: Hex; config?: ReturnType<typeof configOf>; channelId?: Hex }) {
  const offer = PaymentRequired.decode((await app.request('http://localhost/quote')).headers.get(HttpHeader.paymentRequired)!).accepts[0]!
  const config = options.config ?? configOf(payer)
  const id = options.channelId ?? computeChannelId(config, devnet.network)
  const voucher = await signVoucher(privateKeyToAccount(options.signer ?? payer.privateKey), id, options.amount.toString(), devnet.network)
  const header = PaymentPayload.encode({
    x402Version: 2,
    accepted: offer,
    payload: { type: 'voucher', channelConfig: config, voucher },
  } as never)
  return { header, response: await app.request('http://localhost/quote', { headers: { [HttpHeader.paymentSignature]: header } }) }
}

const errorOf = (response: Response) => PaymentRequired.decode(response.headers.get(HttpHeader.paymentRequired)!).error
const onChain = (id: Hex) => escrowChannel(devnet, id)

describe('the reference client pays our seller; the reference facilitator settles', () => {
  const requests = 6
  const id = () => computeChannelId(configOf(payer), devnet.network).toLowerCase() as Hex

  it(`serves ${requests} paid requests, of which only the deposit reaches the facilitator`, async () => {
    const pay = referencePay(payer.privateKey)
    for (let i = 0; i < requests; i++) {
      const response = await pay('http://localhost/quote')
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual({ symbol: 'ETH', usd: 3_000 })
    }
    expect(served).toBe(requests)
    // The deposit is verified and settled by the facilitator; the vouchers never leave the seller.
    expect(reference.calls).toEqual([
      { path: 'verify', type: 'deposit' },
      { path: 'settle', type: 'deposit' },
    ])
    expect(seller.channel(id())).toMatchObject({ balance: deposit, totalClaimed: 0n, charged: price * BigInt(requests) })
    expect(await onChain(id())).toEqual({ balance: deposit, totalClaimed: 0n })
  })

  it('refuses each bad voucher with its reason, serving nothing and charging nothing', async () => {
    const charged = price * BigInt(requests)
    const before = served
    const cases: [string, Awaited<ReturnType<typeof payWith>>, string][] = [
      ['signed by another key', await payWith({ amount: charged + price, signer: other.privateKey }), Reason.batchVoucherSignature],
      [
        'for another channel',
        await payWith({ amount: charged + price, channelId: computeChannelId(configOf(other), devnet.network) }),
        Reason.batchChannelIdMismatch,
      ],
      ['lower than the last', await payWith({ amount: charged - price }), Reason.batchCumulativeBelowClaimed],
      ['the last again', await payWith({ amount: charged }), Reason.batchVoucherAlreadyUsed],
      ['not covering the price', await payWith({ amount: charged + price / 2n }), Reason.batchCumulativeAmountMismatch],
      ['above the balance', await payWith({ amount: deposit + price }), Reason.batchCumulativeExceedsBalance],
    ]
    for (const [name, { response }, reason] of cases) {
      expect(response.status, name).toBe(402)
      expect(errorOf(response), name).toBe(reason)
      expect(await response.text(), name).not.toContain('usd')
    }
    // A payer who miscounted is told where the server's count is, with the voucher it holds; nobody else is.
    const corrective = (response: Response) => PaymentRequired.decode(response.headers.get(HttpHeader.paymentRequired)!).accepts[0]!.extra
    for (const [name, { response }, reason] of cases) {
      const extra = corrective(response)
      if (
        !([Reason.batchCumulativeBelowClaimed, Reason.batchVoucherAlreadyUsed, Reason.batchCumulativeAmountMismatch] as string[]).includes(
          reason,
        )
      ) {
        expect(extra?.channelState, name).toBeUndefined()
        expect(extra?.voucherState, name).toBeUndefined()
        continue
      }
      expect(extra?.channelState, name).toEqual({
        channelId: id(),
        balance: deposit.toString(),
        totalClaimed: '0',
        withdrawRequestedAt: 0,
        refundNonce: '0',
        chargedCumulativeAmount: charged.toString(),
      })
      const held = extra?.voucherState as { signedMaxClaimable: string; signature: Hex }
      expect(held.signedMaxClaimable, name).toBe(charged.toString())
      expect(
        Channel.recoverVoucherSigner({ channelId: id(), maxClaimableAmount: charged, signature: held.signature }, devnet.chainId),
        name,
      ).toBe(payer.address)
    }
    const malformed = await app.request('http://localhost/quote', {
      headers: {
        [HttpHeader.paymentSignature]: PaymentPayload.encode({
          x402Version: 2,
          accepted: PaymentRequired.decode((await app.request('http://localhost/quote')).headers.get(HttpHeader.paymentRequired)!)
            .accepts[0]!,
          payload: {
            type: 'voucher',
            channelConfig: configOf(payer),
            voucher: { channelId: id(), maxClaimableAmount: '1e9', signature: '0x' },
          },
        } as never),
      },
    })
    expect(errorOf(malformed)).toBe(Reason.invalidPayload)
    expect(served).toBe(before)
    expect(seller.channel(id())?.charged).toBe(charged)
    expect(reference.calls).toHaveLength(2)
  })

  it('replays a paid request: refused, not served again', async () => {
    const charged = price * BigInt(requests)
    const first = await payWith({ amount: charged + price })
    expect(first.response.status).toBe(200)
    const before = served
    const replayed = await app.request('http://localhost/quote', { headers: { [HttpHeader.paymentSignature]: first.header } })
    expect(replayed.status).toBe(402)
    expect(errorOf(replayed)).toBe(Reason.batchVoucherAlreadyUsed)
    expect(served).toBe(before)
  })

  it('charges one of two concurrent requests for the same increment', async () => {
    const charged = price * BigInt(requests + 1)
    const before = served
    const answers = await Promise.all([payWith({ amount: charged + price }), payWith({ amount: charged + price })])
    expect(answers.map(({ response }) => response.status).sort()).toEqual([200, 402])
    const refused = answers.find(({ response }) => response.status === 402)!.response
    // Refused while the first is served (busy) or after it was charged (already used): never served twice.
    expect([Reason.batchChannelBusy, Reason.batchVoucherAlreadyUsed]).toContain(errorOf(refused))
    expect(await refused.text()).not.toContain('usd')
    expect(served).toBe(before + 1)
    expect(seller.channel(id())?.charged).toBe(charged + price)
  })

  it('a reference client that lost its store picks up from our corrective 402 and pays only the next increment', async () => {
    const charged = seller.channel(id())!.charged
    const before = served
    // A new reference client keeps its channels in memory: it starts knowing nothing of this one.
    const response = await referencePay(payer.privateKey, { reading: true })('http://localhost/quote')
    expect(response.status).toBe(200)
    expect(served).toBe(before + 1)
    expect(seller.channel(id())?.charged).toBe(charged + price)
    expect(await onChain(id())).toEqual({ balance: deposit, totalClaimed: 0n })
  })

  it('holds nothing for vouchers on unfunded or unknown channels, and bounds the look-ups', async () => {
    const before = served
    const strangers = Array.from({ length: 40 }, () => privateKeyToAccount(generatePrivateKey()))
    const answers = await Promise.all(
      strangers.map((account) =>
        payWith({
          amount: price,
          signer: generatePrivateKey(),
          config: { ...configOf(payer), payer: account.address, payerAuthorizer: account.address },
        }),
      ),
    )
    // Each is refused before the facilitator is asked: its voucher is not signed by its payer.
    for (const { response } of answers) expect(errorOf(response)).toBe(Reason.batchVoucherSignature)
    // Properly signed vouchers on channels nobody funded: the facilitator is asked, the seller keeps nothing.
    const keys = Array.from({ length: 3 }, () => generatePrivateKey())
    const unfunded = await Promise.all(
      keys.map((key) => {
        const account = privateKeyToAccount(key)
        return payWith({
          amount: price,
          signer: key,
          config: { ...configOf(payer), payer: account.address, payerAuthorizer: account.address },
        })
      }),
    )
    for (const { response } of unfunded) expect(errorOf(response)).toBe(Reason.batchChannelNotFound)
    for (const key of keys) {
      const account = privateKeyToAccount(key)
      expect(
        seller.channel(computeChannelId({ ...configOf(payer), payer: account.address, payerAuthorizer: account.address }, devnet.network)),
      ).toBeUndefined()
    }
    expect(served).toBe(before)
  })

  it('claims every channel in one claim, sweeps to payTo, and each claim is a voucher the payer signed', async () => {
    const charged = seller.channel(id())!.charged
    const calls = reference.calls.length
    const results = await seller.claim()
    expect(results).toMatchObject([{ network: devnet.network, channels: 1, claimed: charged }])
    expect(reference.calls.slice(calls)).toEqual([
      { path: 'settle', type: 'claim' },
      { path: 'settle', type: 'settle' },
    ])
    expect(await onChain(id())).toEqual({ balance: deposit, totalClaimed: charged })
    expect(await devnet.usdcBalance(payTo)).toBe(charged)
    expect(seller.channel(id())).toMatchObject({ totalClaimed: charged, charged })
    expect(await seller.claim()).toEqual([])
  })

  it('restarts from the store: the same state, and the payer goes on paying', async () => {
    const before = seller.channel(id())!
    await seller.close()
    startSeller()
    await seller.ready()
    expect(seller.channel(id())).toMatchObject({
      charged: before.charged,
      totalClaimed: before.totalClaimed,
      balance: before.balance,
      signature: before.signature,
    })
    const replayed = await payWith({ amount: before.charged })
    expect(errorOf(replayed.response)).toBe(Reason.batchVoucherAlreadyUsed)
    const next = await payWith({ amount: before.charged + price })
    expect(next.response.status).toBe(200)
  })

  it('refunds what the payer has not spent, claiming the rest first', async () => {
    const channel = seller.channel(id())!
    const charged = channel.charged
    const payerBefore = await devnet.usdcBalance(payer.address)
    const payToBefore = await devnet.usdcBalance(payTo)
    const [done] = await seller.refund([id()])
    expect(done?.channelId).toBe(id())
    expect(reference.calls.at(-1)).toEqual({ path: 'settle', type: 'refund' })
    expect(await devnet.usdcBalance(payer.address)).toBe(payerBefore + deposit - charged)
    expect(await onChain(id())).toEqual({ balance: charged, totalClaimed: charged })
    expect(seller.channel(id())).toMatchObject({ balance: charged, totalClaimed: charged, refundNonce: 1n })
    await seller.claim()
    expect(await devnet.usdcBalance(payTo)).toBeGreaterThanOrEqual(payToBefore)
    // Nothing is left to spend: the next voucher is above the balance.
    const after = await payWith({ amount: charged + price })
    expect(errorOf(after.response)).toBe(Reason.batchCumulativeExceedsBalance)
  })
})

describe('a payer who asks for a refund', () => {
  it('gets back what it has not spent, with the charged value claimed first, without the handler running', async () => {
    const client = new BatchSettlementEvmScheme(privateKeyToAccount(asker.privateKey) as never)
    const appFetch = (async (input: RequestInfo | URL, init?: RequestInit) => app.request(new Request(input, init))) as typeof fetch
    const pay = wrapFetchWithPaymentFromConfig(appFetch, {
      schemes: [{ network: 'eip155:*', client }],
      spendControls: { allowedAssets: [{ network: devnet.network, asset: devnet.usdc }] },
    } as never)
    for (let i = 0; i < 3; i++) expect((await pay('http://localhost/quote')).status).toBe(200)
    const id = computeChannelId(configOf(asker), devnet.network) as Hex
    const before = await devnet.usdcBalance(asker.address)
    const servedBefore = served
    const result = (await client.refund('http://localhost/quote', { fetch: appFetch } as never)) as { success: boolean }
    expect(result.success).toBe(true)
    expect(served).toBe(servedBefore)
    expect(reference.calls.at(-1)).toEqual({ path: 'settle', type: 'refund' })
    expect(await devnet.usdcBalance(asker.address)).toBe(before + deposit - 3n * price)
    expect(await onChain(id)).toEqual({ balance: 3n * price, totalClaimed: 3n * price })
    expect(seller.channel(id)).toMatchObject({ balance: 3n * price, totalClaimed: 3n * price, charged: 3n * price, refundNonce: 1n })
    // A refund voucher that is not exactly what was charged is refused.
    const config = configOf(asker)
    const offer = PaymentRequired.decode((await app.request('http://localhost/quote')).headers.get(HttpHeader.paymentRequired)!).accepts[0]!
    const voucher = await signVoucher(privateKeyToAccount(asker.privateKey), id, (2n * price).toString(), devnet.network)
    const wrong = await app.request('http://localhost/quote', {
      headers: {
        [HttpHeader.paymentSignature]: PaymentPayload.encode({
          x402Version: 2,
          accepted: offer,
          payload: { type: 'refund', channelConfig: config, voucher },
        } as never),
      },
    })
    expect(errorOf(wrong)).toBe(Reason.batchCumulativeAmountMismatch)
  })
})

describe('a payer who starts to withdraw', () => {
  it('is refused once the seller has read the pending withdrawal', async () => {
    const pay = referencePay(other.privateKey)
    for (let i = 0; i < 2; i++) expect((await pay('http://localhost/quote')).status).toBe(200)
    const config = configOf(other)
    const id = computeChannelId(config, devnet.network)
    const hash = await devnet.walletClient(other.privateKey).writeContract({
      address: Channel.escrowAddress,
      abi: batchSettlementAbi,
      functionName: 'initiateWithdraw',
      args: [config, 1_000n],
    })
    await devnet.publicClient.waitForTransactionReceipt({ hash })
    await seller.refresh([id])
    expect(seller.channel(id)?.withdrawRequestedAt).toBeGreaterThan(0)
    const closing = await payWith({ amount: 3n * price, signer: other.privateKey, config })
    expect(closing.response.status).toBe(402)
    expect(errorOf(closing.response)).toBe(Reason.batchChannelClosing)
    // What was charged before the withdrawal is still claimed.
    const [result] = await seller.claim()
    expect(result).toMatchObject({ channels: 1, claimed: 2n * price })
    expect(seller.channel(id)?.config.payerAuthorizer).not.toBe(zeroAddress)
  })
})

describe('what strangers can make the seller hold', () => {
  it('bounds the unknown channels looked up at once, and the channels held', async () => {
    // The store holds three channels by now; this seller may hold three and look up one at a time.
    startSeller({ maxChannels: 3, maxLookups: 1 })
    await seller.ready()
    const keys = Array.from({ length: 4 }, () => generatePrivateKey())
    const configs = keys.map((key) => {
      const account = privateKeyToAccount(key)
      return { ...configOf(payer), payer: account.address, payerAuthorizer: account.address }
    })
    const before = served
    const lookups = reference.calls.length
    // At the limit of channels: refused before the facilitator is asked.
    const full = await payWith({ amount: price, signer: keys[0]!, config: configs[0]! })
    expect(errorOf(full.response)).toBe(Reason.batchChannelLimit)
    expect(reference.calls.length).toBe(lookups)
    const deposit = await referencePay(generatePrivateKey())('http://localhost/quote').catch((error: unknown) => error)
    if (deposit instanceof Response) {
      expect(deposit.status).toBe(402)
      expect(errorOf(deposit)).toBe(Reason.batchChannelLimit)
    }
    // Room for more channels, one look-up at a time: the others are turned away at once.
    await seller.close()
    startSeller({ maxLookups: 1 })
    await seller.ready()
    const answers = await Promise.all(configs.map((config, index) => payWith({ amount: price, signer: keys[index]!, config })))
    const reasons = answers.map(({ response }) => errorOf(response))
    expect(reasons).toContain(Reason.batchChannelBusy)
    expect(reasons.filter((reason) => reason === Reason.batchChannelBusy).length).toBeGreaterThanOrEqual(1)
    for (const reason of reasons) expect([Reason.batchChannelBusy, Reason.batchChannelNotFound]).toContain(reason)
    for (const config of configs) expect(seller.channel(computeChannelId(config, devnet.network))).toBeUndefined()
    expect(served).toBe(before)
  })
})

describe('claims without being asked', () => {
  it('claims once the unclaimed value crosses the threshold, and the rest on the timer', async () => {
    await seller.close()
    startSeller({ claims: { threshold: 3n * price, intervalMs: 500 } })
    await seller.ready()
    const id = computeChannelId(configOf(steady), devnet.network) as Hex
    const pay = referencePay(steady.privateKey)
    for (let i = 0; i < 2; i++) expect((await pay('http://localhost/quote')).status).toBe(200)
    for (let i = 0; i < 2; i++) expect((await pay('http://localhost/quote')).status).toBe(200)
    // The third charge crossed the threshold; the timer claims what came after.
    await expect.poll(async () => (await onChain(id)).totalClaimed, { timeout: 15_000, interval: 200 }).toBe(4n * price)
    expect(seller.channel(id)).toMatchObject({ charged: 4n * price, totalClaimed: 4n * price })
    const claims = reference.calls.filter((call) => call.type === 'claim').length
    expect(claims).toBeGreaterThanOrEqual(1)
  })
})
