/**
 * The `SettlementQueue` contract, run against every implementation: `memoryStore`, and `sqlStore` on
 * PGlite and (when DATABASE_URL names one) on PostgreSQL. Both must answer alike, call for call.
 */
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { Payment } from 'x402kit'
import { memoryStore, type PaymentOutcome, type SettlementQueue, type SettlementRecord, type SettlementStore } from 'x402kit/facilitator'
import { type Database, openDatabase } from './database.ts'
import type { QueueOptions, SettledEntry } from './queue.ts'
import { migrate, sqlStore } from './sql.ts'

type Store = SettlementStore & SettlementQueue
/** What the ledger hook of a SQL store was given, and whether it throws. */
type Ledger = { entries: SettledEntry[][]; statuses: string[][]; fail: boolean }
type Backend = {
  /** Two stores on one queue, as two instances would have (two connections on PostgreSQL). */
  one: Store
  two: Store
  /** Set on SQL stores, whose ledger hook writes inside `closeBatch`'s transaction. */
  ledger?: Ledger
  close(): Promise<unknown>
}

function sqlBackend(one: Database, two: Database, cleanUp: () => Promise<unknown>): Promise<Backend> {
  const ledger: Ledger = { entries: [], statuses: [], fail: false }
  const options: QueueOptions = {
    async ledger(db, entries) {
      // What the transaction sees: the outcomes are already written in it.
      const { rows } = await db.query('SELECT status FROM payments WHERE key = ANY($1) ORDER BY key', [entries.map((entry) => entry.key)])
      ledger.statuses.push(rows.map((row) => row.status as string))
      ledger.entries.push(entries)
      if (ledger.fail) throw new Error('ledger down')
    },
  }
  return Promise.all([migrate(one), migrate(two)]).then(() => ({
    one: sqlStore(one, options),
    two: sqlStore(two, options),
    ledger,
    close: cleanUp,
  }))
}

const backends: { name: string; enabled: boolean; open(): Promise<Backend> }[] = [
  {
    name: 'memoryStore',
    enabled: true,
    async open() {
      const store = memoryStore()
      return { one: store, two: store, close: async () => {} }
    },
  },
  {
    name: 'sqlStore on PGlite',
    enabled: true,
    async open() {
      const dir = await mkdtemp(join(tmpdir(), 'x402-queue-'))
      const db = await openDatabase({ dataDir: dir })
      return sqlBackend(db, db, async () => {
        await db.close()
        await rm(dir, { recursive: true, force: true })
      })
    },
  },
  {
    name: 'sqlStore on PostgreSQL',
    enabled: Boolean(process.env.DATABASE_URL),
    async open() {
      const one = await openDatabase({ databaseUrl: process.env.DATABASE_URL })
      const two = await openDatabase({ databaseUrl: process.env.DATABASE_URL })
      return sqlBackend(one, two, () => Promise.all([one.close(), two.close()]))
    },
  },
]

const asset = '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913'
const otherAsset = '0x036CbD53842c5426634e7929541eC2318f3dCF7e'
const payTo = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

// PostgreSQL joins when DATABASE_URL names one (CI starts one); the others always run.
for (const backend of backends.filter((b) => b.enabled))
  describe(`the settlement queue: ${backend.name}`, () => {
    let one: Store
    let two: Store
    let ledger: Ledger | undefined
    let close: () => Promise<unknown>
    // A network, payer and signers unique to each test, so a shared PostgreSQL can hold other runs' rows.
    let network: string
    let payer: string
    const signer = () => `0x${randomUUID().replaceAll('-', '').padEnd(40, 'a')}`
    let clock = 1_700_000_000_000
    const tick = () => (clock += 1_000)

    const payment = (name: string, at = asset): Payment => {
      const requirements = { scheme: 'exact', network, amount: '1000', asset: at, payTo, maxTimeoutSeconds: 60 }
      return { requirements, payload: { x402Version: 2, accepted: requirements, payload: { nonce: name } } }
    }
    const record = (name: string, overrides: Partial<SettlementRecord> = {}): SettlementRecord => {
      const at = tick()
      return {
        key: `${network}:${name}`,
        network,
        scheme: 'exact',
        payer,
        amount: '1000',
        asset,
        payTo,
        payloadHash: `hash-${name}`,
        status: 'queued',
        createdAt: at,
        updatedAt: at,
        ...overrides,
      }
    }
    const enqueue = (name: string, overrides: Partial<SettlementRecord> = {}, cap?: bigint) =>
      one.enqueue(record(name, overrides), payment(name, overrides.asset), cap === undefined ? {} : { cap })
    const exposure = (of: { payer?: string; payTo?: string; asset?: string } = {}) =>
      one.exposure({ payer: of.payer ?? payer, payTo: of.payTo ?? payTo, asset: of.asset ?? asset })
    async function leased(store: Store = one, owner = 'worker-a') {
      const address = signer()
      expect(await store.leaseSigner(network, address, owner, 60_000)).toBe(true)
      return address
    }
    const open = (address: string, limit = 10, owner = 'worker-a', store: Store = one) =>
      store.openBatch({ id: randomUUID(), network, signer: address, owner, limit, now: tick() })
    const settled = (key: string, transaction = `0x${'ab'.repeat(32)}`): Extract<PaymentOutcome, { status: 'settled' }> => ({
      key,
      status: 'settled',
      transaction,
      gasUsed: 45_000n,
      gasCost: 45_000n * 1_000_000_000n,
      result: { success: true, transaction, network, payer, amount: '1000' },
    })
    const failed = (key: string): Extract<PaymentOutcome, { status: 'failed' }> => ({
      key,
      status: 'failed',
      errorReason: 'authorization_used_elsewhere',
      result: { success: false, errorReason: 'authorization_used_elsewhere', transaction: '', network, payer },
    })

    beforeAll(async () => {
      ;({ one, two, ledger, close } = await backend.open())
    })
    afterAll(() => close())
    beforeEach(() => {
      network = `eip155:${Math.floor(Math.random() * 1e9) + 1_000_000}`
      payer = `0x${randomUUID().replaceAll('-', '').padEnd(40, 'b')}`
    })

    describe('enqueue', () => {
      it('queues a payment nobody recorded, and a verified one with the same payload hash', async () => {
        expect(await enqueue('fresh')).toMatchObject({ queued: true })
        const verified = record('verified', { status: 'verified', payer: undefined })
        expect(await one.reserve(verified.key, verified)).toBeUndefined()
        expect(await one.enqueue({ ...record('verified'), createdAt: clock + 5 }, payment('verified'))).toMatchObject({ queued: true })
        const moved = await two.get(verified.key)
        expect(moved).toMatchObject({ status: 'queued', payer, createdAt: verified.createdAt })
        expect((await one.stats(network)).depth).toBe(2)
        expect(await exposure()).toBe(2_000n)
      })

      it('with only verified, moves a verified record and leaves a payment nobody recorded alone', async () => {
        expect(await one.enqueue(record('unknown'), payment('unknown'), { only: 'verified' })).toEqual({ queued: false, absent: true })
        expect(await two.get(record('unknown').key)).toBeUndefined()
        const verified = record('known', { status: 'verified' })
        await one.reserve(verified.key, verified)
        expect(await two.enqueue({ ...record('known'), payer: undefined }, payment('known'), { only: 'verified' })).toEqual({
          queued: true,
          payer,
        })
        expect(await one.get(verified.key)).toMatchObject({ status: 'queued' })
        expect(await exposure()).toBe(1_000n)
      })

      it('refuses a key held by another payload, or by a record past verified, and changes nothing', async () => {
        const verified = record('other', { status: 'verified' })
        await one.reserve(verified.key, verified)
        const refused = await one.enqueue(record('other', { payloadHash: 'another' }), payment('other'))
        expect(refused).toEqual({ queued: false, existing: expect.objectContaining({ key: verified.key, status: 'verified' }) })
        for (const status of ['settling', 'settled', 'failed'] as const) {
          const held = record(`held-${status}`, { status })
          await one.reserve(held.key, held)
          expect(await one.enqueue(record(`held-${status}`), payment(`held-${status}`))).toEqual({
            queued: false,
            existing: expect.objectContaining({ status }),
          })
        }
        expect(await enqueue('twice')).toMatchObject({ queued: true })
        expect(await enqueue('twice')).toEqual({ queued: false, existing: expect.objectContaining({ status: 'queued' }) })
        expect((await one.stats(network)).depth).toBe(1)
        expect(await exposure()).toBe(1_000n)
      })

      it('holds the exposure cap exactly: at the cap queues, one over refuses', async () => {
        expect(await enqueue('a', { amount: '600' }, 1_000n)).toMatchObject({ queued: true })
        expect(await enqueue('b', { amount: '401' }, 1_000n)).toEqual({ queued: false, cap: true })
        expect(await one.get(`${network}:b`)).toBeUndefined()
        expect(await enqueue('c', { amount: '400' }, 1_000n)).toMatchObject({ queued: true })
        expect(await exposure()).toBe(1_000n)
        expect(await enqueue('d', { amount: '1' }, 1_000n)).toEqual({ queued: false, cap: true })
        // A single payment over the cap, with no exposure yet, is refused too.
        expect(await enqueue('e', { amount: '1001', payer: signer() }, 1_000n)).toEqual({ queued: false, cap: true })
        // Without a cap, nothing holds it back.
        expect(await enqueue('f', { amount: '5' })).toMatchObject({ queued: true })
        expect(await exposure()).toBe(1_005n)
      })

      it('caps per payer, payee and asset, whatever the case of the addresses', async () => {
        const otherPayTo = signer()
        expect(await enqueue('a', { amount: '1000' }, 1_000n)).toMatchObject({ queued: true })
        expect(await enqueue('b', { amount: '1000', payTo: otherPayTo }, 1_000n)).toMatchObject({ queued: true })
        expect(await enqueue('c', { amount: '1000', asset: otherAsset }, 1_000n)).toMatchObject({ queued: true })
        expect(await enqueue('d', { amount: '1000', payer: signer() }, 1_000n)).toMatchObject({ queued: true })
        expect(await enqueue('e', { amount: '1', payer: payer.toUpperCase().replace('0X', '0x') }, 1_000n)).toEqual({
          queued: false,
          cap: true,
        })
        expect(await exposure({ payTo: otherPayTo.toUpperCase().replace('0X', '0x') })).toBe(1_000n)
        expect(await exposure({ asset: otherAsset.toLowerCase() })).toBe(1_000n)
        expect(await exposure({ payer: signer() })).toBe(0n)
      })

      it('lets concurrent enqueues from two instances pass the cap no further than it allows', async () => {
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => (i % 2 ? one : two).enqueue(record(`race-${i}`), payment(`race-${i}`), { cap: 5_000n })),
        )
        expect(results.filter((result) => result.queued)).toHaveLength(5)
        expect(await exposure()).toBe(5_000n)
      })

      it('answers many concurrent calls (queued together in one transaction) as if each ran alone', async () => {
        for (let i = 0; i < 10; i++) {
          const verified = record(`verified-${i}`, { status: 'verified' })
          expect(await one.reserve(verified.key, verified)).toBeUndefined()
        }
        const other = record('other-payload', { status: 'verified' })
        await one.reserve(other.key, other)
        const calls: { name: string; run: () => Promise<Awaited<ReturnType<Store['enqueue']>>> }[] = []
        for (let i = 0; i < 10; i++) {
          const name = `verified-${i}`
          // The same verified payment three times, from both instances: it is queued once.
          for (const store of [one, two, one])
            calls.push({
              name,
              run: () => store.enqueue({ ...record(name), payer: undefined }, payment(name), { cap: 25_000n, only: 'verified' }),
            })
        }
        for (let i = 0; i < 30; i++) {
          const name = `fresh-${i}`
          // Fresh payments twice each: once queued, once answered with the queued record.
          for (const store of [two, one]) calls.push({ name, run: () => store.enqueue(record(name), payment(name), { cap: 25_000n }) })
        }
        calls.push({ name: 'unknown', run: () => one.enqueue(record('unknown'), payment('unknown'), { only: 'verified' }) })
        calls.push({
          name: 'other-payload',
          run: () => one.enqueue(record('other-payload', { payloadHash: 'another' }), payment('other-payload')),
        })
        const results = await Promise.all(calls.map((call) => call.run()))

        const queuedNames = calls.filter((_, i) => results[i]!.queued).map((call) => call.name)
        expect(new Set(queuedNames).size).toBe(queuedNames.length)
        // The cap holds over the whole group: 25 payments of 1,000 at most, and exactly that many here.
        expect(queuedNames).toHaveLength(25)
        expect(await exposure()).toBe(25_000n)
        expect((await two.stats(network)).depth).toBe(25)
        for (const [i, call] of calls.entries()) {
          const result = results[i]!
          const stored = await two.get(`${network}:${call.name}`)
          if (call.name === 'unknown') expect(result).toEqual({ queued: false, absent: true })
          else if (call.name === 'other-payload')
            expect(result).toEqual({ queued: false, existing: expect.objectContaining({ status: 'verified' }) })
          else if (result.queued) expect(stored).toMatchObject({ status: 'queued', payer })
          else if ('existing' in result) expect(result.existing).toMatchObject({ key: `${network}:${call.name}`, status: 'queued' })
          else {
            // Refused by the cap: unless another call queued it, a fresh payment left no row, a verified one stays verified.
            expect(result).toEqual({ queued: false, cap: true })
            if (queuedNames.includes(call.name)) expect(stored).toMatchObject({ status: 'queued' })
            else if (call.name.startsWith('fresh')) expect(stored).toBeUndefined()
            else expect(stored).toMatchObject({ status: 'verified' })
          }
        }
        expect(await two.get(`${network}:unknown`)).toBeUndefined()
      })
    })

    describe('signer leases', () => {
      it('are exclusive between owners, renewable by the owner, and released', async () => {
        const address = signer()
        expect(await one.leaseSigner(network, address, 'worker-a', 60_000)).toBe(true)
        expect(await two.leaseSigner(network, address, 'worker-b', 60_000)).toBe(false)
        expect(await two.leaseSigner(network, address.toUpperCase().replace('0X', '0x'), 'worker-b', 60_000)).toBe(false)
        expect(await one.leaseSigner(network, address, 'worker-a', 60_000)).toBe(true)
        // Another network is another key.
        expect(await two.leaseSigner(`${network}0`, address, 'worker-b', 60_000)).toBe(true)
        // Releasing someone else's lease does nothing.
        await two.releaseSigner(network, address, 'worker-b')
        expect(await two.leaseSigner(network, address, 'worker-b', 60_000)).toBe(false)
        await one.releaseSigner(network, address, 'worker-a')
        expect(await two.leaseSigner(network, address, 'worker-b', 60_000)).toBe(true)
        expect(await one.leaseSigner(network, address, 'worker-a', 60_000)).toBe(false)
      })

      it('are taken over once they expire, and renewing pushes the expiry', async () => {
        const address = signer()
        expect(await one.leaseSigner(network, address, 'worker-a', 300)).toBe(true)
        await sleep(150)
        expect(await one.leaseSigner(network, address, 'worker-a', 300)).toBe(true)
        await sleep(200)
        expect(await two.leaseSigner(network, address, 'worker-b', 300)).toBe(false)
        await sleep(250)
        expect(await two.leaseSigner(network, address, 'worker-b', 60_000)).toBe(true)
        expect(await one.leaseSigner(network, address, 'worker-a', 60_000)).toBe(false)
      })

      it('lets exactly one of concurrent claimants win', async () => {
        const address = signer()
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) => (i % 2 ? one : two).leaseSigner(network, address, `worker-${i}`, 60_000)),
        )
        expect(results.filter(Boolean)).toHaveLength(1)
      })
    })

    describe('openBatch', () => {
      it('opens only under the lease: none, another owner’s, or an expired one take nothing', async () => {
        await enqueue('a')
        const address = signer()
        expect(await open(address)).toBeUndefined()
        expect(await two.leaseSigner(network, address, 'worker-b', 200)).toBe(true)
        expect(await open(address)).toBeUndefined()
        await sleep(300)
        expect(await open(address, 10, 'worker-b', two)).toBeUndefined()
        expect((await one.stats(network)).depth).toBe(1)
        await one.leaseSigner(network, address, 'worker-a', 60_000)
        expect((await open(address))?.batch.keys).toEqual([`${network}:a`])
      })

      it('takes the oldest first, one asset per batch, up to the limit, in a stable order', async () => {
        for (const name of ['b1', 'b2', 'c1', 'b3', 'b4', 'c2']) await enqueue(name, { asset: name.startsWith('b') ? asset : otherAsset })
        // Two queued at the same instant are ordered by key.
        const at = tick()
        await one.enqueue(record('b6', { createdAt: at, updatedAt: at }), payment('b6'))
        await one.enqueue(record('b5', { createdAt: at, updatedAt: at }), payment('b5'))
        const address = await leased()
        const first = await open(address, 3)
        expect(first?.batch).toMatchObject({ network, asset, signer: address, transactions: [] })
        expect(first?.batch.keys).toEqual(['b1', 'b2', 'b3'].map((name) => `${network}:${name}`))
        expect(first?.payments.map((p) => p.key).sort()).toEqual([...first!.batch.keys].sort())
        const b1 = first!.payments.find((p) => p.key === `${network}:b1`)
        expect(b1).toEqual({
          key: `${network}:b1`,
          network,
          asset,
          payTo,
          payer,
          amount: '1000',
          payment: payment('b1'),
          attempts: 0,
          queuedAt: expect.any(Number),
        })
        expect((await open(address, 3))?.batch).toMatchObject({
          asset: otherAsset,
          keys: [`${network}:c1`, `${network}:c2`],
        })
        expect((await open(address, 10))?.batch.keys).toEqual(['b4', 'b5', 'b6'].map((name) => `${network}:${name}`))
        expect(await open(address)).toBeUndefined()
        expect(await two.get(`${network}:b1`)).toMatchObject({ status: 'submitted' })
      })

      it('never gives one payment to two of many concurrent openers', async () => {
        const count = 200
        for (let i = 0; i < count; i += 50)
          await Promise.all(Array.from({ length: 50 }, (_, j) => enqueue(`p${String(i + j).padStart(3, '0')}`)))
        const openers = await Promise.all(Array.from({ length: 8 }, (_, i) => leased(i % 2 ? one : two, `worker-${i}`)))
        const taken: string[] = []
        let batches = 0
        await Promise.all(
          openers.map(async (address, i) => {
            for (;;) {
              const opened = await open(address, 7, `worker-${i}`, i % 2 ? one : two)
              if (!opened) return
              batches++
              expect(opened.payments.map((p) => p.key).sort()).toEqual([...opened.batch.keys].sort())
              taken.push(...opened.batch.keys)
            }
          }),
        )
        expect(taken).toHaveLength(count)
        expect(new Set(taken).size).toBe(count)
        expect(batches).toBeGreaterThanOrEqual(Math.ceil(count / 7))
        expect(await one.stats(network)).toEqual({ depth: 0, oldestQueuedAt: undefined })
      })
    })

    describe('addTransaction', () => {
      it('records transactions on an open batch, in order, and refuses a closed or unknown one', async () => {
        await enqueue('a')
        const address = await leased()
        const { batch } = (await open(address))!
        const first = { hash: `0x${'01'.repeat(32)}`, raw: '0x02f8', nonce: 7 }
        const second = { hash: `0x${'02'.repeat(32)}`, raw: '0x02f9', nonce: 7 }
        await one.addTransaction(batch.id, first)
        await two.addTransaction(batch.id, second)
        expect((await one.unfinishedBatches(network, address))[0]?.batch.transactions).toEqual([first, second])
        await one.closeBatch(batch.id, [settled(batch.keys[0]!)], tick())
        await expect(one.addTransaction(batch.id, first)).rejects.toThrow(/not open/)
        await expect(one.addTransaction(randomUUID(), first)).rejects.toThrow(/not open/)
      })
    })

    describe('closeBatch', () => {
      it('records settled, failed and queued outcomes; a requeued payment counts an attempt', async () => {
        for (const name of ['s', 'f', 'q']) await enqueue(name)
        const address = await leased()
        const { batch } = (await open(address))!
        const [s, f, q] = batch.keys as [string, string, string]
        expect(await exposure()).toBe(3_000n)
        const closedAt = tick()
        await one.closeBatch(batch.id, [settled(s), failed(f), { key: q, status: 'queued' }], closedAt)
        expect(await two.get(s)).toMatchObject({
          status: 'settled',
          transaction: settled(s).result.transaction,
          result: settled(s).result,
          errorReason: undefined,
          updatedAt: closedAt,
        })
        expect(await two.get(f)).toMatchObject({
          status: 'failed',
          transaction: undefined,
          errorReason: 'authorization_used_elsewhere',
          result: failed(f).result,
        })
        expect(await two.get(q)).toMatchObject({ status: 'queued' })
        // Final outcomes end their exposure; a requeued payment is still unsettled.
        expect(await exposure()).toBe(1_000n)
        expect(await one.unfinishedBatches(network, address)).toEqual([])
        expect(await one.stats(network)).toMatchObject({ depth: 1 })
        const again = (await open(address))!
        expect(again.batch.keys).toEqual([q])
        expect(again.payments[0]).toMatchObject({ key: q, attempts: 1, payment: payment('q') })
        await one.closeBatch(again.batch.id, [{ key: q, status: 'queued' }], tick())
        expect((await open(address))!.payments[0]).toMatchObject({ key: q, attempts: 2 })
      })

      it('puts a payment the outcomes do not mention back in the queue, never stranded in a closed batch', async () => {
        for (const name of ['told', 'untold']) await enqueue(name)
        const address = await leased()
        const { batch } = (await open(address))!
        const [told, untold] = batch.keys as [string, string]
        await one.closeBatch(batch.id, [settled(told)], tick())
        expect(await two.get(untold)).toMatchObject({ status: 'queued' })
        expect(await one.unfinishedBatches(network, address)).toEqual([])
        expect((await open(address))!.payments).toMatchObject([{ key: untold, attempts: 1 }])
      })

      it('is idempotent: closing a batch twice changes nothing', async () => {
        for (const name of ['a', 'b']) await enqueue(name)
        const address = await leased()
        const { batch } = (await open(address))!
        const [a, b] = batch.keys as [string, string]
        const at = tick()
        await one.closeBatch(batch.id, [settled(a), { key: b, status: 'queued' }], at)
        const after = [await one.get(a), await one.get(b), await exposure(), await one.stats(network)]
        const ledgerCalls = ledger?.entries.length
        await two.closeBatch(batch.id, [failed(a), settled(b)], tick())
        await one.closeBatch(batch.id, [settled(a), { key: b, status: 'queued' }], tick())
        expect([await one.get(a), await one.get(b), await exposure(), await one.stats(network)]).toEqual(after)
        expect(ledger?.entries.length).toBe(ledgerCalls)
        expect((await open(address))!.payments[0]).toMatchObject({ key: b, attempts: 1 })
      })

      it('ignores outcomes of payments that are not in the batch', async () => {
        for (const name of ['in', 'out']) await enqueue(name)
        const address = await leased()
        const { batch } = (await open(address, 1))!
        await one.closeBatch(batch.id, [settled(batch.keys[0]!), settled(`${network}:out`)], tick())
        expect(await one.get(`${network}:out`)).toMatchObject({ status: 'queued' })
        expect(await exposure()).toBe(1_000n)
      })

      it('does not let an outcome of a payment queued without a payer touch the exposure of the payer it names', async () => {
        await enqueue('anonymous', { payer: undefined })
        await enqueue('known')
        expect(await exposure()).toBe(1_000n)
        const address = await leased()
        const { batch } = (await open(address))!
        await one.closeBatch(batch.id, [settled(`${network}:anonymous`)], tick())
        expect(await one.get(`${network}:anonymous`)).toMatchObject({ status: 'settled', payer })
        expect(await exposure()).toBe(1_000n)
      })

      it('writes the ledger inside its transaction, and rolls everything back when the ledger throws', async () => {
        if (!ledger) return
        for (const name of ['a', 'b', 'c']) await enqueue(name)
        const address = await leased()
        const { batch } = (await open(address))!
        const [a, b, c] = batch.keys as [string, string, string]
        const outcomes: PaymentOutcome[] = [settled(a), failed(b), { key: c, status: 'queued' }]
        ledger.fail = true
        const calls = ledger.entries.length
        await expect(one.closeBatch(batch.id, outcomes, tick())).rejects.toThrow('ledger down')
        ledger.fail = false
        for (const key of [a, b, c]) expect(await one.get(key)).toMatchObject({ status: 'submitted' })
        expect(await exposure()).toBe(3_000n)
        expect(await one.unfinishedBatches(network, address)).toHaveLength(1)

        const at = tick()
        await one.closeBatch(batch.id, outcomes, at)
        expect(ledger.entries.length).toBe(calls + 2)
        expect(ledger.statuses.at(-1)).toEqual(['settled'])
        expect(ledger.entries.at(-1)).toEqual([
          {
            key: a,
            network,
            asset,
            payTo,
            payer,
            amount: 1_000n,
            gasUsed: 45_000n,
            gasCost: 45_000n * 1_000_000_000n,
            transaction: settled(a).result.transaction,
            settledAt: new Date(at),
          },
        ])
        // A batch with nothing settled does not call the ledger.
        const requeued = (await open(address))!
        await one.closeBatch(requeued.batch.id, [failed(c)], tick())
        expect(ledger.entries.length).toBe(calls + 2)
      })
    })

    describe('unfinishedBatches and stats', () => {
      it('returns each open batch of a signer with its payments and transactions, oldest first', async () => {
        for (const name of ['a', 'b', 'c', 'd']) await enqueue(name)
        const address = await leased()
        const other = await leased()
        const first = (await open(address, 2))!
        const second = (await open(address, 1))!
        const others = (await open(other, 1))!
        const transaction = { hash: `0x${'03'.repeat(32)}`, raw: '0x02fa', nonce: 1 }
        await one.addTransaction(first.batch.id, transaction)
        const unfinished = await two.unfinishedBatches(network, address.toUpperCase().replace('0X', '0x'))
        expect(unfinished.map((open) => open.batch.id)).toEqual([first.batch.id, second.batch.id])
        expect(unfinished[0]).toEqual({
          batch: { ...first.batch, transactions: [transaction] },
          payments: expect.arrayContaining(first.payments),
        })
        expect(unfinished[0]!.payments).toHaveLength(2)
        expect(unfinished[1]).toEqual({ batch: second.batch, payments: second.payments })
        expect(await two.unfinishedBatches(network, other)).toEqual([{ batch: others.batch, payments: others.payments }])
        expect(await two.unfinishedBatches(`${network}0`, address)).toEqual([])
        await one.closeBatch(first.batch.id, [settled(first.batch.keys[0]!), { key: first.batch.keys[1]!, status: 'queued' }], tick())
        expect((await two.unfinishedBatches(network, address)).map((open) => open.batch.id)).toEqual([second.batch.id])
      })

      it('counts queued payments of a network and tells when the oldest was queued', async () => {
        expect(await one.stats(network)).toEqual({ depth: 0, oldestQueuedAt: undefined })
        const first = record('a')
        await one.enqueue(first, payment('a'))
        await enqueue('b')
        await enqueue('c')
        expect(await two.stats(network)).toEqual({ depth: 3, oldestQueuedAt: first.updatedAt })
        const address = await leased()
        await open(address, 1)
        expect(await two.stats(network)).toEqual({ depth: 2, oldestQueuedAt: first.updatedAt + 1_000 })
        expect(await two.stats(`${network}0`)).toEqual({ depth: 0, oldestQueuedAt: undefined })
      })
    })
  })
