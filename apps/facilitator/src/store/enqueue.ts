/**
 * Queueing on SQL beyond one payment per transaction (`grouped.ts`): a payment verified a moment ago
 * in one statement, and a group of payments in one transaction of multi-row statements that answers
 * each exactly as `enqueue` alone would, in the order they came.
 */
import type { Payment } from 'x402kit'
import type { EnqueueResult, SettlementRecord } from 'x402kit/facilitator'
import { exposureKey } from 'x402kit/facilitator'
import { columns, toRecord } from './records.ts'
import type { Queryable } from './sql.ts'

export type EnqueueInput = { record: SettlementRecord; payment: Payment; cap?: bigint | undefined; only?: 'verified' | undefined }

/** Most payments queued in one transaction. */
export const groupMax = 256

const lower = (value: string) => value.toLowerCase()

/**
 * Moves a `verified` record with the same payload hash to `queued` and adds to the payer's exposure
 * under the cap, in one statement; `undefined` when there is no such record (the caller then takes
 * the general path, which says why).
 */
export async function enqueueVerified(db: Queryable, { record, payment, cap }: EnqueueInput): Promise<EnqueueResult | undefined> {
  const { rows } = await db.query(
    `WITH held AS (
       SELECT key, coalesce($3::text, payer) AS payer FROM payments
       WHERE key = $1 AND status = 'verified' AND payload_hash = $2 FOR UPDATE),
     exposed AS (
       INSERT INTO exposures (payer, pay_to, asset, unsettled)
       SELECT lower(held.payer), $4, $5, $6::numeric FROM held
       WHERE held.payer IS NOT NULL AND ($7::numeric IS NULL OR $6::numeric <= $7::numeric)
       ON CONFLICT (payer, pay_to, asset) DO UPDATE SET unsettled = exposures.unsettled + EXCLUDED.unsettled
       WHERE $7::numeric IS NULL OR exposures.unsettled + EXCLUDED.unsettled <= $7::numeric
       RETURNING 1),
     queued AS (
       UPDATE payments SET status = 'queued', payer = held.payer, payment = $8::jsonb, queued_at = $9, updated_at = $9
       FROM held WHERE payments.key = held.key AND (held.payer IS NULL OR EXISTS (SELECT 1 FROM exposed))
       RETURNING payments.payer)
     SELECT (SELECT count(*)::int FROM held) AS held, (SELECT count(*)::int FROM queued) AS queued, (SELECT payer FROM queued) AS payer`,
    [
      record.key,
      record.payloadHash ?? null,
      record.payer ?? null,
      lower(record.payTo),
      lower(record.asset),
      record.amount,
      cap === undefined ? null : cap.toString(),
      JSON.stringify(payment),
      new Date(record.updatedAt),
    ],
  )
  const row = rows[0]
  if (!row || Number(row.held) === 0) return undefined
  if (Number(row.queued) === 0) return { queued: false, cap: true }
  return { queued: true, payer: (row.payer as string | null) ?? undefined }
}

type Candidate = { index: number; payer: string | undefined; exposure: string | undefined; amount: bigint; fresh: boolean }

/**
 * Queues a group of payments (distinct keys) in the transaction `q`. Rows are locked in key order and
 * exposures in (payer, payee, asset) order, the order `closeBatch` uses, so groups of instances
 * sharing a database wait for one another instead of deadlocking.
 */
export async function enqueueMany(q: Queryable, inputs: readonly EnqueueInput[]): Promise<EnqueueResult[]> {
  const results: EnqueueResult[] = new Array(inputs.length)
  const { rows } = await q.query(
    'SELECT key, status, payload_hash, payer FROM payments WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE',
    [inputs.map((input) => input.record.key)],
  )
  const held = new Map(rows.map((row) => [row.key as string, row]))
  const taken: number[] = []
  const candidates: Candidate[] = []
  inputs.forEach(({ record, only }, index) => {
    const row = held.get(record.key)
    if (!row && only === 'verified') results[index] = { queued: false, absent: true }
    else if (row && (row.status !== 'verified' || row.payload_hash !== (record.payloadHash ?? null))) taken.push(index)
    else {
      const payer = record.payer ?? (row?.payer as string | null) ?? undefined
      const exposure = payer === undefined ? undefined : exposureKey({ payer, payTo: record.payTo, asset: record.asset })
      candidates.push({ index, payer, exposure, amount: BigInt(record.amount), fresh: !row })
    }
  })

  // Each exposure touched, locked and read (created at zero where there is none yet).
  const exposures = [...new Set(candidates.flatMap((candidate) => (candidate.exposure ? [candidate.exposure] : [])))].sort()
  const totals = new Map<string, bigint>()
  if (exposures.length > 0) {
    const parts = exposures.map((key) => key.split(' ') as [string, string, string])
    const locked = await q.query(
      `INSERT INTO exposures (payer, pay_to, asset, unsettled)
       SELECT p, t, a, 0 FROM unnest($1::text[], $2::text[], $3::text[]) AS v(p, t, a) ORDER BY p, t, a
       ON CONFLICT (payer, pay_to, asset) DO UPDATE SET unsettled = exposures.unsettled
       RETURNING payer, pay_to, asset, unsettled::text AS unsettled`,
      [parts.map((part) => part[0]), parts.map((part) => part[1]), parts.map((part) => part[2])],
    )
    for (const row of locked.rows) totals.set(`${row.payer} ${row.pay_to} ${row.asset}`, BigInt(row.unsettled as string))
  }
  const before = new Map(totals)

  // The cap, payment by payment in the order they came, as if each were queued alone.
  const accepted: Candidate[] = []
  for (const candidate of candidates) {
    const { cap } = inputs[candidate.index]!
    if (candidate.exposure !== undefined) {
      const total = totals.get(candidate.exposure) ?? 0n
      if (cap !== undefined && total + candidate.amount > cap) {
        results[candidate.index] = { queued: false, cap: true }
        continue
      }
      totals.set(candidate.exposure, total + candidate.amount)
    }
    accepted.push(candidate)
  }

  const fresh = accepted.filter((candidate) => candidate.fresh)
  if (fresh.length > 0) {
    const records = fresh.map((candidate) => ({ candidate, record: inputs[candidate.index]!.record }))
    // Another instance may be inserting one of these payments this moment: its row wins, and is answered.
    const inserted = await q.query(
      `INSERT INTO payments (key, network, scheme, payer, amount, asset, pay_to, payload_hash, status, payment, queued_at, created_at, updated_at)
       SELECT k, n, s, p, m::numeric, a, t, h, 'queued', j::jsonb, at, at, at
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])
         AS v(k, n, s, p, m, a, t, h, j, at)
       ORDER BY k
       ON CONFLICT (key) DO NOTHING RETURNING key`,
      [
        records.map(({ record }) => record.key),
        records.map(({ record }) => record.network),
        records.map(({ record }) => record.scheme),
        records.map(({ candidate }) => candidate.payer ?? null),
        records.map(({ record }) => record.amount),
        records.map(({ record }) => record.asset),
        records.map(({ record }) => record.payTo),
        records.map(({ record }) => record.payloadHash ?? null),
        records.map(({ candidate }) => JSON.stringify(inputs[candidate.index]!.payment)),
        records.map(({ record }) => new Date(record.updatedAt).toISOString()),
      ],
    )
    const won = new Set(inserted.rows.map((row) => row.key as string))
    for (const { candidate, record } of records) {
      if (won.has(record.key)) continue
      taken.push(candidate.index)
      accepted.splice(accepted.indexOf(candidate), 1)
      if (candidate.exposure !== undefined) totals.set(candidate.exposure, totals.get(candidate.exposure)! - candidate.amount)
    }
  }

  const moved = accepted.filter((candidate) => !candidate.fresh)
  if (moved.length > 0)
    await q.query(
      `UPDATE payments SET status = 'queued', payer = v.p, payment = v.j::jsonb, queued_at = v.at, updated_at = v.at
       FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS v(k, p, j, at) WHERE payments.key = v.k`,
      [
        moved.map((candidate) => inputs[candidate.index]!.record.key),
        moved.map((candidate) => candidate.payer ?? null),
        moved.map((candidate) => JSON.stringify(inputs[candidate.index]!.payment)),
        moved.map((candidate) => new Date(inputs[candidate.index]!.record.updatedAt).toISOString()),
      ],
    )

  const changed = exposures.filter((key) => totals.get(key) !== before.get(key))
  if (changed.length > 0) {
    const parts = changed.map((key) => key.split(' ') as [string, string, string])
    await q.query(
      `UPDATE exposures SET unsettled = v.u FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[]) AS v(p, t, a, u)
       WHERE exposures.payer = v.p AND exposures.pay_to = v.t AND exposures.asset = v.a`,
      [
        parts.map((part) => part[0]),
        parts.map((part) => part[1]),
        parts.map((part) => part[2]),
        changed.map((key) => totals.get(key)!.toString()),
      ],
    )
  }

  for (const candidate of accepted) results[candidate.index] = { queued: true, payer: candidate.payer }
  if (taken.length > 0) {
    const { rows: records } = await q.query(`SELECT ${columns} FROM payments WHERE key = ANY($1::text[])`, [
      taken.map((index) => inputs[index]!.record.key),
    ])
    const byKey = new Map(records.map((row) => [row.key as string, toRecord(row)]))
    for (const index of taken) results[index] = { queued: false, existing: byKey.get(inputs[index]!.record.key)! }
  }
  return results
}
