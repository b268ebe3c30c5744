/**
 * Our channel client (`batchSettlementEvmClient`, through `wrapFetch`) pays our paywall and facilitator
 * over `batch-settlement` channels in our escrow at the canonical address: one deposit and many
 * vouchers, top-ups, a restart from the file store, concurrent requests, refusals of bad offers and of a
 * server that claims more than was signed, and a withdrawal that gives back what was not spent.
 */
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import { Hono } from 'hono'
import { type Address, createTestClient, encodeFunctionData, type Hex, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Asset, HttpHeader, PaymentPayload, PaymentRequired, Reason } from 'x402kit'
import { getPaymentResult, wrapFetch } from 'x402kit/client'
import {
  batchSettlementEvmClient,
  Channel,
  exactEvmFacilitator,
  exactEvmServer,
  filePayerChannelStore,
  memoryPayerChannelStore,
  toEvmSigner,
} from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import { batchSettlementAbi, escrowChannel, placeEscrow, type Shop, startShop } from './batch-settlement.client.support.ts'

const price = 1_000n

let devnet: Devnet
let authorizer: DevnetAccount
let usdc: Asset
const shops: Shop[] = []

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 10 })
  authorizer = devnet.accounts[0]!
  usdc = await placeEscrow(devnet)
})
afterAll(async () => {
  for (const shop of shops) shop.stop()
  await devnet?.stop()
})

const payer = (index: number) => devnet.accounts[index]!
const freshAddress = (): Address => privateKeyToAccount(generatePrivateKey()).address
const shopFor = (options: Partial<Parameters<typeof startShop>[1]> = {}) => {
  const shop = startShop(devnet, {
    usdc,
    payTo: freshAddress(),
    authorizerKey: authorizer.privateKey,
    authorizer: authorizer.address,
    price,
    ...options,
  })
  shops.push(shop)
  return shop
}
const channelId = (payerAddress: Address, payTo: Address) =>
  Channel.id(
    {
      payer: payerAddress,
      payerAuthorizer: payerAddress,
      receiver: payTo,
      receiverAuthorizer: authorizer.address,
      token: devnet.usdc,
      withdrawDelay: Channel.minWithdrawDelay,
      salt: `0x${'00'.repeat(32)}`,
    },
    devnet.chainId,
  )
const url = 'http://shop.test/quote'

describe('one channel, many requests', () => {
  it('deposits once, sends a voucher per request, and the claim pays exactly what was served', async () => {
    const payTo = freshAddress()
    const shop = shopFor({ payTo })
    const account = privateKeyToAccount(payer(1).privateKey)
    const pay = wrapFetch(shop.fetch, {
      account,
      budget: { perRequest: '$0.01' },
      channels: { deposit: '$0.1', store: filePayerChannelStore(await mkdtemp(join(tmpdir(), 'channels-'))) },
    })
    const before = await devnet.usdcBalance(account.address)
    const requests = 40
    for (let i = 0; i < requests; i++) {
      const response = await pay(url)
      expect(response.status).toBe(200)
      const { channel } = getPaymentResult(response)!
      // The deposit is held, reported apart from the price spent.
      expect(channel).toEqual({ id: expect.any(String), voucher: String(price * BigInt(i + 1)), ...(i === 0 && { deposit: '100000' }) })
    }
    expect(shop.served()).toBe(requests)
    // Only the first request was asked to pay: later ones carried their voucher at once.
    expect(shop.requests()).toBe(requests + 1)
    expect(shop.payloads.map(({ type }) => type)).toEqual(['deposit', ...Array(requests - 1).fill('voucher')])
    expect(shop.payloads.map(({ voucher }) => voucher?.maxClaimableAmount)).toEqual(
      Array.from({ length: requests }, (_, i) => String(price * BigInt(i + 1))),
    )
    // The deposit is held in the escrow, the vouchers touched no chain.
    expect(await devnet.usdcBalance(account.address)).toBe(before - 100_000n)
    const id = channelId(account.address, payTo)
    const [channel] = await pay.channels.list()
    expect(channel).toMatchObject({ id, balance: 100_000n, charged: price * 40n, signed: price * 40n, held: 100_000n - price * 40n })

    const [claimed] = await shop.channels.claim()
    expect(claimed).toMatchObject({ channels: 1, claimed: price * 40n })
    expect(await devnet.usdcBalance(payTo)).toBe(price * 40n)
    expect(await escrowChannel(devnet, id)).toEqual({ balance: 100_000n, totalClaimed: price * 40n })
  })

  it('tops the channel up with the request that would overdraw it', async () => {
    const payTo = freshAddress()
    const shop = shopFor({ payTo, minDeposit: 2n * price })
    const account = privateKeyToAccount(payer(2).privateKey)
    const pay = wrapFetch(shop.fetch, { account, budget: { perRequest: '$0.01' }, channels: { deposit: { requests: 3 } } })
    const before = await devnet.usdcBalance(account.address)
    for (let i = 0; i < 7; i++) expect((await pay(url)).status).toBe(200)
    expect(shop.payloads.map(({ type }) => type)).toEqual(['deposit', 'voucher', 'voucher', 'deposit', 'voucher', 'voucher', 'deposit'])
    expect(await devnet.usdcBalance(account.address)).toBe(before - 9n * price)
    await shop.channels.claim()
    expect(await devnet.usdcBalance(payTo)).toBe(7n * price)
    expect(await escrowChannel(devnet, channelId(account.address, payTo))).toEqual({ balance: 9n * price, totalClaimed: 7n * price })
  })

  it('pays concurrent requests one increment each, never two vouchers for the same one', async () => {
    const payTo = freshAddress()
    const shop = shopFor({ payTo })
    const pay = wrapFetch(shop.fetch, {
      account: privateKeyToAccount(payer(3).privateKey),
      budget: { perRequest: '$0.01' },
      channels: true,
    })
    const answers = await Promise.all(Array.from({ length: 12 }, () => pay(url)))
    expect(answers.map(({ status }) => status)).toEqual(Array(12).fill(200))
    const vouchers = shop.payloads.map(({ voucher }) => BigInt(voucher!.maxClaimableAmount))
    expect(vouchers).toEqual(Array.from({ length: 12 }, (_, i) => price * BigInt(i + 1)))
    await shop.channels.claim()
    expect(await devnet.usdcBalance(payTo)).toBe(12n * price)
  })
})

describe('restarts', () => {
  it('a new client on the same file goes on with the same deposit, and a lost answer is not paid twice', async () => {
    const payTo = freshAddress()
    const shop = shopFor({ payTo })
    const directory = await mkdtemp(join(tmpdir(), 'channels-'))
    const account = privateKeyToAccount(payer(4).privateKey)
    const config = { account, budget: { perRequest: '$0.01' }, channels: { deposit: { requests: 50 } } }
    const first = wrapFetch(shop.fetch, { ...config, channels: { ...config.channels, store: filePayerChannelStore(directory) } })
    for (let i = 0; i < 5; i++) expect((await first(url)).status).toBe(200)

    // The process was killed: its last answer was never written (records are written ahead of each
    // voucher, not after each answer). The next process dies once the shop served its first request,
    // before the answer arrived.
    let drop = true
    const losing = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const response = await shop.fetch(input, init)
      if (drop && response.status === 200) {
        drop = false
        throw new TypeError('fetch failed')
      }
      return response
    }) as typeof fetch
    const dying = wrapFetch(losing, { ...config, channels: { ...config.channels, store: filePayerChannelStore(directory) } })
    await expect(dying(url)).rejects.toThrow('fetch failed')
    expect(shop.served()).toBe(6)

    const before = await devnet.usdcBalance(account.address)
    const restarted = wrapFetch(shop.fetch, { ...config, channels: { ...config.channels, store: filePayerChannelStore(directory) } })
    for (let i = 0; i < 4; i++) {
      const response = await restarted(url)
      expect(response.status).toBe(200)
    }
    expect(shop.served()).toBe(10)
    // No second deposit. Each restart sends its last voucher again, is told it was used, and pays the next.
    expect(await devnet.usdcBalance(account.address)).toBe(before)
    expect(shop.payloads.filter(({ type }) => type === 'deposit')).toHaveLength(1)
    expect(shop.payloads.slice(5).map(({ voucher }) => voucher?.maxClaimableAmount)).toEqual([
      '5000',
      '6000',
      '6000',
      '7000',
      '8000',
      '9000',
      '10000',
    ])
    const [channel] = await restarted.channels.list()
    expect(channel).toMatchObject({ charged: 10n * price, signed: 10n * price, balance: 50n * price })
    await shop.channels.claim()
    expect(await devnet.usdcBalance(payTo)).toBe(10n * price)
  })

  it('recovers a channel from the escrow when the store was lost, and deposits nothing again', async () => {
    const payTo = freshAddress()
    const shop = shopFor({ payTo })
    const account = privateKeyToAccount(payer(5).privateKey)
    const signer = await toEvmSigner(account)
    const client = () => batchSettlementEvmClient(signer, { store: memoryPayerChannelStore(), publicClient: devnet.publicClient as never })
    const first = client()
    const pay = wrapFetch(shop.fetch, { schemes: [first], budget: { perRequest: '$0.01' } })
    for (let i = 0; i < 3; i++) expect((await pay(url)).status).toBe(200)
    await shop.channels.claim()
    const before = await devnet.usdcBalance(account.address)
    // A new process with an empty store: the escrow has the balance and what was claimed.
    const second = client()
    const again = wrapFetch(shop.fetch, { schemes: [second], budget: { perRequest: '$0.01' } })
    expect((await again(url)).status).toBe(200)
    expect(shop.payloads.at(-1)).toMatchObject({ type: 'voucher', voucher: { maxClaimableAmount: '4000' } })
    expect(await devnet.usdcBalance(account.address)).toBe(before)
  })
})

describe('choosing between exact and channels', () => {
  it('prefers a channel when channels are on, and exact otherwise or when asked', async () => {
    const shop = shopFor({ exact: true })
    const channels = wrapFetch(shop.fetch, {
      account: privateKeyToAccount(payer(6).privateKey),
      budget: { perRequest: '$0.01' },
      channels: true,
    })
    expect(getPaymentResult(await channels(url))?.offer?.scheme).toBe('batch-settlement')
    const plain = wrapFetch(shop.fetch, { account: privateKeyToAccount(payer(6).privateKey), budget: { perRequest: '$0.01' } })
    expect(getPaymentResult(await plain(url))?.offer?.scheme).toBe('exact')
    const asked = wrapFetch(shop.fetch, {
      account: privateKeyToAccount(payer(6).privateKey),
      budget: { perRequest: '$0.01' },
      channels: true,
      prefer: ['exact'],
    })
    expect(getPaymentResult(await asked(url))?.offer?.scheme).toBe('exact')
  })
})

describe('a URL that stops offering channels', () => {
  it('falls back from the voucher it sent at once to the offers of the 402, and pays exact', async () => {
    const account = privateKeyToAccount(payer(6).privateKey)
    const channelShop = shopFor()
    const exactOnly = new Hono()
    const seller = freshAddress()
    exactOnly.use(
      paywall({
        facilitator: createFacilitator({
          schemes: [exactEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [authorizer.privateKey] } } })],
        }),
        payTo: seller,
        network: devnet.network,
        schemes: [exactEvmServer()],
        routes: { 'GET /quote': { price: { atomic: price.toString() }, asset: usdc } },
      }),
    )
    exactOnly.get('/quote', (c) => c.json({ symbol: 'ETH', usd: 3_000 }))
    let target: (request: Request) => Response | Promise<Response> = (request) => channelShop.fetch(request)
    const pay = wrapFetch(((input: RequestInfo | URL, init?: RequestInit) => target(new Request(input, init))) as typeof fetch, {
      account,
      budget: { perRequest: '$0.01' },
      channels: true,
    })
    for (let i = 0; i < 2; i++) expect(getPaymentResult(await pay(url))?.offer?.scheme).toBe('batch-settlement')
    target = (request) => exactOnly.request(request)
    const response = await pay(url)
    expect(response.status).toBe(200)
    expect(getPaymentResult(response)).toMatchObject({ paid: true, offer: { scheme: 'exact' } })
    expect(await devnet.usdcBalance(seller)).toBe(price)
    // The voucher the exact-only server ignored is not counted as charged.
    const [channel] = await pay.channels.list()
    expect(channel).toMatchObject({ charged: 2n * price, signed: 3n * price })
  })
})

describe('bad offers and dishonest servers', () => {
  const offerOf = (extra: Record<string, unknown>, overrides: Record<string, unknown> = {}) => ({
    scheme: 'batch-settlement',
    network: devnet.network,
    amount: price.toString(),
    asset: devnet.usdc,
    payTo: freshAddress(),
    maxTimeoutSeconds: 300,
    extra: { name: 'USD Coin', version: '2', receiverAuthorizer: authorizer.address, withdrawDelay: 900, ...extra },
    ...overrides,
  })
  /** A server that asks with the given offer and records whether it was ever paid. */
  const asking = (offer: Record<string, unknown>) => {
    const paid: string[] = []
    const app = new Hono()
    app.get('/quote', (c) => {
      const header = c.req.header(HttpHeader.paymentSignature)
      if (header) paid.push(header)
      const body = PaymentRequired.encode({ x402Version: 2, resource: { url }, accepts: [offer as never], error: 'payment_required' })
      return c.body(null, 402, { [HttpHeader.paymentRequired]: body })
    })
    return { fetch: ((input: RequestInfo | URL, init?: RequestInit) => app.request(new Request(input, init))) as typeof fetch, paid }
  }

  it('does not open a channel in another escrow, on another chain, with no receiver authorizer, or above its limits', async () => {
    const account = privateKeyToAccount(payer(7).privateKey)
    const cases: [Record<string, unknown>, string][] = [
      [offerOf({ escrow: freshAddress() }), 'no_payable_offer'],
      [offerOf({}, { network: 'eip155:8453' }), 'no_payable_offer'],
      [offerOf({ receiverAuthorizer: '0x0000000000000000000000000000000000000000' }), 'no_payable_offer'],
      [offerOf({ minDeposit: '2000000' }), 'no_payable_offer'],
      [offerOf({}, { amount: '20000' }), 'over_budget'],
    ]
    for (const [offer, reason] of cases) {
      const server = asking(offer)
      const pay = wrapFetch(server.fetch, {
        account,
        budget: { perRequest: '$0.01' },
        channels: { maxDeposit: '$1', publicClient: devnet.publicClient as never },
      })
      const response = await pay(url)
      expect(response.status).toBe(402)
      expect(getPaymentResult(response)).toMatchObject({ paid: false, reason })
      expect(server.paid).toEqual([])
    }
  })

  it('signs nothing more for a server that says it charged more than was signed', async () => {
    const shop = shopFor()
    const account = privateKeyToAccount(payer(8).privateKey)
    const pay = wrapFetch(shop.fetch, { account, budget: { perRequest: '$0.01' }, channels: true })
    for (let i = 0; i < 2; i++) expect((await pay(url)).status).toBe(200)
    // Now the server refuses the next voucher, claiming it charged 50 requests already.
    const [offer] = PaymentRequired.decode((await shop.app.request(url)).headers.get(HttpHeader.paymentRequired)!).accepts
    const liar = new Hono()
    const sent: string[] = []
    liar.get('/quote', (c) => {
      const header = c.req.header(HttpHeader.paymentSignature)
      if (header) sent.push(header)
      const accepts = [
        {
          ...offer!,
          extra: {
            ...offer!.extra,
            channelState: { chargedCumulativeAmount: '50000' },
            voucherState: { signedMaxClaimable: '50000', signature: `0x${'11'.repeat(65)}` },
          },
        },
      ]
      const required = PaymentRequired.encode({ x402Version: 2, resource: { url }, accepts, error: Reason.batchCumulativeAmountMismatch })
      return c.body(null, 402, { [HttpHeader.paymentRequired]: required })
    })
    const cheat = wrapFetch(((input: RequestInfo | URL, init?: RequestInit) => liar.request(new Request(input, init))) as typeof fetch, {
      account,
      budget: { perRequest: '$0.01' },
      channels: true,
    })
    // A fresh client knows nothing: it deposits with the first voucher, which is all it signs.
    const response = await cheat(url)
    expect(response.status).toBe(402)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'payment_rejected' })
    expect(sent).toHaveLength(1)
    const [channel] = await cheat.channels.list()
    expect(channel).toMatchObject({ signed: price, charged: 0n })

    // On chain, a claim above the highest voucher signed reverts; the one signed is claimed in full.
    const signedVoucher = shop.payloads.at(-1)!.voucher as { maxClaimableAmount: string; signature: Hex }
    const config = shop.payloads.at(-1)!.channelConfig as Channel.ChannelConfig
    const id = Channel.id(config, devnet.chainId)
    const claim = (totalClaimed: bigint) =>
      encodeFunctionData({
        abi: batchSettlementAbi,
        functionName: 'claim',
        args: [
          [
            {
              voucher: { channel: config as never, maxClaimableAmount: BigInt(signedVoucher.maxClaimableAmount) },
              signature: signedVoucher.signature,
              totalClaimed,
            },
          ],
        ],
      })
    const wallet = devnet.walletClient(authorizer.privateKey)
    await expect(
      devnet.publicClient.call({ account: authorizer.address, to: Channel.escrowAddress, data: claim(3n * price) }),
    ).rejects.toThrow()
    const hash = await wallet.sendTransaction({ to: Channel.escrowAddress, data: claim(2n * price) })
    expect((await devnet.publicClient.waitForTransactionReceipt({ hash })).status).toBe('success')
    expect((await escrowChannel(devnet, id)).totalClaimed).toBe(2n * price)
  })

  it('counts a request at its price when the server reports a larger charge', async () => {
    const shop = shopFor()
    const account = privateKeyToAccount(payer(9).privateKey)
    const inflating = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const response = await shop.fetch(input, init)
      const receipt = response.headers.get(HttpHeader.paymentResponse)
      if (!receipt) return response
      const settlement = JSON.parse(Buffer.from(receipt, 'base64').toString()) as { extra: { chargedAmount: string } }
      settlement.extra.chargedAmount = '999999'
      const headers = new Headers(response.headers)
      headers.set(HttpHeader.paymentResponse, Buffer.from(JSON.stringify(settlement)).toString('base64'))
      return new Response(response.body, { status: response.status, headers })
    }) as typeof fetch
    const pay = wrapFetch(inflating, { account, budget: { perRequest: '$0.01' }, channels: true })
    for (let i = 0; i < 3; i++) expect((await pay(url)).status).toBe(200)
    const [channel] = await pay.channels.list()
    expect(channel).toMatchObject({ charged: 3n * price, signed: 3n * price })
  })
})

// Last: it moves the chain's clock past the withdraw delay.
describe('closing', () => {
  it('withdraws what was not spent when the server does not refund, after the receiver claims what it was paid', async () => {
    const payTo = freshAddress()
    const shop = shopFor({ payTo })
    const key = payer(1).privateKey
    const account = privateKeyToAccount(key)
    const pay = wrapFetch(shop.fetch, {
      account,
      budget: { perRequest: '$0.01' },
      channels: { deposit: { requests: 20 }, publicClient: devnet.publicClient as never, walletClient: devnet.walletClient(key) as never },
    })
    for (let i = 0; i < 5; i++) expect((await pay(url)).status).toBe(200)
    const before = await devnet.usdcBalance(account.address)
    // A server that takes no refund payloads: the refund request reaches it unpaid and is answered 402.
    const noRefunds = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init)
      const header = request.headers.get(HttpHeader.paymentSignature)
      if (header && PaymentPayload.decode(header).payload.type === 'refund') return shop.fetch(request.url)
      return shop.fetch(request)
    }) as typeof fetch
    const [closed] = await pay.channels.close({ fetch: noRefunds })
    // The cooperative refund is refused, so the client starts a withdrawal.
    expect(closed).toMatchObject({ how: 'withdraw', ok: true, amount: 20n * price, reason: expect.any(String) })
    await shop.channels.claim()
    await createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) }).increaseTime({ seconds: Channel.minWithdrawDelay })
    await devnet.mine()
    const finished = await pay.channels.finishWithdraw(closed!.id)
    expect(finished.amount).toBe(15n * price)
    expect(await devnet.usdcBalance(account.address)).toBe(before + 15n * price)
    expect(await devnet.usdcBalance(payTo)).toBe(5n * price)
    expect(await escrowChannel(devnet, closed!.id)).toEqual({ balance: 5n * price, totalClaimed: 5n * price })
    const [channel] = await pay.channels.list()
    expect(channel).toMatchObject({ closed: true, held: 0n })
  })
})
