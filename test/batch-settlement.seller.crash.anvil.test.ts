/**
 * A channel seller killed (SIGKILL) mid-stream and restarted on its store. Vouchers are written behind
 * in group commits; a channel may run `maxUnsaved` vouchers ahead of the store before a request waits
 * for a commit. The suite shows the bound: what the store lacks after the kill is at most `maxUnsaved`
 * prices, a payer who re-spends exactly that window gets no more, an honest payer's next voucher
 * recovers it, and every amount claimed on chain is a voucher the payer signed.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { BatchSettlementEvmScheme, computeChannelId, signVoucher } from '@x402/evm/batch-settlement/client'
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch'
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import pg from 'pg'
import type { Address, Hex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HttpHeader, PaymentPayload, PaymentRequired, Reason } from 'x402kit'
import { Channel, type SqlQueryable, sqlSellerChannelStore } from 'x402kit/evm'
import { batchSettlementAbi } from '../contracts/artifacts/index.ts'
import { placeEscrow, type ReferenceBatchFacilitator, startReferenceBatchFacilitator } from './batch-settlement.seller.support.ts'

const price = 1_000n
const maxUnsaved = 4
const table = `seller_crash_${Date.now()}`

let devnet: Devnet
let payer: DevnetAccount
let authorizer: DevnetAccount
let payTo: Address
let reference: ReferenceBatchFacilitator
let dataDir: string | undefined
let child: ChildProcess | undefined
let port: number
const logs: string[] = []

async function freePort(): Promise<number> {
  return await new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

async function startSeller(): Promise<void> {
  const spawned = spawn(process.execPath, ['--import', 'tsx', 'test/batch-settlement.seller.process.ts'], {
    env: {
      ...process.env,
      ...(dataDir && { SELLER_DATA_DIR: dataDir }),
      SELLER_NETWORK: devnet.network,
      SELLER_USDC: devnet.usdc,
      SELLER_RECEIVER_AUTHORIZER: authorizer.address,
      FACILITATOR_URL: reference.url,
      SELLER_TABLE: table,
      SELLER_PAY_TO: payTo,
      SELLER_PRICE: price.toString(),
      SELLER_PORT: String(port),
      // Commits only when a channel is `maxUnsaved` ahead (no timer in this run): the kill finds vouchers the store lacks.
      SELLER_COMMIT_MS: '3600000',
      SELLER_MAX_UNSAVED: String(maxUnsaved),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child = spawned
  for (const stream of [spawned.stdout, spawned.stderr]) stream?.setEncoding('utf8').on('data', (chunk: string) => logs.push(chunk))
  const deadline = Date.now() + 60_000
  for (;;) {
    if (spawned.exitCode !== null) throw new Error(`The seller exited:\n${logs.join('')}`)
    const ready = await fetch(`${url()}/ready`).then(
      (response) => response.ok,
      () => false,
    )
    if (ready) return
    if (Date.now() > deadline) throw new Error(`The seller was not ready:\n${logs.join('')}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function killSeller(): Promise<void> {
  const running = child
  if (!running || running.exitCode !== null) return
  const exited = new Promise((resolve) => running.once('exit', resolve))
  running.kill('SIGKILL')
  await exited
  child = undefined
}

const url = () => `http://127.0.0.1:${port}`

async function openStore(): Promise<{ db: SqlQueryable; close(): Promise<unknown> }> {
  if (process.env.DATABASE_URL) {
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 })
    return { db: pool, close: () => pool.end() }
  }
  const db = await PGlite.create(dataDir!)
  return { db, close: () => db.close() }
}

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 3 })
  const [first, second] = devnet.accounts as [DevnetAccount, DevnetAccount]
  payer = first
  authorizer = second
  payTo = privateKeyToAccount(generatePrivateKey()).address
  await placeEscrow(devnet)
  reference = await startReferenceBatchFacilitator(devnet, { sender: devnet.accounts[2]!.privateKey, authorizer: authorizer.privateKey })
  if (!process.env.DATABASE_URL) dataDir = await mkdtemp(join(tmpdir(), 'x402-seller-'))
  port = await freePort()
})
afterAll(async () => {
  await killSeller()
  if (process.env.DATABASE_URL) {
    const { db, close } = await openStore()
    await db.query(`DROP TABLE IF EXISTS ${table}`)
    await close()
  }
  if (dataDir) await rm(dataDir, { recursive: true, force: true })
  await reference?.close()
  await devnet?.stop()
})

const config = () => ({
  payer: payer.address,
  payerAuthorizer: payer.address,
  receiver: payTo,
  receiverAuthorizer: authorizer.address,
  token: devnet.usdc,
  withdrawDelay: Channel.minWithdrawDelay,
  salt: `0x${'00'.repeat(32)}` as Hex,
})
const channelId = () => computeChannelId(config(), devnet.network).toLowerCase() as Hex
const sellerChannel = async () =>
  (await (await fetch(`${url()}/channel/${channelId()}`)).json()) as { charged: string; totalClaimed: string } | null

/** What the store holds of the channel, read as a restarted seller would. */
async function storedCharged(): Promise<bigint> {
  const { db, close } = await openStore()
  try {
    const records = await sqlSellerChannelStore(db, { table }).load()
    return records.find((record) => record.id === channelId())?.charged ?? 0n
  } finally {
    await close()
  }
}

/** A voucher the payer signs by hand: what a payer who knows of the crash could send. */
async function payWith(amount: bigint) {
  const offer = PaymentRequired.decode((await fetch(`${url()}/quote`)).headers.get(HttpHeader.paymentRequired)!).accepts[0]!
  const voucher = await signVoucher(privateKeyToAccount(payer.privateKey), channelId(), amount.toString(), devnet.network)
  const header = PaymentPayload.encode({
    x402Version: 2,
    accepted: offer,
    payload: { type: 'voucher', channelConfig: config(), voucher },
  } as never)
  return fetch(`${url()}/quote`, { headers: { [HttpHeader.paymentSignature]: header } })
}

describe('a seller killed mid-stream and restarted on its store', () => {
  it('loses at most the stated bound, recovers with the next voucher, and claims only signed vouchers', async () => {
    const signed: bigint[] = []
    const recording = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init)
      const header = request.headers.get(HttpHeader.paymentSignature)
      if (header)
        signed.push(
          BigInt((PaymentPayload.decode(header).payload as { voucher: { maxClaimableAmount: string } }).voucher.maxClaimableAmount),
        )
      return fetch(request)
    }) as typeof fetch
    const pay = wrapFetchWithPaymentFromConfig(recording, {
      schemes: [{ network: 'eip155:*', client: new BatchSettlementEvmScheme(privateKeyToAccount(payer.privateKey) as never) }],
      spendControls: { allowedAssets: [{ network: devnet.network, asset: devnet.usdc }] },
    } as never)
    let served = 0
    const serve = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const response = await pay(`${url()}/quote`)
        expect(response.status).toBe(200)
        await response.json()
        served++
      }
    }

    await startSeller()
    // 22 requests: a commit is forced at every fifth (maxUnsaved 4), so the last two are in memory only.
    await serve(22)
    const inMemory = BigInt((await sellerChannel())!.charged)
    expect(inMemory).toBe(22n * price)
    await killSeller()

    // The bound: the store is at most `maxUnsaved` vouchers behind what was served.
    const stored = await storedCharged()
    const lost = inMemory - stored
    expect(lost).toBeGreaterThan(0n)
    expect(lost).toBeLessThanOrEqual(BigInt(maxUnsaved) * price)

    await startSeller()
    expect(BigInt((await sellerChannel())!.charged)).toBe(stored)
    // A payer who knows of the crash can spend the lost window again, one price at a time, and no more:
    // the store's voucher is refused, and the next vouchers are only as many as were lost.
    expect(PaymentRequired.decode((await payWith(stored)).headers.get(HttpHeader.paymentRequired)!).error).toBe(
      Reason.batchVoucherAlreadyUsed,
    )
    let respent = 0n
    for (let amount = stored + price; amount <= inMemory; amount += price) {
      const response = await payWith(amount)
      expect(response.status, response.headers.get(HttpHeader.paymentRequired) ?? '').toBe(200)
      signed.push(amount)
      respent += price
    }
    expect(respent).toBe(lost)
    // The honest payer goes on from its own count: its next voucher is above everything served.
    await serve(8)
    expect(BigInt((await sellerChannel())!.charged)).toBe(30n * price)

    const claims = (await (await fetch(`${url()}/claim`, { method: 'POST' })).json()) as { claimed: string }[]
    expect(claims.map(({ claimed }) => BigInt(claimed))).toEqual([30n * price])
    const [, totalClaimed] = await devnet.publicClient.readContract({
      address: Channel.escrowAddress,
      abi: batchSettlementAbi,
      functionName: 'channels',
      args: [channelId()],
    })
    // The escrow checked the payer's signature on the voucher it claimed; it is the highest one signed.
    expect(totalClaimed).toBe(30n * price)
    expect(signed.includes(totalClaimed)).toBe(true)
    expect(totalClaimed).toBe([...signed].sort((a, b) => (a < b ? 1 : -1))[0])
    // Served: 30 by the honest payer plus the re-spent window; paid: 30 prices. Unpaid: the bound at most.
    const unpaid = BigInt(served) * price + respent - totalClaimed
    expect(unpaid).toBe(lost)
    expect(unpaid).toBeLessThanOrEqual(BigInt(maxUnsaved) * price)
    expect(await devnet.usdcBalance(payTo)).toBe(totalClaimed)
  })
})
