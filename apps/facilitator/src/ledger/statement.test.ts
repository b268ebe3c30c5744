import { randomBytes, randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Database } from '../store/database.ts'
import { testDatabases } from '../store/databases.testing.ts'
import { migrate } from '../store/sql.ts'
import { type LedgerEntry, recordLedger } from './ledger.ts'
import { StatementParameterError, statement, statementHandler, statementOptions, statementTotals } from './statement.ts'

const base = 'eip155:8453'
const polygon = 'eip155:137'
const usdc = '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913'
const other = '0x0000000000000000000000000000000000000abc'

describe('statementOptions', () => {
  const merchant = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'

  it('reads dates as UTC days or ISO date-times, the merchant in lower case, month by default', () => {
    expect(statementOptions({ merchant, from: '2025-01-31', to: '2025-02-01T09:30:00+02:00' })).toEqual({
      merchant: merchant.toLowerCase(),
      from: new Date('2025-01-31T00:00:00.000Z'),
      to: new Date('2025-02-01T07:30:00.000Z'),
      period: 'month',
    })
    expect(statementOptions({ merchant, period: 'all' })).toEqual({
      merchant: merchant.toLowerCase(),
      from: undefined,
      to: undefined,
      period: 'all',
    })
  })

  it('names the parameter it cannot use', () => {
    const parameter = (input: Parameters<typeof statementOptions>[0]) => {
      try {
        statementOptions(input)
      } catch (error) {
        expect(error).toBeInstanceOf(StatementParameterError)
        return [(error as StatementParameterError).parameter, (error as StatementParameterError).shortMessage]
      }
      throw new Error('expected a StatementParameterError')
    }
    expect(parameter({ merchant: '0x12' })).toEqual(['merchant', 'Invalid merchant "0x12".'])
    expect(parameter({})).toEqual(['merchant', 'Invalid merchant "".'])
    expect(parameter({ merchant, from: '2025-02-30' })).toEqual(['from', 'Invalid from date "2025-02-30".'])
    expect(parameter({ merchant, from: '31/01/2025' })).toEqual(['from', 'Invalid from date "31/01/2025".'])
    expect(parameter({ merchant, to: '2025-01-31T12:00:00' })).toEqual(['to', 'Invalid to date "2025-01-31T12:00:00".'])
    expect(parameter({ merchant, from: '2025-02-01', to: '2025-02-01' })).toEqual(['to', 'The statement ends before it starts.'])
    expect(parameter({ merchant, period: 'week' })).toEqual(['period', 'Invalid period "week".'])
  })
})

// PostgreSQL joins when DATABASE_URL names one; PGlite always runs.
for (const backend of testDatabases)
  describe(`statements on ${backend.name}`, () => {
    let db: Database
    let close: () => Promise<unknown>
    // A merchant unique to this run, so a shared PostgreSQL can hold earlier runs' rows.
    const run = randomUUID()
    const merchant = `0x${randomBytes(20).toString('hex')}`
    const mixedCase = `0x${merchant.slice(2).toUpperCase()}`
    const entry = (name: string, at: string, amount: bigint, overrides: Partial<LedgerEntry> = {}): LedgerEntry => ({
      key: `${run}:${name}`,
      merchant,
      payer: '0xpayer',
      network: base,
      asset: usdc,
      amount,
      fee: amount / 100n,
      gasUsed: 30_000n,
      gasCost: 30_000n * 1_000_000_000n,
      transaction: `0x${name}`,
      settledAt: new Date(at),
      ...overrides,
    })
    const row = (period: string, payments: number, volume: bigint, overrides: Record<string, unknown> = {}) => ({
      period,
      network: base,
      asset: usdc,
      payments,
      volume: String(volume),
      fees: String(volume / 100n),
      net: String(volume - volume / 100n),
      gasUsed: String(30_000 * payments),
      gasCost: String(30_000n * 1_000_000_000n * BigInt(payments)),
      ...overrides,
    })

    beforeAll(async () => {
      ;({ db, close } = await backend.open())
      await migrate(db)
      await recordLedger(db, [
        entry('jan-last', '2025-01-31T23:59:59.999Z', 1_000_000n, { merchant: mixedCase }),
        entry('feb-first', '2025-02-01T00:00:00.000Z', 2_500_000n),
        entry('feb-first-noon', '2025-02-01T12:00:00.000Z', 500n),
        entry('feb-first-other', '2025-02-01T13:00:00.000Z', 7_000n, { asset: other }),
        entry('feb-polygon', '2025-02-15T08:00:00.000Z', 300n, { network: polygon }),
        entry('mar-first', '2025-03-01T00:00:00.000Z', 9_900n),
        // Another merchant's payment, inside every range.
        entry('someone-else', '2025-02-01T06:00:00.000Z', 123n, { merchant: `0x${randomBytes(20).toString('hex')}` }),
      ])
    })
    afterAll(() => close())

    it('groups by UTC day, network and asset, a payment at 23:59:59.999 in its own day', async () => {
      expect(await statement(db, { merchant, period: 'day' })).toEqual([
        row('2025-01-31T00:00:00.000Z', 1, 1_000_000n),
        row('2025-02-01T00:00:00.000Z', 1, 7_000n, { asset: other }),
        row('2025-02-01T00:00:00.000Z', 2, 2_500_500n, { fees: '25005', net: String(2_500_500n - 25_005n) }),
        row('2025-02-15T00:00:00.000Z', 1, 300n, { network: polygon }),
        row('2025-03-01T00:00:00.000Z', 1, 9_900n),
      ])
    })

    it('groups by UTC month, whatever the session’s time zone', async () => {
      const expected = [
        row('2025-01-01T00:00:00.000Z', 1, 1_000_000n),
        row('2025-02-01T00:00:00.000Z', 1, 300n, { network: polygon }),
        row('2025-02-01T00:00:00.000Z', 1, 7_000n, { asset: other }),
        row('2025-02-01T00:00:00.000Z', 2, 2_500_500n, { fees: '25005', net: String(2_500_500n - 25_005n) }),
        row('2025-03-01T00:00:00.000Z', 1, 9_900n),
      ]
      expect(await statement(db, { merchant, period: 'month' })).toEqual(expected)
      // PGlite is one session: a time zone set here is the one the statement runs in.
      if (db.kind === 'pglite') {
        await db.query(`SET TIME ZONE 'Pacific/Kiritimati'`)
        try {
          expect(await statement(db, { merchant, period: 'month' })).toEqual(expected)
        } finally {
          await db.query(`SET TIME ZONE 'UTC'`)
        }
      }
    })

    it('counts from inclusive and to exclusive, the merchant in any case', async () => {
      const february = await statement(db, {
        merchant: mixedCase,
        from: new Date('2025-02-01T00:00:00.000Z'),
        to: new Date('2025-03-01T00:00:00.000Z'),
        period: 'all',
      })
      expect(february).toEqual([
        row('2025-02-01T00:00:00.000Z', 1, 300n, { network: polygon }),
        row('2025-02-01T00:00:00.000Z', 1, 7_000n, { asset: other }),
        row('2025-02-01T00:00:00.000Z', 2, 2_500_500n, { fees: '25005', net: String(2_500_500n - 25_005n) }),
      ])
      const justBefore = await statement(db, { merchant, to: new Date('2025-02-01T00:00:00.000Z'), period: 'all' })
      expect(justBefore).toEqual([row('2025-01-31T23:59:59.999Z', 1, 1_000_000n)])
      expect(await statement(db, { merchant, from: new Date('2025-03-01T00:00:00.001Z'), period: 'day' })).toEqual([])
      expect(await statement(db, { merchant: `0x${'0'.repeat(40)}`, period: 'all' })).toEqual([])
    })

    it('totals per network and asset, never adding different tokens', async () => {
      const rows = await statement(db, { merchant, period: 'day' })
      const total = (payments: number, volume: bigint, overrides: Record<string, unknown> = {}) => {
        const { period: _, ...rest } = row('', payments, volume, overrides)
        return rest
      }
      expect(statementTotals(rows)).toEqual([
        total(1, 300n, { network: polygon }),
        total(1, 7_000n, { asset: other }),
        total(4, 3_510_400n, { fees: '35104', net: String(3_510_400n - 35_104n) }),
      ])
    })

    describe('over HTTP', () => {
      const get = (path: string, options: Parameters<typeof statementHandler>[1] = {}, init?: RequestInit) =>
        statementHandler(db, options)(new Request(`http://facilitator.test${path}`, init))
      const problem = async (response: Response) => {
        expect(response.headers.get('content-type')).toBe('application/problem+json')
        return response.json()
      }

      it('answers the statement as JSON, with rows and totals', async () => {
        const response = await get(`/statements/${mixedCase}?period=month&from=2025-02-01&to=2025-03-01`)
        expect(response.status).toBe(200)
        const body = await response.json()
        expect(body).toEqual({
          merchant,
          from: '2025-02-01T00:00:00.000Z',
          to: '2025-03-01T00:00:00.000Z',
          period: 'month',
          rows: await statement(db, { merchant, from: new Date('2025-02-01'), to: new Date('2025-03-01'), period: 'month' }),
          totals: expect.any(Array),
        })
        expect(body.rows).toHaveLength(3)
        expect(body.totals).toHaveLength(3)
        expect((await (await get(`/statements/${merchant}`)).json()).period).toBe('month')
      })

      it('answers 400 problem details naming a bad parameter', async () => {
        const cases: [string, string][] = [
          ['/statements/0x12', 'merchant'],
          [`/statements/${merchant}?from=2025-13-01`, 'from'],
          [`/statements/${merchant}?to=yesterday`, 'to'],
          [`/statements/${merchant}?from=2025-02-01&to=2025-01-01`, 'to'],
          [`/statements/${merchant}?period=year`, 'period'],
          [`/statements/${merchant}?period=day&period=month`, 'period'],
          [`/statements/${merchant}?merchant=0x1`, 'merchant'],
        ]
        for (const [path, parameter] of cases) {
          const response = await get(path)
          expect(response.status, path).toBe(400)
          expect(await problem(response)).toEqual({
            type: 'about:blank',
            title: 'Bad Request',
            status: 400,
            detail: expect.stringContaining(parameter === 'merchant' && path.includes('?') ? '"merchant"' : ''),
            code: 'invalid_statement_parameter',
            parameter,
          })
        }
        expect(await problem(await get(`/statements/${merchant}?period=year`))).toMatchObject({
          detail: 'Invalid period "year". Use day, month or all.',
        })
        expect((await get('/statement')).status).toBe(404)
        const post = await get(`/statements/${merchant}`, {}, { method: 'POST' })
        expect(post.status).toBe(405)
        expect(post.headers.get('allow')).toBe('GET, HEAD')
      })

      it('asks authorize with the merchant in lower case, and answers its refusal', async () => {
        const asked: string[] = []
        const authorize = (request: Request, wanted: string) => {
          asked.push(wanted)
          return request.headers.get('authorization') === 'Bearer good' ? undefined : new Response('no', { status: 401 })
        }
        const refused = await get(`/statements/${mixedCase}?period=nonsense`, { authorize })
        expect(refused.status).toBe(401)
        expect(await refused.text()).toBe('no')
        const allowed = await get(`/statements/${mixedCase}`, { authorize }, { headers: { authorization: 'Bearer good' } })
        expect(allowed.status).toBe(200)
        expect(asked).toEqual([merchant, merchant])
        const forbidden = await get(`/statements/${merchant}`, { authorize: async () => new Response(null, { status: 403 }) })
        expect(forbidden.status).toBe(403)
      })

      it('answers 503 when the database does not', async () => {
        const broken = { query: async () => Promise.reject(new Error('connection refused')) }
        const response = await statementHandler(broken)(new Request(`http://facilitator.test/statements/${merchant}`))
        expect(response.status).toBe(503)
        expect(await problem(response)).toMatchObject({ code: 'database_unavailable', title: 'Service Unavailable' })
      })
    })
  })
