/**
 * batch-settlement, the facilitator side: resource servers built from the reference packages
 * (`@x402/express` + `@x402/evm/batch-settlement/server`) keep their channels' state and reach our
 * facilitator over HTTP; the reference client pays them. Their claims (two sellers', one signed by the
 * seller's own authorizer) share one transaction, sweeps and refunds land on chain, balances are exact.
 * Bad claims and refunds are refused with their reason and nothing is claimed twice, across a crash.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serve } from '@hono/node-server'
import { HTTPFacilitatorClient } from '@x402/core/server'
import { BatchSettlementEvmScheme as ClientScheme, computeChannelId, signVoucher } from '@x402/evm/batch-settlement/client'
import { type BatchSettlementChannelManager, BatchSettlementEvmScheme as ServerScheme } from '@x402/evm/batch-settlement/server'
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch'
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import { migrate, openDatabase, sqlChannelStore } from '@x402kit/facilitator'
import { type Abi, type Address, createTestClient, type Hex, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Reason, type SettleResponse } from 'x402kit'
import {
  type BatchSettlementEvmFacilitator,
  type BatchSettlementStore,
  batchSettlementEvmFacilitator,
  Channel,
  memoryBatchSettlementStore,
} from 'x402kit/evm'
import { createFacilitator, type Facilitator } from 'x402kit/facilitator'
import {
  batchSettlementAbi,
  batchSettlementBytecode,
  erc3009DepositCollectorAbi,
  erc3009DepositCollectorBytecode,
} from '../contracts/artifacts/index.ts'
import { startReferenceChannelShop } from './batch-settlement.seller.support.ts'
import type { Listening } from './reference.ts'

const price = 1_000n
const deposit = 100_000n

let devnet: Devnet
let authorizer: DevnetAccount
let payers: DevnetAccount[]
let store: BatchSettlementStore
let pglite: { store: BatchSettlementStore; close(): Promise<unknown> }
let scheme: BatchSettlementEvmFacilitator
let facilitator: Facilitator
let facilitatorUrl: string
let closeFacilitator: () => void
const sellerAuthorizer = privateKeyToAccount(generatePrivateKey())
const payToA = privateKeyToAccount(generatePrivateKey()).address
const payToB = privateKeyToAccount(generatePrivateKey()).address
let shopA: Shop
let shopB: Shop
const actions: { kind: string; vouchers: number; gasUsed: bigint }[] = []

type Shop = { server: ServerScheme; listening: Listening; manager: BatchSettlementChannelManager; payTo: Address }

async function deploy(abi: Abi, bytecode: Hex, args: readonly unknown[] = []): Promise<Address> {
  const hash = await devnet.walletClient(devnet.deployer.privateKey).deployContract({ abi, bytecode, args } as never)
  const { contractAddress } = await devnet.publicClient.waitForTransactionReceipt({ hash })
  return contractAddress!
}

/** A reference resource server selling `GET /quote` over batch-settlement, its facilitator ours over HTTP. */
async function startShop(payTo: Address, options: { ownAuthorizer?: boolean } = {}): Promise<Shop> {
  const server = new ServerScheme(payTo, options.ownAuthorizer ? { receiverAuthorizerSigner: sellerAuthorizer as never } : {})
  const client = new HTTPFacilitatorClient({ url: facilitatorUrl })
  const listening = await startReferenceChannelShop(devnet, { client, server, payTo, price, minDeposit: deposit })
  return { server, listening, manager: server.createChannelManager(client, devnet.network as `${string}:${string}`, devnet.usdc), payTo }
}

const fetches = new Map<string, typeof fetch>()

/** One reference client per payer, keeping its channels across requests. */
function payerFetch(account: DevnetAccount) {
  const known = fetches.get(account.address)
  if (known) return known
  const pay = wrapFetchWithPaymentFromConfig(fetch, {
    schemes: [{ network: 'eip155:*', client: new ClientScheme(privateKeyToAccount(account.privateKey) as never) }],
    spendControls: { allowedAssets: [{ network: devnet.network, asset: devnet.usdc }] },
  } as never)
  fetches.set(account.address, pay)
  return pay
}

async function buy(shop: Shop, account: DevnetAccount, times: number) {
  const pay = payerFetch(account)
  for (let i = 0; i < times; i++) {
    const response = await pay(`${shop.listening.url}/quote`)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ symbol: 'ETH', usd: 3_000 })
  }
}

/** The channel the reference client opens at a shop whose receiver authorizer is ours. */
const configOf = (payer: Address, payTo: Address, receiverAuthorizer: Address = authorizer.address) => ({
  payer,
  payerAuthorizer: payer,
  receiver: payTo,
  receiverAuthorizer,
  token: devnet.usdc,
  withdrawDelay: Channel.minWithdrawDelay,
  salt: `0x${'00'.repeat(32)}` as Hex,
})

async function onChain(config: ReturnType<typeof configOf>) {
  const [balance, totalClaimed] = await devnet.publicClient.readContract({
    address: Channel.escrowAddress,
    abi: batchSettlementAbi,
    functionName: 'channels',
    args: [computeChannelId(config, devnet.network)],
  })
  return { balance, totalClaimed }
}

/** A claim row as a resource server builds it, the voucher signed by `signer` for `network`. */
async function row(
  config: ReturnType<typeof configOf>,
  maxClaimableAmount: bigint,
  options: { signer?: Hex; totalClaimed?: bigint; network?: string; channelOf?: ReturnType<typeof configOf> } = {},
) {
  const signerKey = options.signer ?? payers.find((payer) => payer.address === config.payer)!.privateKey
  const signedFor = options.channelOf ?? config
  const voucher = await signVoucher(
    privateKeyToAccount(signerKey),
    computeChannelId(signedFor, options.network ?? devnet.network),
    maxClaimableAmount.toString(),
    options.network ?? devnet.network,
  )
  return {
    voucher: { channel: config, maxClaimableAmount: maxClaimableAmount.toString() },
    signature: voucher.signature,
    totalClaimed: (options.totalClaimed ?? maxClaimableAmount).toString(),
  }
}

const requirements = (payTo: Address, network: string = devnet.network) => ({
  scheme: 'batch-settlement',
  network,
  asset: devnet.usdc,
  amount: '0',
  payTo,
  maxTimeoutSeconds: 0,
  extra: {},
})

/** Sends a payload to our facilitator's `POST /settle`, as a resource server does. */
async function settleOverHttp(
  payload: Record<string, unknown>,
  payTo: Address = payToA,
  network: string = devnet.network,
): Promise<SettleResponse> {
  const response = await fetch(`${facilitatorUrl}/settle`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      x402Version: 2,
      paymentPayload: { x402Version: 2, accepted: requirements(payTo, network), payload },
      paymentRequirements: requirements(payTo, network),
    }),
  })
  return (await response.json()) as SettleResponse
}

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 14 })
  ;[authorizer, ...payers] = devnet.accounts as DevnetAccount[] as [DevnetAccount, ...DevnetAccount[]]
  const escrow = await deploy(batchSettlementAbi, batchSettlementBytecode)
  await devnet.setCode(Channel.escrowAddress, (await devnet.publicClient.getCode({ address: escrow }))!)
  const collector = await deploy(erc3009DepositCollectorAbi, erc3009DepositCollectorBytecode, [Channel.escrowAddress])
  await devnet.setCode(Channel.erc3009CollectorAddress, (await devnet.publicClient.getCode({ address: collector }))!)

  store = memoryBatchSettlementStore()
  // Opened first: a connection left idle while it opens would be closed by the servers' keep-alive timeout.
  const dir = await mkdtemp(join(tmpdir(), 'x402-channels-crash-'))
  const db = await openDatabase({ dataDir: dir })
  await migrate(db)
  pglite = { store: sqlChannelStore(db), close: () => db.close().then(() => rm(dir, { recursive: true, force: true })) }
  scheme = batchSettlementEvmFacilitator({
    networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [authorizer.privateKey] } },
    store,
    claimWindowMs: 300,
    onAction: (event) => actions.push(event),
  })
  facilitator = createFacilitator({ schemes: [scheme] })
  const server = serve({ fetch: facilitator.handler, port: 0, hostname: '127.0.0.1' })
  await new Promise((resolve) => server.once('listening', resolve))
  facilitatorUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  closeFacilitator = () => {
    server.close()
    ;(server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.()
  }
  shopA = await startShop(payToA)
  shopB = await startShop(payToB, { ownAuthorizer: true })
}, 60_000)

afterAll(async () => {
  scheme?.stop()
  await shopA?.listening.close()
  await shopB?.listening.close()
  closeFacilitator?.()
  await pglite?.close()
  await devnet?.stop()
})

describe('reference resource servers on our facilitator', () => {
  it('serves the reference client: a deposit through our facilitator, then vouchers the servers check themselves', async () => {
    const [a, b] = payers as [DevnetAccount, DevnetAccount]
    const beforeA = await devnet.usdcBalance(a.address)
    const beforeB = await devnet.usdcBalance(b.address)
    await buy(shopA, a, 3)
    await buy(shopB, b, 2)
    expect(await devnet.usdcBalance(a.address)).toBe(beforeA - deposit)
    expect(await devnet.usdcBalance(b.address)).toBe(beforeB - deposit)
    expect(await onChain(configOf(a.address, payToA))).toEqual({ balance: deposit, totalClaimed: 0n })
    expect(await onChain(configOf(b.address, payToB, sellerAuthorizer.address))).toEqual({ balance: deposit, totalClaimed: 0n })
  })

  it("claims both sellers' vouchers in one transaction, one batch signed by the seller's own authorizer", async () => {
    const [a, b] = payers as [DevnetAccount, DevnetAccount]
    const [claimsA, claimsB] = await Promise.all([shopA.manager.claim(), shopB.manager.claim()])
    expect(claimsA).toHaveLength(1)
    expect(claimsB).toHaveLength(1)
    expect(claimsA[0]!.vouchers).toBe(1)
    expect(claimsA[0]!.transaction).toMatch(/^0x[0-9a-f]{64}$/)
    expect(claimsB[0]!.transaction).toBe(claimsA[0]!.transaction)
    expect(await onChain(configOf(a.address, payToA))).toEqual({ balance: deposit, totalClaimed: 3n * price })
    expect(await onChain(configOf(b.address, payToB, sellerAuthorizer.address))).toEqual({ balance: deposit, totalClaimed: 2n * price })
    expect(actions.filter(({ kind }) => kind === 'claim')).toEqual([expect.objectContaining({ vouchers: 2, success: true })])
    // Claimed, not yet swept.
    expect(await devnet.usdcBalance(payToA)).toBe(0n)

    const known = await scheme.channelRecord(computeChannelId(configOf(a.address, payToA), devnet.network))
    expect(known?.channel).toMatchObject({ balance: deposit, claimed: 3n * price, signedMax: 3n * price })
    expect(known?.actions).toEqual([expect.objectContaining({ kind: 'claim', status: 'confirmed', count: 2, amount: 5n * price })])
    const listed = await scheme.channels({ receiver: payToA, limit: 10, offset: 0 })
    expect(listed.total).toBe(1)
    expect(listed.items[0]?.config.payer).toBe(a.address)
  })

  it('sweeps exactly what was claimed to each seller, and refuses a second sweep', async () => {
    const sweptA = await shopA.manager.settle()
    const sweptB = await shopB.manager.settle()
    expect(sweptA.transaction).toMatch(/^0x[0-9a-f]{64}$/)
    expect(sweptB.transaction).not.toBe(sweptA.transaction)
    expect(await devnet.usdcBalance(payToA)).toBe(3n * price)
    expect(await devnet.usdcBalance(payToB)).toBe(2n * price)
    await expect(shopA.manager.settle()).rejects.toThrow(Reason.batchNothingToSettle)
    expect(await devnet.usdcBalance(payToA)).toBe(3n * price)
  })

  it('refunds the rest of each channel to its payer, after claiming what was served since', async () => {
    const [a, b] = payers as [DevnetAccount, DevnetAccount]
    await buy(shopA, a, 1)
    const beforeA = await devnet.usdcBalance(a.address)
    const beforeB = await devnet.usdcBalance(b.address)
    const [refundA] = await shopA.manager.refund()
    const [refundB] = await shopB.manager.refund()
    expect(refundA?.transaction).toMatch(/^0x[0-9a-f]{64}$/)
    expect(refundB?.transaction).toMatch(/^0x[0-9a-f]{64}$/)
    // A's fourth request was claimed in the refund's transaction; the rest went back.
    expect(await devnet.usdcBalance(a.address)).toBe(beforeA + deposit - 4n * price)
    expect(await devnet.usdcBalance(b.address)).toBe(beforeB + deposit - 2n * price)
    expect(await onChain(configOf(a.address, payToA))).toEqual({ balance: 4n * price, totalClaimed: 4n * price })
    expect(await onChain(configOf(b.address, payToB, sellerAuthorizer.address))).toEqual({ balance: 2n * price, totalClaimed: 2n * price })
    await shopA.manager.settle()
    expect(await devnet.usdcBalance(payToA)).toBe(4n * price)
  })
})

describe('bad claims and refunds', () => {
  let payer: DevnetAccount
  let other: DevnetAccount
  let config: ReturnType<typeof configOf>
  beforeAll(async () => {
    ;[, , payer, other] = payers as [DevnetAccount, DevnetAccount, DevnetAccount, DevnetAccount]
    config = configOf(payer.address, payToA)
    await buy(shopA, payer, 2)
    await buy(shopA, other, 1)
  })

  it('refuses a voucher signed by someone else, for another channel or for another chain, claiming nothing', async () => {
    const forged = await settleOverHttp({ type: 'claim', claims: [await row(config, 2n * price, { signer: other.privateKey })] })
    expect(forged).toMatchObject({ success: false, errorReason: Reason.batchVoucherSignature, transaction: '' })
    const otherChannel = await settleOverHttp({
      type: 'claim',
      claims: [await row(config, 2n * price, { signer: other.privateKey, channelOf: configOf(other.address, payToA) })],
    })
    expect(otherChannel.errorReason).toBe(Reason.batchVoucherSignature)
    const otherChain = await settleOverHttp({ type: 'claim', claims: [await row(config, 2n * price, { network: 'eip155:8453' })] })
    expect(otherChain.errorReason).toBe(Reason.batchVoucherSignature)
    const unserved = await settleOverHttp({ type: 'claim', claims: [await row(config, 2n * price)] }, payToA, 'eip155:8453')
    expect(unserved).toMatchObject({ success: false, errorReason: Reason.invalidNetwork })
    // Sent for this chain, but naming another in the payload's offer.
    const mismatched = await fetch(`${facilitatorUrl}/settle`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        x402Version: 2,
        paymentPayload: {
          x402Version: 2,
          accepted: requirements(payToA, 'eip155:8453'),
          payload: { type: 'claim', claims: [await row(config, 2n * price)] },
        },
        paymentRequirements: requirements(payToA),
      }),
    })
    expect(await mismatched.json()).toMatchObject({ success: false, errorReason: Reason.batchNetworkMismatch })
    expect(await onChain(config)).toEqual({ balance: deposit, totalClaimed: 0n })
  })

  it('refuses a claim above the balance or above its voucher, and one signed batch not by the authorizer', async () => {
    const above = await settleOverHttp({ type: 'claim', claims: [await row(config, deposit + 1n)] })
    expect(above).toMatchObject({ success: false, errorReason: Reason.batchCumulativeExceedsBalance })
    const beyond = await settleOverHttp({ type: 'claim', claims: [await row(config, price, { totalClaimed: 2n * price })] })
    expect(beyond.errorReason).toBe(Reason.batchClaimExceedsVoucher)
    const stranger = privateKeyToAccount(generatePrivateKey())
    const claims = [await row(config, 2n * price)]
    const claimAuthorizerSignature = await stranger.signTypedData({
      domain: Channel.domainOf(devnet.chainId),
      types: Channel.authorizerTypes,
      primaryType: 'ClaimBatch',
      message: {
        claims: [{ channelId: computeChannelId(config, devnet.network), maxClaimableAmount: 2n * price, totalClaimed: 2n * price }],
      },
    })
    const unsigned = await settleOverHttp({ type: 'claim', claims, claimAuthorizerSignature })
    expect(unsigned.errorReason).toBe(Reason.batchClaimAuthorizerSignature)
    expect(await onChain(config)).toEqual({ balance: deposit, totalClaimed: 0n })
  })

  it('claims the good rows of a batch and reports the bad one, then refuses the same and lower claims', async () => {
    const otherConfig = configOf(other.address, payToA)
    const mixed = await settleOverHttp({
      type: 'claim',
      claims: [await row(config, 2n * price), await row(otherConfig, price, { signer: payer.privateKey })],
    })
    expect(mixed.success).toBe(true)
    expect(mixed.amount).toBe((2n * price).toString())
    expect((mixed as { extra?: { claims?: unknown } }).extra?.claims).toEqual([
      { channelId: computeChannelId(config, devnet.network), totalClaimed: '2000', status: 'claimed' },
      expect.objectContaining({ status: 'refused', reason: Reason.batchVoucherSignature }),
    ])
    expect(await onChain(config)).toEqual({ balance: deposit, totalClaimed: 2n * price })
    expect(await onChain(otherConfig)).toEqual({ balance: deposit, totalClaimed: 0n })

    const again = await settleOverHttp({ type: 'claim', claims: [await row(config, 2n * price)] })
    expect(again).toMatchObject({ success: false, errorReason: Reason.batchCumulativeBelowClaimed })
    const lower = await settleOverHttp({ type: 'claim', claims: [await row(config, price)] })
    expect(lower.errorReason).toBe(Reason.batchCumulativeBelowClaimed)
    expect(await onChain(config)).toEqual({ balance: deposit, totalClaimed: 2n * price })
  })

  it('refuses a refund not signed by the receiver authorizer, returning nothing', async () => {
    const before = await devnet.usdcBalance(payer.address)
    const channelId = computeChannelId(config, devnet.network)
    const stranger = privateKeyToAccount(generatePrivateKey())
    const amount = deposit - 2n * price
    const refundAuthorizerSignature = await stranger.signTypedData({
      domain: Channel.domainOf(devnet.chainId),
      types: Channel.authorizerTypes,
      primaryType: 'Refund',
      message: { channelId, nonce: 0n, amount },
    })
    const voucher = await signVoucher(privateKeyToAccount(payer.privateKey), channelId, (2n * price).toString(), devnet.network)
    const refused = await settleOverHttp({
      type: 'refund',
      channelConfig: config,
      voucher,
      amount: amount.toString(),
      refundNonce: '0',
      claims: [],
      refundAuthorizerSignature,
    })
    expect(refused).toMatchObject({ success: false, errorReason: Reason.batchRefundAuthorizerSignature, transaction: '' })
    expect(await devnet.usdcBalance(payer.address)).toBe(before)
    expect(await onChain(config)).toEqual({ balance: deposit, totalClaimed: 2n * price })
  })
})

describe('claims of many channels in one transaction', () => {
  it('costs less gas per voucher than a claim of one', async () => {
    const buyers = payers.slice(6, 11)
    expect(buyers).toHaveLength(5)
    for (const buyer of buyers) await buy(shopA, buyer, 1)
    const gasOf = async (hash: string) => (await devnet.publicClient.getTransactionReceipt({ hash: hash as Hex })).gasUsed
    const [first, ...rest] = buyers as [DevnetAccount, ...DevnetAccount[]]
    const alone = await settleOverHttp({ type: 'claim', claims: [await row(configOf(first.address, payToA), price)] })
    expect(alone.success).toBe(true)
    // Four claims sent at once, as four resource servers would, share one transaction.
    const together = await Promise.all(
      rest.map(async (buyer) => settleOverHttp({ type: 'claim', claims: [await row(configOf(buyer.address, payToA), price)] })),
    )
    expect(new Set(together.map((result) => result.transaction)).size).toBe(1)
    expect(together.every((result) => result.success)).toBe(true)
    const single = await gasOf(alone.transaction)
    const batch = await gasOf(together[0]!.transaction)
    expect(batch / 4n).toBeLessThan(single)
    for (const buyer of buyers) expect(await onChain(configOf(buyer.address, payToA))).toEqual({ balance: deposit, totalClaimed: price })
    if (process.env.X402_PRINT_GAS) console.log(`claim gas: 1 voucher ${single}; 4 vouchers ${batch} (${batch / 4n} each)`)
  })
})

const crashStores = [
  { name: 'memory', payer: 4, store: () => store },
  { name: 'PGlite', payer: 12, store: () => pglite.store },
]

for (const backend of crashStores)
  describe(`a crash between sending a claim and recording it (${backend.name} store)`, () => {
    it('is reconciled with the escrow at the next start, and the claim is not made twice', async () => {
      const store = backend.store()
      const payer = payers[backend.payer]!
      await buy(shopA, payer, 2)
      const config = configOf(payer.address, payToA)
      // The store fails the write that records the mined claim, as a process stopping right then would.
      let crash = true
      const crashing: BatchSettlementStore = {
        ...store,
        updateAction: async (id, patch) => {
          if (crash && patch.status === 'confirmed') {
            crash = false
            throw new Error('stopped')
          }
          return store.updateAction(id, patch)
        },
      }
      const first = batchSettlementEvmFacilitator({
        networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [authorizer.privateKey] } },
        store: crashing,
        claimWindowMs: 0,
      })
      const claim = { type: 'claim', claims: [await row(config, 2n * price)] }
      const payment = {
        payload: { x402Version: 2 as const, accepted: requirements(payToA), payload: claim },
        requirements: requirements(payToA),
      }
      const lost = await first.settle(payment)
      expect(lost.success).toBe(false)
      expect(await onChain(config)).toEqual({ balance: deposit, totalClaimed: 2n * price })
      const open = await store.openActions(devnet.network)
      expect(open).toEqual([expect.objectContaining({ kind: 'claim', transaction: expect.stringMatching(/^0x/) })])

      const restarted = batchSettlementEvmFacilitator({
        networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [authorizer.privateKey] } },
        store,
        claimWindowMs: 0,
      })
      expect(await restarted.recover()).toEqual({ reconciled: 1 })
      expect(await store.openActions(devnet.network)).toEqual([])
      const record = await restarted.channelRecord(computeChannelId(config, devnet.network))
      expect(record?.actions[0]).toMatchObject({ status: 'confirmed', transaction: open[0]!.transaction })
      const again = await restarted.settle(payment)
      expect(again).toMatchObject({ success: false, errorReason: Reason.batchCumulativeBelowClaimed })
      expect(await onChain(config)).toEqual({ balance: deposit, totalClaimed: 2n * price })
      first.stop()
      restarted.stop()
    })
  })

// Last: it moves the chain's clock past the withdraw delay.
describe("a claim racing the payer's withdrawal", () => {
  it('claims ahead of a pending withdrawal; refuses the claim a finished one left uncovered, claiming the other rows', async () => {
    const [leaver, stayer, racer] = [payers[5]!, payers[1]!, payers[11]!]
    await buy(shopA, leaver, 2)
    // Paid before the clock moves: the client dates its deposit authorization by its own clock.
    await buy(shopA, stayer, 1)
    await buy(shopA, racer, 2)
    const leaverConfig = configOf(leaver.address, payToA)
    const racerConfig = configOf(racer.address, payToA)
    const escrow = { address: Channel.escrowAddress, abi: batchSettlementAbi } as const
    const wait = async (hash: Hex) => expect((await devnet.publicClient.waitForTransactionReceipt({ hash })).status).toBe('success')
    const withdraw = async (account: DevnetAccount, config: ReturnType<typeof configOf>, amount: bigint) =>
      wait(
        await devnet
          .walletClient(account.privateKey)
          .writeContract({ ...escrow, functionName: 'initiateWithdraw', args: [config, amount] }),
      )
    const finalize = async (account: DevnetAccount, config: ReturnType<typeof configOf>) =>
      wait(await devnet.walletClient(account.privateKey).writeContract({ ...escrow, functionName: 'finalizeWithdraw', args: [config] }))
    await withdraw(leaver, leaverConfig, deposit - price)
    await withdraw(racer, racerConfig, deposit)

    // The racer's receiver claims within the withdraw delay: the claim wins, the withdrawal gets the rest.
    const won = await settleOverHttp({ type: 'claim', claims: [await row(racerConfig, 2n * price)] })
    expect(won).toMatchObject({ success: true, amount: (2n * price).toString() })
    await createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) }).increaseTime({ seconds: Channel.minWithdrawDelay })
    await devnet.mine()
    const racerBefore = await devnet.usdcBalance(racer.address)
    await finalize(racer, racerConfig)
    expect(await devnet.usdcBalance(racer.address)).toBe(racerBefore + deposit - 2n * price)
    expect(await onChain(racerConfig)).toEqual({ balance: 2n * price, totalClaimed: 2n * price })
    await finalize(leaver, leaverConfig)

    const stayerConfig = configOf(stayer.address, payToA)
    const result = await settleOverHttp({ type: 'claim', claims: [await row(leaverConfig, 2n * price), await row(stayerConfig, price)] })
    expect(result.success).toBe(true)
    expect((result as { extra?: { claims?: { status: string; reason?: string }[] } }).extra?.claims).toEqual([
      expect.objectContaining({ status: 'refused', reason: Reason.batchCumulativeExceedsBalance }),
      expect.objectContaining({ status: 'claimed' }),
    ])
    expect(await onChain(leaverConfig)).toEqual({ balance: price, totalClaimed: 0n })
    expect(await onChain(stayerConfig)).toEqual({ balance: deposit, totalClaimed: price })
  })
})
