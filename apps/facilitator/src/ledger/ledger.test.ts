import { randomBytes, randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Database } from '../store/database.ts'
import { testDatabases } from '../store/databases.testing.ts'
import { migrate } from '../store/sql.ts'
import { feesSchema } from './fees.ts'
import { type LedgerEntry, LedgerError, ledgerEntries, recordLedger } from './ledger.ts'

describe('ledgerEntries', () => {
  it('charges each settled payment its merchant’s fee and keeps its share of the gas', () => {
    const special = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
    const fees = feesSchema.parse({ default: { bps: 100 }, merchants: { [special]: { fixed: '7' } } })
    const settledAt = new Date('2025-01-31T12:00:00Z')
    const common = { network: 'eip155:8453', asset: '0xusdc', transaction: '0xtx', settledAt }
    const entries = ledgerEntries(
      [
        { ...common, key: 'a', payTo: special, payer: '0xpayer', amount: 1_000n, gasUsed: 33_334n, gasCost: 100_002n },
        { ...common, key: 'b', payTo: `0x${'A'.repeat(40)}`, payer: undefined, amount: 1_000n, gasUsed: 33_333n, gasCost: 99_999n },
        { ...common, key: 'c', payTo: `0x${'a'.repeat(40)}`, payer: undefined, amount: 50n, gasUsed: 33_333n, gasCost: 99_999n },
      ],
      fees,
    )
    expect(entries.map(({ key, merchant, fee, gasUsed, gasCost }) => ({ key, merchant, fee, gasUsed, gasCost }))).toEqual([
      { key: 'a', merchant: special.toLowerCase(), fee: 7n, gasUsed: 33_334n, gasCost: 100_002n },
      { key: 'b', merchant: `0x${'a'.repeat(40)}`, fee: 10n, gasUsed: 33_333n, gasCost: 99_999n },
      { key: 'c', merchant: `0x${'a'.repeat(40)}`, fee: 1n, gasUsed: 33_333n, gasCost: 99_999n },
    ])
    expect(entries[0]).toMatchObject({ payer: '0xpayer', network: 'eip155:8453', transaction: '0xtx', settledAt, amount: 1_000n })
    expect(ledgerEntries([], fees)).toEqual([])
  })
})

// PostgreSQL joins when DATABASE_URL names one; PGlite always runs.
for (const backend of testDatabases)
  describe(`recordLedger on ${backend.name}`, () => {
    let db: Database
    let close: () => Promise<unknown>
    // Keys and merchant unique to this run, so a shared PostgreSQL can hold earlier runs' rows.
    const run = randomUUID()
    const merchant = `0x${randomBytes(20).toString('hex').toUpperCase()}`
    const entry = (name: string, overrides: Partial<LedgerEntry> = {}): LedgerEntry => ({
      key: `${run}:${name}`,
      merchant,
      payer: '0x857b06519E91e3A54538791bDbb0E22373e36b66',
      network: 'eip155:8453',
      asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913',
      amount: 2n ** 256n - 1n,
      fee: 10n ** 70n,
      gasUsed: 61_234n,
      gasCost: 61_234n * 1_000_000_007n,
      transaction: `0x${'ab'.repeat(32)}`,
      settledAt: new Date('2025-01-31T23:59:59.999Z'),
      ...overrides,
    })
    const read = async () =>
      (
        await db.query(
          `SELECT key, merchant, payer, network, asset, amount::text AS amount, fee::text AS fee, gas_used::text AS gas_used,
             gas_cost::text AS gas_cost, "transaction", settled_at FROM ledger WHERE merchant = $1 ORDER BY key`,
          [merchant.toLowerCase()],
        )
      ).rows

    beforeAll(async () => {
      ;({ db, close } = await backend.open())
      await migrate(db)
    })
    afterAll(() => close())

    it('creates the ledger table and its index by merchant and time', async () => {
      const { rows } = await db.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'ledger' ORDER BY indexname`)
      expect(rows.map((row) => row.indexname)).toEqual(['ledger_merchant_settled_at', 'ledger_pkey'])
    })

    it('records every field exactly, the merchant in lower case, in one statement', async () => {
      expect(await recordLedger(db, [entry('a'), entry('b', { payer: undefined, amount: 0n, fee: 0n })])).toBe(2)
      expect(await read()).toEqual([
        {
          key: `${run}:a`,
          merchant: merchant.toLowerCase(),
          payer: '0x857b06519E91e3A54538791bDbb0E22373e36b66',
          network: 'eip155:8453',
          asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913',
          amount: String(2n ** 256n - 1n),
          fee: String(10n ** 70n),
          gas_used: '61234',
          gas_cost: String(61_234n * 1_000_000_007n),
          transaction: `0x${'ab'.repeat(32)}`,
          settled_at: new Date('2025-01-31T23:59:59.999Z'),
        },
        expect.objectContaining({ key: `${run}:b`, payer: null, amount: '0', fee: '0' }),
      ])
      expect(await recordLedger(db, [])).toBe(0)
    })

    it('never counts a settlement twice, however often or concurrently it is recorded', async () => {
      const before = await read()
      expect(await recordLedger(db, [entry('a', { amount: 1n }), entry('c')])).toBe(1)
      const results = await Promise.all(Array.from({ length: 8 }, () => recordLedger(db, [entry('d'), entry('c')])))
      expect(results.reduce((sum, n) => sum + n, 0)).toBe(1)
      const after = await read()
      expect(after).toHaveLength(4)
      expect(after[0]).toEqual(before[0])
    })

    it('records large batches in several statements', async () => {
      const many = Array.from({ length: 1_200 }, (_, i) => entry(`many:${i}`, { amount: BigInt(i) }))
      expect(await recordLedger(db, many)).toBe(1_200)
      expect(await recordLedger(db, many)).toBe(0)
      const { rows } = await db.query(`SELECT sum(amount)::text AS total FROM ledger WHERE key LIKE $1`, [`${run}:many:%`])
      expect(rows[0]?.total).toBe(String((1_199 * 1_200) / 2))
    })

    it('refuses entries it cannot record', async () => {
      await expect(recordLedger(db, [entry('neg', { fee: -1n })])).rejects.toThrow(LedgerError)
      await expect(recordLedger(db, [entry('date', { settledAt: new Date(Number.NaN) })])).rejects.toThrow(/settledAt/)
    })
  })
