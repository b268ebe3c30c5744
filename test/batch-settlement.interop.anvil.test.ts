/**
 * batch-settlement interop: the reference client (`@x402/fetch` with the `@x402/evm` batch-settlement
 * client scheme) pays our paywall and facilitator over one channel in our escrow, placed at the
 * canonical address: the first request deposits, later ones send vouchers, claims settle on chain.
 */
import { BatchSettlementEvmScheme, computeChannelId, signVoucher } from '@x402/evm/batch-settlement/client'
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch'
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import { Hono } from 'hono'
import { type Abi, type Address, createTestClient, type Hex, http, zeroAddress } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Asset, HttpHeader, Network, PaymentPayload, PaymentRequired, Reason } from 'x402kit'
import { type BatchSettlementEvmFacilitator, batchSettlementEvmFacilitator, batchSettlementEvmServer, Channel } from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import {
  batchSettlementAbi,
  batchSettlementBytecode,
  erc3009DepositCollectorAbi,
  erc3009DepositCollectorBytecode,
} from '../contracts/artifacts/index.ts'

const price = 1_000n
const deposit = 100_000n
const requests = 5

let devnet: Devnet
let payer: DevnetAccount
let authorizer: DevnetAccount
let topUpPayer: DevnetAccount
let stayer: DevnetAccount
let leaver: DevnetAccount
let usdc: Asset
let payTo: Address
let scheme: BatchSettlementEvmFacilitator
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

async function deploy(abi: Abi, bytecode: Hex, args: readonly unknown[] = []): Promise<Address> {
  const hash = await devnet.walletClient(devnet.deployer.privateKey).deployContract({ abi, bytecode, args } as never)
  const { contractAddress } = await devnet.publicClient.waitForTransactionReceipt({ hash })
  return contractAddress!
}

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 5 })
  ;[payer, authorizer, topUpPayer, stayer, leaver] = devnet.accounts as DevnetAccount[] as [
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
  ]
  payTo = privateKeyToAccount(generatePrivateKey()).address
  // Our escrow's runtime code at the canonical address, and a collector built for it at its own.
  const escrow = await deploy(batchSettlementAbi, batchSettlementBytecode)
  await devnet.setCode(Channel.escrowAddress, (await devnet.publicClient.getCode({ address: escrow }))!)
  const collector = await deploy(erc3009DepositCollectorAbi, erc3009DepositCollectorBytecode, [Channel.escrowAddress])
  await devnet.setCode(Channel.erc3009CollectorAddress, (await devnet.publicClient.getCode({ address: collector }))!)

  usdc = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
  Network.registerAsset(devnet.network, devnet.chainId, usdc)
  scheme = batchSettlementEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [authorizer.privateKey] } } })
  app = new Hono()
  app.use(
    paywall({
      facilitator: createFacilitator({ schemes: [scheme] }),
      payTo,
      network: devnet.network,
      schemes: [batchSettlementEvmServer({ receiverAuthorizer: authorizer.address, minDeposit: deposit })],
      routes: { 'GET /quote': { price: { atomic: price.toString() }, scheme: 'batch-settlement', asset: usdc } },
    }),
  )
  app.get('/quote', (c) => {
    served++
    return c.json({ symbol: 'ETH', usd: 3_000 })
  })
})
afterAll(async () => {
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
    const channel = scheme.channel(computeChannelId(channelConfig(), devnet.network))
    expect(channel).toMatchObject({ balance: deposit, charged: price * BigInt(requests), claimed: 0n, closing: false })
    expect(channel?.config.payerAuthorizer).not.toBe(zeroAddress)
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

  it('claims the vouchers on chain and sweeps exactly what was served to payTo', async () => {
    const [result] = await scheme.claim()
    expect(result).toMatchObject({ network: devnet.network, channels: 1, claimed: price * BigInt(requests) })
    expect(await devnet.usdcBalance(payTo)).toBe(price * BigInt(requests))
    const id = computeChannelId(channelConfig(), devnet.network)
    const [balance, totalClaimed] = await devnet.publicClient.readContract({
      address: Channel.escrowAddress,
      abi: batchSettlementAbi,
      functionName: 'channels',
      args: [id],
    })
    expect({ balance, totalClaimed }).toEqual({ balance: deposit, totalClaimed: price * BigInt(requests) })
    // Nothing new: nothing to claim.
    expect(await scheme.claim()).toEqual([])
  })

  it('charges one of two concurrent vouchers for the same increment, and claims it', async () => {
    const charged = price * BigInt(requests)
    const answers = await Promise.all([payWithVoucher(charged + price), payWithVoucher(charged + price + 1n)])
    // Both pass verification and reach the handler; only the one charged first has its answer released.
    expect(answers.map(({ status }) => status).sort()).toEqual([200, 402])
    const refused = answers.find(({ status }) => status === 402)!
    expect([Reason.batchCumulativeBelowClaimed, Reason.batchCumulativeAmountMismatch]).toContain(errorOf(refused))
    expect(await refused.text()).not.toContain('usd')
    const [result] = await scheme.claim()
    expect(result).toMatchObject({ channels: 1, claimed: price })
    expect(await devnet.usdcBalance(payTo)).toBe(price * BigInt(requests + 1))
  })

  it('refuses vouchers once the payer starts to withdraw', async () => {
    await devnet.walletClient(payer.privateKey).writeContract({
      address: Channel.escrowAddress,
      abi: batchSettlementAbi,
      functionName: 'initiateWithdraw',
      args: [channelConfig(), 1_000n],
    })
    await devnet.mine()
    expect(await scheme.claim()).toEqual([])
    const closing = await payWithVoucher(price * BigInt(requests + 3))
    expect(closing.status).toBe(402)
    expect(errorOf(closing)).toBe(Reason.batchChannelClosing)
  })
})

describe('a channel that runs dry, with claims on a value threshold', () => {
  it('tops the channel up, and claims once three prices are unclaimed', async () => {
    const seller = privateKeyToAccount(generatePrivateKey()).address
    const channels = batchSettlementEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [authorizer.privateKey] } },
      claimThreshold: 3n * price,
    })
    const shop = new Hono()
    shop.use(
      paywall({
        facilitator: createFacilitator({ schemes: [channels] }),
        payTo: seller,
        network: devnet.network,
        schemes: [batchSettlementEvmServer({ receiverAuthorizer: authorizer.address, minDeposit: 4n * price })],
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
    // The third charge crossed the threshold: those three (at least) were claimed without being asked.
    await expect.poll(() => devnet.usdcBalance(seller), { timeout: 10_000 }).toBeGreaterThanOrEqual(3n * price)
    await channels.claim()
    expect(await devnet.usdcBalance(seller)).toBe(6n * price)
    channels.stop()
  })
})

// Last: it moves the chain's clock past the withdraw delay.
describe('a claim across channels, one of them emptied by a withdrawal', () => {
  it('claims the channels that can be claimed and leaves out the one that cannot', async () => {
    const referencePay = (key: Hex) =>
      wrapFetchWithPaymentFromConfig(
        fetchApp as typeof fetch,
        {
          schemes: [{ network: 'eip155:*', client: new BatchSettlementEvmScheme(privateKeyToAccount(key) as never) }],
          spendControls: { allowedAssets: [{ network: devnet.network, asset: devnet.usdc }] },
        } as never,
      )
    for (const key of [stayer.privateKey, leaver.privateKey]) {
      const pay = referencePay(key)
      for (let i = 0; i < 2; i++) expect((await pay('http://localhost/quote')).status).toBe(200)
    }
    // The leaver withdraws its whole deposit before the receiver claims anything of it.
    const leaverChannel = { ...channelConfig(), payer: leaver.address, payerAuthorizer: leaver.address }
    const escrow = { address: Channel.escrowAddress, abi: batchSettlementAbi } as const
    const leaverWallet = devnet.walletClient(leaver.privateKey)
    const wait = async (hash: Hex) => expect((await devnet.publicClient.waitForTransactionReceipt({ hash })).status).toBe('success')
    await wait(await leaverWallet.writeContract({ ...escrow, functionName: 'initiateWithdraw', args: [leaverChannel, deposit] }))
    await createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) }).increaseTime({ seconds: Channel.minWithdrawDelay })
    await devnet.mine()
    await wait(await leaverWallet.writeContract({ ...escrow, functionName: 'finalizeWithdraw', args: [leaverChannel] }))

    const before = await devnet.usdcBalance(payTo)
    const [result] = await scheme.claim()
    expect(result).toMatchObject({ channels: 1, claimed: 2n * price })
    expect(await devnet.usdcBalance(payTo)).toBe(before + 2n * price)
  })
})
