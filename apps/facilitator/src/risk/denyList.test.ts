import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { Reason } from 'x402kit'
import type { Database } from '../store/database.ts'
import { testDatabases } from '../store/databases.testing.ts'
import { migrate } from '../store/sql.ts'
import { addDenied, loadDenied, parseDenyList, removeDenied } from './denyList.ts'
import { createRiskScreen } from './screen.ts'

describe('parseDenyList', () => {
  it('reads lines with comments, and JSON arrays, in lower case', () => {
    const a = '0x857b06519E91e3A54538791bDbb0E22373e36b66'
    const b = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
    expect(parseDenyList(`# list\r\n${a} # one\n\n  ${b}\n`)).toEqual(new Set([a.toLowerCase(), b.toLowerCase()]))
    expect(parseDenyList(JSON.stringify([a, b]))).toEqual(new Set([a.toLowerCase(), b.toLowerCase()]))
    expect(parseDenyList('')).toEqual(new Set())
  })

  it('throws on anything but addresses, naming the entry', () => {
    expect(() => parseDenyList('0x857b06519E91e3A54538791bDbb0E22373e36b66\nnope\n')).toThrow("The deny list's entry 2 is not an address.")
    expect(() => parseDenyList('[1]')).toThrow("The deny list's entry 1 is not an address.")
    expect(() => parseDenyList('["0x857b06519E91e3A54538791bDbb0E22373e36b66"')).toThrow('not a JSON array')
  })
})

// PostgreSQL joins when DATABASE_URL names one (CI starts one); PGlite always runs.
for (const backend of testDatabases)
  describe(`deny_list on ${backend.name}`, () => {
    let db: Database
    let close: () => Promise<unknown>
    // Addresses unique to this run, so a shared PostgreSQL can hold earlier runs' rows.
    const run = Math.floor(Math.random() * 2 ** 32)
      .toString(16)
      .padStart(8, '0')
    const address = (n: number) => `0x${run}${n.toString(16).padStart(32, '0')}`.replace(/a/g, 'A')
    const payment = (payer: string) => ({
      payer,
      payTo: address(999),
      asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913',
      network: 'eip155:8453',
      amount: 1n,
    })

    beforeAll(async () => {
      ;({ db, close } = await backend.open())
      await migrate(db)
    })
    afterAll(() => close())

    it('adds, updates and removes addresses in lower case', async () => {
      await addDenied(db, address(1), 'stolen funds')
      await addDenied(db, address(1).toLowerCase(), 'stolen funds, ticket 7')
      const { rows } = await db.query('SELECT address, reason, created_at FROM deny_list WHERE address = $1', [address(1).toLowerCase()])
      expect(rows).toEqual([{ address: address(1).toLowerCase(), reason: 'stolen funds, ticket 7', created_at: expect.any(Date) }])
      expect((await loadDenied(db)).has(address(1).toLowerCase())).toBe(true)
      expect(await removeDenied(db, address(1).toUpperCase().replace('0X', '0x'))).toBe(true)
      expect(await removeDenied(db, address(1))).toBe(false)
      await expect(addDenied(db, '0x12', undefined)).rejects.toMatchObject({ code: 'invalid_deny_list' })
    })

    it('refuses a payer listed in the table, and takes up changes at the next reload', async () => {
      await addDenied(db, address(2), 'fraud')
      const risk = createRiskScreen({ database: db, denyListReloadMs: 20 })
      expect((await risk.screen(payment(address(2))))?.reason).toBe(Reason.payerDenied)
      expect(await risk.screen(payment(address(3)))).toBeUndefined()

      await addDenied(db, address(999))
      await vi.waitFor(async () => expect((await risk.screen(payment(address(3))))?.reason).toBe(Reason.payToDenied), {
        timeout: 5_000,
        interval: 20,
      })
      await removeDenied(db, address(2))
      await removeDenied(db, address(999))
      await vi.waitFor(async () => expect(await risk.screen(payment(address(2)))).toBeUndefined(), { timeout: 5_000, interval: 20 })
      risk.close()
    })

    it('keeps the last good list when the table cannot be read, and throws when none was ever read', async () => {
      await addDenied(db, address(4))
      let broken = false
      const flaky = {
        query: (sql: string, params?: unknown[]) => (broken ? Promise.reject(new Error('connection lost')) : db.query(sql, params)),
      }
      const onError = vi.fn()
      const risk = createRiskScreen({ database: flaky, denyListReloadMs: 20, onError })
      expect((await risk.screen(payment(address(4))))?.reason).toBe(Reason.payerDenied)
      broken = true
      await vi.waitFor(() => expect(onError).toHaveBeenCalled(), { timeout: 5_000, interval: 20 })
      expect(onError.mock.calls[0]![0]).toMatchObject({ code: 'deny_list_unavailable' })
      expect((await risk.screen(payment(address(4))))?.reason).toBe(Reason.payerDenied)
      risk.close()

      const never = createRiskScreen({ database: flaky, denyListReloadMs: 60_000 })
      await expect(never.screen(payment(address(5)))).rejects.toMatchObject({ code: 'deny_list_unavailable' })
      broken = false
      expect((await never.screen(payment(address(4))))?.reason).toBe(Reason.payerDenied)
      never.close()
      await removeDenied(db, address(4))
    })
  })
