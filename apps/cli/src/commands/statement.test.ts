import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type LedgerEntry, migrate, openDatabase, recordLedger } from '@x402kit/facilitator'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BaseError } from 'x402kit'
import { facilitatorStatement } from './statement.ts'

const merchant = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
const usdc = '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913'
const unknownToken = '0x00000000000000000000000000000000000000aB'

const entry = (key: string, at: string, amount: bigint, fee: bigint, overrides: Partial<LedgerEntry> = {}): LedgerEntry => ({
  key,
  merchant,
  payer: '0x857b06519E91e3A54538791bDbb0E22373e36b66',
  network: 'eip155:8453',
  asset: usdc,
  amount,
  fee,
  gasUsed: 40_000n,
  gasCost: 40_000n * 1_500_000_000n,
  transaction: `0x${key}`,
  settledAt: new Date(at),
  ...overrides,
})

describe('x402 facilitator statement', () => {
  let dir: string
  let env: Record<string, string>

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'x402-cli-statement-'))
    env = { X402_DATA_DIR: dir }
    const db = await openDatabase({ dataDir: dir })
    await migrate(db)
    await recordLedger(db, [
      entry('a', '2025-01-31T23:59:59.999Z', 1_500_000n, 15_000n),
      entry('b', '2025-02-01T00:00:00.000Z', 2_000_001n, 20_000n),
      entry('c', '2025-02-03T10:00:00.000Z', 250n, 3n, { asset: unknownToken }),
    ])
    // PGlite allows one process a folder: the command opens it after this closes.
    await db.close()
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  const run = async (options: Omit<Parameters<typeof facilitatorStatement>[0], 'env' | 'out'>) => {
    const lines: string[] = []
    const code = await facilitatorStatement({ ...options, env, out: (line) => lines.push(line) })
    return { code, text: lines.join('\n') }
  }

  it('prints a table per UTC month in token units, with totals per network and asset', async () => {
    const { code, text } = await run({ merchant: merchant.toLowerCase() })
    expect(code).toBe(0)
    expect(text).toMatchInlineSnapshot(`
      "Statement of 0x209693bc6afc0c5328ba36faf03c514ef312287c, from the start to now, per UTC month
      period   network      asset        payments    volume      fees       net  gas used              gas cost
      2025-01  eip155:8453  USDC                1  1.500000  0.015000  1.485000     40000  0.000060000000000000
      2025-02  eip155:8453  0x0000…00aB         1       250         3       247     40000  0.000060000000000000
      2025-02  eip155:8453  USDC                1  2.000001  0.020000  1.980001     40000  0.000060000000000000
      -------  -----------  -----------  --------  --------  --------  --------  --------  --------------------
      total    eip155:8453  0x0000…00aB         1       250         3       247     40000  0.000060000000000000
      total    eip155:8453  USDC                2  3.500001  0.035000  3.465001     80000  0.000120000000000000
      Amounts of assets not in the network table are in atomic units.
      Gas cost is in the network’s native coin (18 decimals)."
    `)
  })

  it('cuts UTC days between from (inclusive) and to (exclusive)', async () => {
    const { text } = await run({ merchant, from: '2025-02-01', to: '2025-02-02', period: 'day' })
    expect(text.split('\n').slice(0, 3)).toEqual([
      `Statement of ${merchant.toLowerCase()}, from 2025-02-01T00:00:00.000Z to 2025-02-02T00:00:00.000Z (exclusive), per UTC day`,
      'period      network      asset  payments    volume      fees       net  gas used              gas cost',
      '2025-02-01  eip155:8453  USDC          1  2.000001  0.020000  1.980001     40000  0.000060000000000000',
    ])
    expect((await run({ merchant, from: '2026-01-01' })).text.split('\n')[1]).toBe('No settled payments.')
  })

  it('prints JSON as the HTTP endpoint answers it', async () => {
    const { code, text } = await run({ merchant, period: 'all', to: '2025-02-01', json: true })
    expect(code).toBe(0)
    expect(JSON.parse(text)).toEqual({
      merchant: merchant.toLowerCase(),
      from: null,
      to: '2025-02-01T00:00:00.000Z',
      period: 'all',
      rows: [
        {
          period: '2025-01-31T23:59:59.999Z',
          network: 'eip155:8453',
          asset: usdc,
          payments: 1,
          volume: '1500000',
          fees: '15000',
          net: '1485000',
          gasUsed: '40000',
          gasCost: '60000000000000',
        },
      ],
      totals: [
        {
          network: 'eip155:8453',
          asset: usdc,
          payments: 1,
          volume: '1500000',
          fees: '15000',
          net: '1485000',
          gasUsed: '40000',
          gasCost: '60000000000000',
        },
      ],
    })
  })

  it('says what is wrong with a bad address, date or period, before opening the database', async () => {
    const failure = async (options: Parameters<typeof run>[0]) => {
      const error = await run(options).then(
        () => undefined,
        (error: unknown) => error,
      )
      expect(error).toBeInstanceOf(BaseError)
      return (error as BaseError).message
    }
    expect(await failure({ merchant: '0x1234' })).toBe('Invalid merchant "0x1234".\nHint: Give the payTo address: 0x and 40 hex digits.')
    expect(await failure({ merchant, from: '2025-02-30' })).toMatch(/^Invalid from date "2025-02-30"\.\nHint: Use YYYY-MM-DD/)
    expect(await failure({ merchant, to: 'tomorrow' })).toMatch(/^Invalid to date "tomorrow"/)
    expect(await failure({ merchant, from: '2025-03-01', to: '2025-02-01' })).toMatch(/ends before it starts/)
    expect(await failure({ merchant, period: 'week' })).toMatch(/^Invalid period "week"/)
  })
})
