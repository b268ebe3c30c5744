/**
 * The ledger: one row per settled payment with the merchant's fee and the payment's share of the gas
 * its transaction cost. Written once per settlement key, so recording a settlement again (a retry, a
 * second instance) never counts it twice.
 */
import { BaseError } from 'x402kit'
import type { SettledEntry } from '../store/queue.ts'
import type { Queryable } from '../store/sql.ts'
import { type Fees, feeFor, policyFor } from './fees.ts'

/** Migration 5: the `ledger` table, read by merchant and time. */
export const ledgerMigration = `
  CREATE TABLE ledger (
    key text PRIMARY KEY,
    merchant text NOT NULL CHECK (merchant = lower(merchant)),
    payer text,
    network text,
    asset text,
    amount numeric(78, 0),
    fee numeric(78, 0),
    gas_used numeric(78, 0),
    gas_cost numeric(78, 0),
    "transaction" text,
    settled_at timestamptz
  );
  CREATE INDEX ledger_merchant_settled_at ON ledger (merchant, settled_at);`

export type LedgerEntry = {
  /** The payment's settlement key. */
  key: string
  /** The payTo address; stored in lower case. */
  merchant: string
  payer: string | undefined
  network: string
  asset: string
  /** Atomic units of `asset`. */
  amount: bigint
  fee: bigint
  /** This payment's share of its transaction's gas. */
  gasUsed: bigint
  /** This payment's share of the transaction's cost in wei: `gasUsed` × effective gas price. */
  gasCost: bigint
  transaction: string
  settledAt: Date
}

export class LedgerError extends BaseError {
  override name = 'LedgerError'
  constructor(shortMessage: string) {
    super(shortMessage, { code: 'invalid_ledger_entry' })
  }
}

// 11 parameters a row: 1000 rows stay far below PostgreSQL's 65535 parameters a statement.
const rowsPerStatement = 1000

/**
 * Records settled payments; an entry whose key is already recorded is left as it is. Resolves to the
 * number of entries recorded now.
 *
 * @example
 * ```ts
 * import { openDatabase, migrate, recordLedger } from '@x402kit/facilitator'
 * const db = await openDatabase({ dataDir: '.data/facilitator' })
 * await migrate(db)
 * await recordLedger(db, [{ key, merchant, payer, network: 'eip155:8453', asset, amount: 10_000n, fee: 100n,
 *   gasUsed: 61_000n, gasCost: 61_000n * 5_000_000n, transaction, settledAt: new Date() }])
 * ```
 */
export async function recordLedger(db: Queryable, entries: readonly LedgerEntry[]): Promise<number> {
  let recorded = 0
  for (let start = 0; start < entries.length; start += rowsPerStatement) {
    const params: unknown[] = []
    const values: string[] = []
    for (const entry of entries.slice(start, start + rowsPerStatement)) {
      for (const value of [entry.amount, entry.fee, entry.gasUsed, entry.gasCost])
        if (typeof value !== 'bigint' || value < 0n)
          throw new LedgerError(`Ledger entry ${entry.key}: amounts must be bigints of 0 or more.`)
      if (Number.isNaN(entry.settledAt.getTime())) throw new LedgerError(`Ledger entry ${entry.key}: settledAt is not a valid date.`)
      const row = [
        entry.key,
        entry.merchant.toLowerCase(),
        entry.payer ?? null,
        entry.network,
        entry.asset,
        entry.amount.toString(),
        entry.fee.toString(),
        entry.gasUsed.toString(),
        entry.gasCost.toString(),
        entry.transaction,
        entry.settledAt,
      ]
      values.push(`(${row.map((_, i) => `$${params.length + i + 1}`).join(', ')})`)
      params.push(...row)
    }
    const { rows } = await db.query(
      `INSERT INTO ledger (key, merchant, payer, network, asset, amount, fee, gas_used, gas_cost, "transaction", settled_at)
       VALUES ${values.join(', ')} ON CONFLICT (key) DO NOTHING RETURNING key`,
      params,
    )
    recorded += rows.length
  }
  return recorded
}

/**
 * The ledger entries of settled payments (as the settlement queue hands them over, each with its
 * share of its transaction's gas): each charged its merchant's fee.
 *
 * @example
 * ```ts
 * import { ledgerEntries, loadConfig, recordLedger } from '@x402kit/facilitator'
 * const { fees } = loadConfig()
 * await recordLedger(db, ledgerEntries(settled, fees))
 * ```
 */
export function ledgerEntries(settled: readonly SettledEntry[], fees: Fees | undefined): LedgerEntry[] {
  return settled.map((payment) => ({
    key: payment.key,
    merchant: payment.payTo.toLowerCase(),
    payer: payment.payer,
    network: payment.network,
    asset: payment.asset,
    amount: payment.amount,
    fee: feeFor(payment.amount, policyFor(fees, payment.payTo)),
    gasUsed: payment.gasUsed,
    gasCost: payment.gasCost,
    transaction: payment.transaction,
    settledAt: payment.settledAt,
  }))
}
