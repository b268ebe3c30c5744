import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Payment, SchemeFacilitator } from 'x402kit'
import { createFacilitator, type SettlementRecord } from 'x402kit/facilitator'
import { type Database, openDatabase } from './database.ts'
import { migrate, migrations, sqlStore } from './sql.ts'

/** Each backend opens one database twice, as two facilitator instances would. */
const backends = [
  {
    name: 'PGlite',
    enabled: true,
    async open() {
      const dir = await mkdtemp(join(tmpdir(), 'x402-store-'))
      const db = await openDatabase({ dataDir: dir })
      // PGlite is one process's database: a second instance shares the handle, not the folder.
      const close = async () => {
        await db.close()
        await rm(dir, { recursive: true, force: true })
      }
      return { one: db, two: db, close }
    },
  },
  {
    name: 'PostgreSQL',
    enabled: Boolean(process.env.DATABASE_URL),
    async open() {
      const one = await openDatabase({ databaseUrl: process.env.DATABASE_URL })
      const two = await openDatabase({ databaseUrl: process.env.DATABASE_URL })
      return { one, two, close: () => Promise.all([one.close(), two.close()]) }
    },
  },
]

// PostgreSQL joins when DATABASE_URL names one (CI starts one); PGlite always runs.
for (const backend of backends.filter((b) => b.enabled))
  describe(`sqlStore on ${backend.name}`, () => {
    let one: Database
    let two: Database
    let close: () => Promise<unknown>
    // Keys unique to this run, so a shared PostgreSQL can hold earlier runs' rows.
    const run = randomUUID()
    const key = (name: string) => `${run}:${name}`
    const record = (name: string, overrides: Partial<SettlementRecord> = {}): SettlementRecord => ({
      key: key(name),
      network: 'eip155:8453',
      scheme: 'exact',
      payer: '0x857b06519E91e3A54538791bDbb0E22373e36b66',
      amount: '115792089237316195423570985008687907853269984665640564039457584007913129639935',
      asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913',
      payTo: '0x209693Bc6afc0C5328bA36FaF03C514EF312287C',
      status: 'verified',
      createdAt: 1_700_000_000_123,
      updatedAt: 1_700_000_000_123,
      ...overrides,
    })

    beforeAll(async () => {
      ;({ one, two, close } = await backend.open())
      await Promise.all([migrate(one), migrate(two)])
    })
    afterAll(() => close())

    it('migrates once, however often and from however many instances it runs', async () => {
      await Promise.all([migrate(one), migrate(two), migrate(one)])
      const { rows } = await one.query('SELECT version FROM migrations ORDER BY version')
      expect(rows.map((row) => row.version)).toEqual(migrations.map((migration) => migration.version))
      const { rows: indexes } = await one.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'payments' ORDER BY indexname`)
      expect(indexes.map((row) => row.indexname)).toEqual(['payments_batch', 'payments_pkey', 'payments_queued', 'payments_status'])
    })

    it('reserves a key once and answers the holder, with every field as written', async () => {
      const store = sqlStore(one)
      expect(await store.reserve(key('a'), record('a'))).toBeUndefined()
      expect(await store.reserve(key('a'), record('a', { payer: '0xother', status: 'settling' }))).toEqual(
        expect.objectContaining(record('a')),
      )
      expect(await sqlStore(two).get(key('a'))).toEqual({
        ...record('a'),
        transaction: undefined,
        errorReason: undefined,
        result: undefined,
      })
      expect(await store.get(key('missing'))).toBeUndefined()
    })

    it('lets exactly one of concurrent reservations from two instances win', async () => {
      const stores = [sqlStore(one), sqlStore(two)]
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => stores[i % 2]!.reserve(key('race'), record('race'))))
      expect(results.filter((result) => result === undefined)).toHaveLength(1)
      expect(results.filter((result) => result?.key === key('race'))).toHaveLength(19)
    })

    it('reserves and reads concurrent calls together, each key won once, with every field as written', async () => {
      const stores = [sqlStore(one), sqlStore(two)]
      const names = Array.from({ length: 40 }, (_, i) => `group-${i}`)
      const written = (name: string, i: number) =>
        record(name, {
          createdAt: 1_700_000_000_000 + i,
          updatedAt: 1_700_000_000_500 + i,
          payloadHash: `hash-${i}`,
          result: { success: true } as never,
        })
      // Each key three times, across both instances, all at once.
      const calls = names.flatMap((name, i) =>
        [0, 1, 2].map((n) => ({ name, i, run: () => stores[n % 2]!.reserve(key(name), written(name, i)) })),
      )
      const results = await Promise.all(calls.map((call) => call.run()))
      for (const name of names) {
        const answers = results.filter((_, index) => calls[index]!.name === name)
        expect(answers.filter((answer) => answer === undefined)).toHaveLength(1)
        for (const answer of answers) if (answer) expect(answer).toMatchObject({ key: key(name), status: 'verified' })
      }
      const read = await Promise.all([...names, 'group-missing'].map((name) => stores[1]!.get(key(name))))
      expect(read.at(-1)).toBeUndefined()
      for (const [i, name] of names.entries())
        expect(read[i]).toEqual({ ...written(name, i), transaction: undefined, errorReason: undefined })
    })

    it('updates only where the condition holds, and keeps what the patch leaves out', async () => {
      const store = sqlStore(one)
      await store.reserve(key('u'), record('u'))
      expect(await store.update(key('u'), { status: 'settling' }, { status: 'settled' })).toBeUndefined()
      expect(await store.update(key('u'), { status: 'settling' }, { status: 'verified', updatedBefore: 1_700_000_000_123 })).toBeUndefined()
      expect(
        await store.update(
          key('u'),
          { status: 'settling', updatedAt: 1_700_000_001_000 },
          { status: 'verified', updatedBefore: 1_700_000_000_124 },
        ),
      ).toMatchObject({ status: 'settling', updatedAt: 1_700_000_001_000, createdAt: 1_700_000_000_123, payer: record('u').payer })
      const result = { success: true, payer: record('u').payer, transaction: `0x${'ab'.repeat(32)}`, network: 'eip155:8453' }
      expect(
        await store.update(key('u'), { status: 'settled', transaction: result.transaction, result }, { status: 'settling' }),
      ).toMatchObject({ status: 'settled', transaction: result.transaction, result, errorReason: undefined })
      expect(await store.update(key('none'), { status: 'failed' })).toBeUndefined()
    })

    it('lets exactly one of concurrent conditional updates from two instances pass', async () => {
      const stores = [sqlStore(one), sqlStore(two)]
      await stores[0]!.reserve(key('cas'), record('cas'))
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          stores[i % 2]!.update(key('cas'), { status: 'settling', updatedAt: 1_700_000_002_000 + i }, { status: 'verified' }),
        ),
      )
      expect(results.filter(Boolean)).toHaveLength(1)
    })

    it('backs a facilitator: 20 duplicate settlements across two instances settle once', async () => {
      let settled = 0
      const scheme: SchemeFacilitator = {
        scheme: 'exact',
        networks: ['eip155:8453'],
        verify: async () => ({ isValid: true, payer: '0xpayer' }),
        settle: async (payment) => {
          settled++
          await new Promise((resolve) => setTimeout(resolve, 100))
          return { success: true, transaction: `0x${settled}`, network: payment.requirements.network }
        },
        settlementKey: (payment) => `${run}:${String(payment.payload.payload.nonce)}`,
        signers: () => [],
      }
      const instances = [one, two].map((db) => createFacilitator({ schemes: [scheme], store: sqlStore(db), pendingWaitMs: 5_000 }))
      const requirements = {
        scheme: 'exact',
        network: 'eip155:8453',
        amount: '1000',
        asset: '0xasset',
        payTo: '0xpayto',
        maxTimeoutSeconds: 60,
      }
      const payment: Payment = { requirements, payload: { x402Version: 2, accepted: requirements, payload: { nonce: 'n1' } } }
      expect((await instances[0]!.verify(payment)).isValid).toBe(true)
      expect((await instances[1]!.verify(payment)).isValid).toBe(false)
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => instances[i % 2]!.settle(payment)))
      expect(settled).toBe(1)
      expect(results.every((result) => result.success && result.transaction === '0x1')).toBe(true)
      expect(await sqlStore(one).get(`${run}:n1`)).toMatchObject({ status: 'settled', transaction: '0x1', payer: '0xpayer' })
    })
  })
