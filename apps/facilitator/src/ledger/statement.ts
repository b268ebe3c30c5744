/**
 * A merchant's statement: settled volume, fees and gas from the ledger, per period (UTC day or month,
 * or all of it), network and asset; in code, and over HTTP as `GET /statements/:merchant?from=&to=&period=`
 * with RFC 9457 problem details naming a bad parameter. Money is in atomic units as decimal strings, never floats.
 */
import { BaseError } from 'x402kit'
import type { Queryable } from '../store/sql.ts'

export const periods = ['day', 'month', 'all'] as const
export type Period = (typeof periods)[number]

export type StatementOptions = {
  /** The payTo address, in any case. */
  merchant: string
  /** Inclusive. */
  from?: Date | undefined
  /** Exclusive. */
  to?: Date | undefined
  period: Period
}

export type StatementTotal = {
  network: string
  asset: string
  payments: number
  /** Settled amounts, in atomic units of `asset`. */
  volume: string
  fees: string
  /** `volume` − `fees`. */
  net: string
  gasUsed: string
  /** In wei of the network's native coin. */
  gasCost: string
}

export type StatementRow = StatementTotal & {
  /** Start of the period, ISO 8601 in UTC; for `all`, `from` or the first settlement. */
  period: string
}

/** A statement parameter that cannot be used; `parameter` names it. */
export class StatementParameterError extends BaseError {
  override name = 'StatementParameterError'
  readonly parameter: string
  constructor(parameter: string, shortMessage: string, hint: string) {
    super(shortMessage, { code: 'invalid_statement_parameter', hint })
    this.parameter = parameter
  }
}

/**
 * Checks statement parameters as given in a URL or on a command line: `merchant` an address, `from` and
 * `to` a date (`2025-01-31`, UTC midnight) or an ISO date-time with its offset, `period` day, month
 * (the default) or all.
 *
 * @example
 * ```ts
 * import { statementOptions } from '@x402kit/facilitator'
 * statementOptions({ merchant: '0x2096…287C', from: '2025-01-01', period: 'day' })
 * ```
 */
export function statementOptions(input: { merchant?: string; from?: string; to?: string; period?: string }): StatementOptions {
  const merchant = input.merchant ?? ''
  if (!/^0x[0-9a-fA-F]{40}$/.test(merchant))
    throw new StatementParameterError(
      'merchant',
      `Invalid merchant "${merchant.slice(0, 80)}".`,
      'Give the payTo address: 0x and 40 hex digits.',
    )
  const from = input.from === undefined ? undefined : date('from', input.from)
  const to = input.to === undefined ? undefined : date('to', input.to)
  if (from && to && from >= to)
    throw new StatementParameterError('to', 'The statement ends before it starts.', '`to` (exclusive) must come after `from` (inclusive).')
  const period = input.period ?? 'month'
  if (!periods.includes(period as Period))
    throw new StatementParameterError('period', `Invalid period "${period.slice(0, 80)}".`, 'Use day, month or all.')
  return { merchant: merchant.toLowerCase(), from, to, period: period as Period }
}

const datePattern = /^\d{4}-\d{2}-\d{2}$/
const dateTimePattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/

function date(parameter: string, value: string): Date {
  const parsed = new Date(datePattern.test(value) ? `${value}T00:00:00Z` : dateTimePattern.test(value) ? value : Number.NaN)
  // A date-only value must name a real day: 2025-02-30 does not round-trip.
  if (Number.isNaN(parsed.getTime()) || (datePattern.test(value) && parsed.toISOString().slice(0, 10) !== value))
    throw new StatementParameterError(
      parameter,
      `Invalid ${parameter} date "${value.slice(0, 80)}".`,
      'Use YYYY-MM-DD (UTC) or an ISO date-time with its offset, such as 2025-01-31T12:00:00Z.',
    )
  return parsed
}

/**
 * The merchant's statement rows, ordered by period, network and asset.
 *
 * @example
 * ```ts
 * import { openDatabase, statement } from '@x402kit/facilitator'
 * const db = await openDatabase({ dataDir: '.data/facilitator' })
 * const rows = await statement(db, { merchant: '0x2096…287C', from: new Date('2025-01-01'), period: 'month' })
 * ```
 */
export async function statement(db: Queryable, options: StatementOptions): Promise<StatementRow[]> {
  if (!periods.includes(options.period))
    throw new StatementParameterError('period', `Invalid period "${options.period}".`, 'Use day, month or all.')
  const params: unknown[] = [options.merchant.toLowerCase()]
  let where = 'merchant = $1'
  if (options.from) {
    params.push(options.from)
    where += ` AND settled_at >= $${params.length}`
  }
  if (options.to) {
    params.push(options.to)
    where += ` AND settled_at < $${params.length}`
  }
  // Periods are cut in UTC whatever the session's time zone; to_char keeps the driver from reading a local time.
  const bucket = options.period === 'all' ? `''` : `to_char(date_trunc('${options.period}', settled_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')`
  const { rows } = await db.query(
    `SELECT ${bucket} AS period, coalesce(network, '') AS network, coalesce(asset, '') AS asset, count(*)::int AS payments,
       coalesce(sum(amount), 0)::text AS volume, coalesce(sum(fee), 0)::text AS fees,
       coalesce(sum(coalesce(amount, 0) - coalesce(fee, 0)), 0)::text AS net,
       coalesce(sum(gas_used), 0)::text AS gas_used, coalesce(sum(gas_cost), 0)::text AS gas_cost, min(settled_at) AS first
     FROM ledger WHERE ${where} GROUP BY 1, 2, 3`,
    params,
  )
  const first = rows.reduce<number | undefined>((least, row) => {
    const time = row.first instanceof Date ? row.first.getTime() : undefined
    return time === undefined || (least !== undefined && least <= time) ? least : time
  }, undefined)
  const all = options.from?.toISOString() ?? (first === undefined ? '' : new Date(first).toISOString())
  // Ordered here, not in SQL: the database's collation may order text differently.
  return rows
    .map((row) => ({
      period: options.period === 'all' ? all : `${row.period}T00:00:00.000Z`,
      network: row.network as string,
      asset: row.asset as string,
      payments: Number(row.payments),
      volume: row.volume as string,
      fees: row.fees as string,
      net: row.net as string,
      gasUsed: row.gas_used as string,
      gasCost: row.gas_cost as string,
    }))
    .sort((a, b) => compare(a.period, b.period) || compare(a.network, b.network) || compare(a.asset, b.asset))
}

/**
 * Totals of statement rows per network and asset: amounts of different tokens, and gas paid in
 * different native coins, are never added together.
 */
export function statementTotals(rows: readonly StatementRow[]): StatementTotal[] {
  const totals = new Map<string, StatementTotal>()
  for (const row of rows) {
    const key = `${row.network}\n${row.asset}`
    const total = totals.get(key)
    if (!total) {
      const { period: _, ...rest } = row
      totals.set(key, rest)
      continue
    }
    total.payments += row.payments
    total.volume = add(total.volume, row.volume)
    total.fees = add(total.fees, row.fees)
    total.net = add(total.net, row.net)
    total.gasUsed = add(total.gasUsed, row.gasUsed)
    total.gasCost = add(total.gasCost, row.gasCost)
  }
  return [...totals.values()].sort((a, b) => compare(a.network, b.network) || compare(a.asset, b.asset))
}

const add = (a: string, b: string) => (BigInt(a) + BigInt(b)).toString()
const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

export type StatementHandlerOptions = {
  /**
   * Decides whether the request may read this merchant's statement: a Response (401, 403) refuses it,
   * `undefined` lets it through. Default: every request may.
   */
  authorize?: (request: Request, merchant: string) => Response | undefined | Promise<Response | undefined>
}

const parameters = ['from', 'to', 'period'] as const

/**
 * The statement endpoint as a Web request handler.
 *
 * @example
 * ```ts
 * import { openDatabase, statementHandler } from '@x402kit/facilitator'
 * const db = await openDatabase({ dataDir: '.data/facilitator' })
 * const handler = statementHandler(db, {
 *   authorize: (request) => (request.headers.get('authorization') === `Bearer ${apiKey}` ? undefined : new Response(null, { status: 401 })),
 * })
 * const response = await handler(new Request('http://facilitator/statements/0x2096…287C?period=day&from=2025-01-01'))
 * ```
 */
export function statementHandler(db: Queryable, options: StatementHandlerOptions = {}): (request: Request) => Promise<Response> {
  return async (request) => {
    if (request.method !== 'GET' && request.method !== 'HEAD')
      return problem(405, 'method_not_allowed', `${request.method} is not allowed here; use GET.`, { allow: 'GET, HEAD' })
    const url = new URL(request.url)
    const match = /\/statements\/([^/]+)\/?$/.exec(url.pathname)
    if (!match) return problem(404, 'not_found', 'Statements are at /statements/<merchant address>.')
    let merchant: string
    try {
      merchant = decodeURIComponent(match[1]!)
    } catch {
      merchant = match[1]!
    }
    try {
      merchant = statementOptions({ merchant }).merchant
    } catch (error) {
      return badParameter(error)
    }
    // Asked before the other parameters are looked at, so a refused caller learns nothing of them.
    const refused = await (options.authorize ?? (() => undefined))(request, merchant)
    if (refused) return refused

    const query: Record<string, string> = {}
    for (const [name, value] of url.searchParams) {
      if (!(parameters as readonly string[]).includes(name)) {
        const shown = name.slice(0, 40)
        return problem(400, 'invalid_statement_parameter', `Unknown parameter "${shown}"; use from, to and period.`, {}, shown)
      }
      if (name in query) return problem(400, 'invalid_statement_parameter', `The parameter "${name}" is given twice.`, {}, name)
      query[name] = value
    }
    let checked: ReturnType<typeof statementOptions>
    try {
      checked = statementOptions({ ...query, merchant })
    } catch (error) {
      return badParameter(error)
    }
    let rows: Awaited<ReturnType<typeof statement>>
    try {
      rows = await statement(db, checked)
    } catch {
      return problem(503, 'database_unavailable', 'The database does not answer.')
    }
    return Response.json({
      merchant: checked.merchant,
      from: checked.from?.toISOString() ?? null,
      to: checked.to?.toISOString() ?? null,
      period: checked.period,
      rows,
      totals: statementTotals(rows),
    })
  }
}

function badParameter(error: unknown): Response {
  if (!(error instanceof StatementParameterError)) throw error
  return problem(400, error.code, `${error.shortMessage} ${error.hint}`, {}, error.parameter)
}

const titles: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  503: 'Service Unavailable',
}

function problem(status: number, code: string, detail: string, headers: Record<string, string> = {}, parameter?: string): Response {
  const body = { type: 'about:blank', title: titles[status], status, detail, code, ...(parameter && { parameter }) }
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/problem+json', ...headers } })
}
