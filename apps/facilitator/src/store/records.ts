/** The columns of a payment record, and the record of a row. */
import type { SettlementRecord } from 'x402kit/facilitator'
import type { Queryable } from './sql.ts'

export const columns = `key, network, scheme, payer, amount::text AS amount, asset, pay_to, payload_hash, status, "transaction", error_reason, result, created_at, updated_at`

/** The record of `key`, read on `db` (a transaction's connection, say). */
export async function readRecord(db: Queryable, key: string): Promise<SettlementRecord | undefined> {
  const { rows } = await db.query(`SELECT ${columns} FROM payments WHERE key = $1`, [key])
  return rows[0] && toRecord(rows[0])
}

export function toRecord(row: Record<string, unknown>): SettlementRecord {
  const optional = (value: unknown) => (value === null || value === undefined ? undefined : (value as string))
  return {
    key: row.key as string,
    network: row.network as string,
    scheme: row.scheme as string,
    payer: optional(row.payer),
    amount: row.amount as string,
    asset: row.asset as string,
    payTo: row.pay_to as string,
    payloadHash: optional(row.payload_hash),
    status: row.status as SettlementRecord['status'],
    transaction: optional(row.transaction),
    errorReason: optional(row.error_reason),
    result: (row.result ?? undefined) as SettlementRecord['result'],
    createdAt: (row.created_at as Date).getTime(),
    updatedAt: (row.updated_at as Date).getTime(),
  }
}
