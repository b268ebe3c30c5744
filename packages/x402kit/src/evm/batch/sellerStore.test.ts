import { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import { type Hex, zeroAddress } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, describe, expect, it, onTestFinished } from 'vitest'
import { pgliteThread } from '../../server/pgliteThread.ts'
import { recoveryThreads, typedDigest } from '../recoverThreads.ts'
import * as Channel from './Channel.ts'
import {
  memorySellerChannelStore,
  type SellerChannelRecord,
  type SellerChannelStore,
  type SqlQueryable,
  sellerJournal,
  sqlSellerChannelStore,
} from './sellerStore.ts'
import { domainSeparator, fingerprintOf, type SellerChannel, signedByChannel, voucherStruct } from './sellerVoucher.ts'

const payer = privateKeyToAccount(generatePrivateKey())
const config: Channel.ChannelConfig = {
  payer: payer.address,
  payerAuthorizer: zeroAddress,
  receiver: privateKeyToAccount(generatePrivateKey()).address,
  receiverAuthorizer: privateKeyToAccount(generatePrivateKey()).address,
  token: '0x036CbD53842c5426634e7929541eC2318f3dCF7e',
  withdrawDelay: 900,
  salt: `0x${'00'.repeat(31)}07`,
}

function record(id: Hex, charged: bigint, overrides: Partial<SellerChannelRecord> = {}): SellerChannelRecord {
  return {
    id,
    network: 'eip155:84532',
    config,
    balance: 1_000_000n,
    totalClaimed: 0n,
    charged,
    signature: `0x${'ab'.repeat(65)}`,
    withdrawRequestedAt: 0,
    refundNonce: 0n,
    lastRequestAt: 1_700_000_000_000,
    ...overrides,
  }
}

describe('the voucher hasher', () => {
  it('hashes as Channel.voucherDigest does, and recovers the payer', async () => {
    const id = Channel.id(config, 84532)
    const separator = domainSeparator(84532)
    const hash = (channelId: Hex, amount: bigint) => typedDigest(separator, voucherStruct(channelId, amount))
    for (const amount of [0n, 1n, 1_000n, (1n << 128n) - 1n]) {
      expect(Buffer.from(hash(id, amount)).toString('hex')).toBe(Channel.voucherDigest(id, amount, 84532).slice(2))
    }
    const signature = await payer.signTypedData({
      domain: Channel.domainOf(84532),
      types: Channel.types,
      primaryType: 'Voucher',
      message: { channelId: id, maxClaimableAmount: 5_000n },
    })
    // A channel that has shown no key yet: the signer is checked by address.
    const signedBy = (amount: bigint, sent: unknown) =>
      signedByChannel(separator, voucherStruct(id, amount), sent, { signer: payer.address.toLowerCase() } as SellerChannel, here)
    const here = recoveryThreads({ threads: 0 })
    expect(await signedBy(5_000n, signature)).toBe(true)
    expect(await signedBy(5_001n, signature)).toBe(false)
    expect(await signedBy(5_000n, `${signature.slice(0, -2)}1f`)).toBe(false)
    expect(await signedBy(5_000n, 42)).toBe(false)
  })
})

describe('a channel signer check with the public key kept', () => {
  it.each([0, 1])('learns the key from the first good voucher and refuses another signer after it (%i threads)', async (threads) => {
    const recovery = recoveryThreads({ threads })
    onTestFinished(() => recovery.close())
    const id = Channel.id(config, 84532)
    const separator = domainSeparator(84532)
    const sign = (account: typeof payer, amount: bigint) =>
      account.signTypedData({
        domain: Channel.domainOf(84532),
        types: Channel.types,
        primaryType: 'Voucher',
        message: { channelId: id, maxClaimableAmount: amount },
      })
    const channel = { signer: payer.address.toLowerCase(), fingerprint: fingerprintOf(config) } as SellerChannel
    const stranger = privateKeyToAccount(generatePrivateKey())
    // Before the key is known, a stranger's signature fails by address and teaches nothing.
    expect(await signedByChannel(separator, voucherStruct(id, 1n), await sign(stranger, 1n), channel, recovery)).toBe(false)
    expect(channel.signerKey).toBeUndefined()
    expect(await signedByChannel(separator, voucherStruct(id, 2n), await sign(payer, 2n), channel, recovery)).toBe(true)
    expect(channel.signerKey).toHaveLength(65)
    expect(await signedByChannel(separator, voucherStruct(id, 3n), await sign(payer, 3n), channel, recovery)).toBe(true)
    expect(await signedByChannel(separator, voucherStruct(id, 4n), await sign(stranger, 4n), channel, recovery)).toBe(false)
    expect(await signedByChannel(separator, voucherStruct(id, 5n), await sign(payer, 4n), channel, recovery)).toBe(false)
    expect(await signedByChannel(separator, voucherStruct(id, 5n), '0x1234', channel, recovery)).toBe(false)
  })
})

const pools: { end(): Promise<void> }[] = []
const stores: { name: string; open(): Promise<SqlQueryable> }[] = [
  { name: 'PGlite', open: async () => PGlite.create() },
  {
    name: 'PGlite on a thread',
    async open() {
      const db = await pgliteThread()
      pools.push({ end: () => db.close() })
      return db
    },
  },
  ...(process.env.DATABASE_URL
    ? [
        {
          name: 'PostgreSQL',
          async open() {
            const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 })
            pools.push(pool)
            return pool
          },
        },
      ]
    : []),
]
const made: { db: SqlQueryable; table: string }[] = []
afterAll(async () => {
  for (const { db, table } of made) await db.query(`DROP TABLE IF EXISTS ${table}`)
  for (const pool of pools.splice(0)) await pool.end()
})

const suites: { name: string; store(): Promise<SellerChannelStore> }[] = [
  { name: 'memory', store: async () => memorySellerChannelStore() },
  ...stores.map(({ name, open }) => ({
    name,
    async store() {
      const db = await open()
      const table = `seller_channels_test_${Date.now()}_${Math.floor(Math.random() * 1e6)}`
      made.push({ db, table })
      return sqlSellerChannelStore(db, { table })
    },
  })),
]

describe.each(suites)('the channel store on $name', ({ store: open }) => {
  it('saves a batch, loads it back exactly, and never lowers a channel', async () => {
    const store = await open()
    expect(await store.load()).toEqual([])
    const a = `0x${'0a'.repeat(32)}` as Hex
    const b = `0x${'0b'.repeat(32)}` as Hex
    await store.save([record(a, 5_000n), record(b, 7_000n, { signature: undefined, withdrawRequestedAt: 1_700_000_123, refundNonce: 2n })])
    await store.save([record(a, 9_000n, { totalClaimed: 5_000n }), record(b, 6_000n)])
    const loaded = new Map((await store.load()).map((entry) => [entry.id, entry]))
    expect(loaded.get(a)).toEqual(record(a, 9_000n, { totalClaimed: 5_000n }))
    // The older record (6,000 below the stored 7,000) left the stored one as it was.
    expect(loaded.get(b)).toEqual(record(b, 7_000n, { signature: undefined, withdrawRequestedAt: 1_700_000_123, refundNonce: 2n }))
  })
})

describe('the write-behind journal', () => {
  it('starts the commit a waiter needs as soon as the one in flight ends, without waiting for the timer', async () => {
    const inner = memorySellerChannelStore()
    let saves = 0
    const store: SellerChannelStore = {
      load: () => inner.load(),
      async save(records) {
        saves++
        await new Promise((resolve) => setTimeout(resolve, 30))
        await inner.save(records)
      },
    }
    const state = new Map<string, SellerChannelRecord>()
    const id = `0x${'0c'.repeat(32)}` as Hex
    const journal = sellerJournal({ store, intervalMs: 60_000, read: (key) => state.get(key), onError: () => {} })
    state.set(id, record(id, 1_000n))
    journal.touch(id)
    const first = journal.flushed()
    // A change made while the first commit is out needs the next one.
    state.set(id, record(id, 2_000n))
    journal.touch(id)
    const started = performance.now()
    await Promise.all([first, journal.flushed()])
    expect(saves).toBe(2)
    expect(performance.now() - started).toBeLessThan(30_000)
    expect((await inner.load())[0]?.charged).toBe(2_000n)
    await journal.close()
  })

  it('saves every changed channel in one group commit, the latest state of each, and retries a failed save', async () => {
    const inner = memorySellerChannelStore()
    const batches: number[] = []
    let failNext = true
    const store: SellerChannelStore = {
      load: () => inner.load(),
      async save(records) {
        if (failNext) {
          failNext = false
          throw new Error('database away')
        }
        batches.push(records.length)
        await inner.save(records)
      },
    }
    const state = new Map<string, SellerChannelRecord>()
    const errors: unknown[] = []
    const journal = sellerJournal({ store, intervalMs: 5, read: (id) => state.get(id), onError: (error) => errors.push(error) })
    const ids = Array.from({ length: 50 }, (_, index) => `0x${index.toString(16).padStart(64, '0')}` as Hex)
    for (const id of ids)
      for (let step = 1n; step <= 3n; step++) {
        state.set(id, record(id, step * 1_000n))
        journal.touch(id)
      }
    expect(journal.unsaved(ids[0]!)).toBe(3)
    await journal.flushed()
    expect(errors).toHaveLength(1)
    expect(batches).toEqual([50])
    expect(journal.unsaved(ids[0]!)).toBe(0)
    expect((await inner.load()).map((entry) => entry.charged)).toEqual(ids.map(() => 3_000n))
    await journal.close()
  })
})
