/**
 * `x402 facilitator statement --merchant <payTo>`: a merchant's settled volume, fees and gas from the
 * facilitator's ledger, per UTC day or month, read from the database the service uses (`DATABASE_URL`,
 * or the PGlite folder of its configuration: stop the service first, as PGlite allows one process a folder).
 */
import {
  loadConfig,
  migrate,
  openDatabase,
  type StatementRow,
  type StatementTotal,
  statement,
  statementOptions,
  statementTotals,
} from '@x402kit/facilitator'
import { Network } from 'x402kit'

export type StatementCommandOptions = {
  merchant?: string
  from?: string
  to?: string
  period?: string
  json?: boolean
  configFile?: string
  env?: Record<string, string | undefined>
  out?: (line: string) => void
}

/** Prints the statement as a table (or JSON); returns the exit code. */
export async function facilitatorStatement(options: StatementCommandOptions): Promise<number> {
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`))
  const checked = statementOptions({ merchant: options.merchant, from: options.from, to: options.to, period: options.period })
  const config = loadConfig({ env: options.env, argv: options.configFile ? ['--config', options.configFile] : [] })
  const db = await openDatabase(config)
  let rows: StatementRow[]
  try {
    await migrate(db)
    rows = await statement(db, checked)
  } finally {
    await db.close()
  }
  const totals = statementTotals(rows)
  const from = checked.from?.toISOString() ?? null
  const to = checked.to?.toISOString() ?? null
  if (options.json) {
    out(JSON.stringify({ merchant: checked.merchant, from, to, period: checked.period, rows, totals }))
    return 0
  }

  const range = `${from ? `from ${from}` : 'from the start'} to ${to ? `${to} (exclusive)` : 'now'}`
  out(`Statement of ${checked.merchant}, ${range}, ${checked.period === 'all' ? 'in one period' : `per UTC ${checked.period}`}`)
  if (rows.length === 0) {
    out('No settled payments.')
    return 0
  }
  const label = (row: StatementRow) =>
    checked.period === 'all' ? 'all' : checked.period === 'month' ? row.period.slice(0, 7) : row.period.slice(0, 10)
  const line = (period: string, row: StatementTotal) => {
    const token = assetOf(row.network, row.asset)
    return [
      period,
      row.network,
      token.symbol,
      String(row.payments),
      units(row.volume, token.decimals),
      units(row.fees, token.decimals),
      units(row.net, token.decimals),
      row.gasUsed,
      units(row.gasCost, 18),
    ]
  }
  const table = [
    ['period', 'network', 'asset', 'payments', 'volume', 'fees', 'net', 'gas used', 'gas cost'],
    ...rows.map((row) => line(label(row), row)),
    ...totals.map((total) => line('total', total)),
  ]
  const widths = table[0]!.map((_, column) => Math.max(...table.map((cells) => cells[column]!.length)))
  // Text columns left, numbers right.
  const render = (cells: string[]) =>
    cells
      .map((cell, column) => (column < 3 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
      .join('  ')
      .trimEnd()
  for (const [i, cells] of table.entries()) {
    if (i === rows.length + 1) out(widths.map((width) => '-'.repeat(width)).join('  '))
    out(render(cells))
  }
  if (totals.some((total) => !assetOf(total.network, total.asset).known))
    out('Amounts of assets not in the network table are in atomic units.')
  out('Gas cost is in the network’s native coin (18 decimals).')
  return 0
}

/** The asset's symbol and decimals where the network table knows it; else its address, in atomic units. */
function assetOf(network: string, address: string): { symbol: string; decimals: number; known: boolean } {
  let asset: { symbol: string; decimals: number } | undefined
  try {
    asset = Network.asset(network, address)
  } catch {
    asset = undefined
  }
  if (asset) return { symbol: asset.symbol, decimals: asset.decimals, known: true }
  return { symbol: address.length > 12 ? `${address.slice(0, 6)}…${address.slice(-4)}` : address, decimals: 0, known: false }
}

/** Atomic units as token units with every decimal, from the digits: `1500000` at 6 decimals is `1.500000`. */
function units(atomic: string, decimals: number): string {
  const negative = atomic.startsWith('-')
  const digits = (negative ? atomic.slice(1) : atomic).padStart(decimals + 1, '0')
  const whole = digits.slice(0, digits.length - decimals)
  return `${negative ? '-' : ''}${whole}${decimals > 0 ? `.${digits.slice(digits.length - decimals)}` : ''}`
}
