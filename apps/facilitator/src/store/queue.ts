/**
 * The settlement queue on SQL (`SettlementQueue`): queued payments are rows of `payments` with the
 * payment itself kept beside them; batches, signer leases and each payer's unsettled value have
 * tables of their own. Whatever must change together changes in one transaction: queueing and the
 * payer's exposure, opening a batch and taking its payments, closing it and recording each outcome
 * (and the ledger). Instances take payments with `FOR UPDATE SKIP LOCKED`, so two never take one.
 */
import type { Payment } from 'x402kit'
import type { Batch, BatchTransaction, EnqueueResult, Exposure, PaymentOutcome, QueuedPayment, SettlementQueue } from 'x402kit/facilitator'
import { exposureKey } from 'x402kit/facilitator'
import { type EnqueueInput, enqueueMany, enqueueVerified, groupMax } from './enqueue.ts'
import { grouped } from './grouped.ts'
import { readRecord } from './records.ts'
import type { Queryable, Transactional } from './sql.ts'

export const queueMigration = `
  ALTER TABLE payments DROP CONSTRAINT payments_status_check;
  ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('verified', 'queued', 'submitted', 'settling', 'settled', 'failed'));
  ALTER TABLE payments ADD COLUMN payment jsonb;
  ALTER TABLE payments ADD COLUMN batch_id text;
  ALTER TABLE payments ADD COLUMN queued_at timestamptz;
  ALTER TABLE payments ADD COLUMN attempts integer NOT NULL DEFAULT 0;
  CREATE INDEX payments_queued ON payments (network, queued_at, key) WHERE status = 'queued';
  CREATE INDEX payments_batch ON payments (batch_id) WHERE batch_id IS NOT NULL;
  CREATE TABLE batches (
    id text PRIMARY KEY,
    network text NOT NULL,
    asset text NOT NULL,
    signer text NOT NULL,
    keys jsonb NOT NULL,
    transactions jsonb NOT NULL DEFAULT '[]'::jsonb,
    open boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL,
    closed_at timestamptz
  );
  CREATE INDEX batches_open ON batches (network, signer) WHERE open;
  CREATE TABLE signer_leases (
    network text NOT NULL,
    address text NOT NULL,
    owner text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (network, address)
  );
  CREATE TABLE exposures (
    payer text NOT NULL,
    pay_to text NOT NULL,
    asset text NOT NULL,
    unsettled numeric(78, 0) NOT NULL,
    PRIMARY KEY (payer, pay_to, asset)
  );`

/** A settled payment as the ledger records it, written in the transaction that records the outcome. */
export type SettledEntry = {
  key: string
  network: string
  asset: string
  payTo: string
  payer: string | undefined
  amount: bigint
  gasUsed: bigint
  gasCost: bigint
  transaction: string
  settledAt: Date
}

export type QueueOptions = {
  /** Writes settled payments to the ledger, inside the transaction that records them. */
  ledger?: (db: Queryable, entries: SettledEntry[]) => Promise<void>
}

const lower = (value: string) => value.toLowerCase()

const capRefused = new Error('The payer is at the cap of unsettled value.')

/** Most payments an instance keeps as it queued them, for reading its batches back. */
const knownMax = 100_000

export function sqlQueue(db: Transactional, options: QueueOptions = {}): SettlementQueue {
  /**
   * Payments this instance queued and has not seen settled or failed, as written: a batch of them is
   * read back without the payments themselves, the largest part of each row.
   */
  const known = new Map<string, string>()
  const remember = (key: string, payment: Payment) => {
    known.set(key, JSON.stringify(payment))
    if (known.size > knownMax) known.delete(known.keys().next().value!)
  }

  async function payments(q: Queryable, where: string, params: unknown[], keys?: readonly string[]): Promise<QueuedPayment[]> {
    const held = keys?.filter((key) => known.has(key)) ?? []
    const { rows } = await q.query(
      `SELECT key, network, asset, pay_to, payer, amount::text AS amount,
         CASE WHEN key = ANY($${params.length + 1}::text[]) THEN NULL ELSE payment END AS payment, attempts, queued_at
       FROM payments WHERE ${where}`,
      [...params, held],
    )
    return rows.map((row) => ({
      key: row.key as string,
      network: row.network as string,
      asset: row.asset as string,
      payTo: row.pay_to as string,
      payer: (row.payer as string | null) ?? undefined,
      amount: row.amount as string,
      payment: (row.payment ?? JSON.parse(known.get(row.key as string)!)) as Payment,
      attempts: Number(row.attempts),
      queuedAt: (row.queued_at as Date).getTime(),
    }))
  }

  /** Adds `delta` to an exposure; with `cap`, only while the total stays at or under it. False when the cap refused. */
  async function expose(q: Queryable, of: Exposure, delta: bigint, cap?: bigint): Promise<boolean> {
    const params: unknown[] = [lower(of.payer), lower(of.payTo), lower(of.asset), delta.toString()]
    let capped = ''
    if (cap !== undefined) {
      params.push(cap.toString())
      capped = ' WHERE exposures.unsettled + EXCLUDED.unsettled <= $5'
      if (delta > cap) return false
    }
    const { rows } = await q.query(
      `INSERT INTO exposures (payer, pay_to, asset, unsettled) VALUES ($1, $2, $3, $4)
       ON CONFLICT (payer, pay_to, asset) DO UPDATE SET unsettled = exposures.unsettled + EXCLUDED.unsettled${capped}
       RETURNING unsettled`,
      params,
    )
    return rows.length > 0
  }

  async function enqueueOne({ record, payment, cap, only }: EnqueueInput): Promise<EnqueueResult> {
    try {
      return await db.transaction(async (q) => {
        const { rows } = await q.query('SELECT status, payload_hash, payer FROM payments WHERE key = $1 FOR UPDATE', [record.key])
        const existing = rows[0]
        if (!existing && only === 'verified') return { queued: false, absent: true }
        if (existing && (existing.status !== 'verified' || existing.payload_hash !== (record.payloadHash ?? null)))
          return { queued: false, existing: (await readRecord(q, record.key))! }
        const payer = record.payer ?? (existing?.payer as string | null) ?? undefined
        const at = new Date(record.updatedAt)
        if (existing) {
          if (payer !== undefined && !(await expose(q, { payer, payTo: record.payTo, asset: record.asset }, BigInt(record.amount), cap)))
            return { queued: false, cap: true }
          await q.query(
            `UPDATE payments SET status = 'queued', payer = $2, payment = $3::jsonb, queued_at = $4, updated_at = $4 WHERE key = $1`,
            [record.key, payer ?? null, JSON.stringify(payment), at],
          )
          return { queued: true, payer }
        }
        // Another instance may be inserting the same payment this moment: its row wins, and is answered.
        const inserted = await q.query(
          `INSERT INTO payments (key, network, scheme, payer, amount, asset, pay_to, payload_hash, status, payment, queued_at, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9::jsonb, $10, $10, $10)
           ON CONFLICT (key) DO NOTHING RETURNING key`,
          [
            record.key,
            record.network,
            record.scheme,
            payer ?? null,
            record.amount,
            record.asset,
            record.payTo,
            record.payloadHash ?? null,
            JSON.stringify(payment),
            at,
          ],
        )
        if (inserted.rows.length === 0) return { queued: false, existing: (await readRecord(q, record.key))! }
        if (payer !== undefined && !(await expose(q, { payer, payTo: record.payTo, asset: record.asset }, BigInt(record.amount), cap)))
          throw capRefused
        return { queued: true, payer }
      })
    } catch (error) {
      // Thrown to undo the insert along with everything else of the transaction.
      if (error === capRefused) return { queued: false, cap: true }
      throw error
    }
  }

  const enqueue = grouped<EnqueueInput, EnqueueResult>((inputs) => db.transaction((q) => enqueueMany(q, inputs)), {
    max: groupMax,
    keyOf: (input) => input.record.key,
    async one(input) {
      // The common case, a payment verified here a moment ago, in one statement; anything else in a transaction.
      if (input.only === 'verified') {
        const fast = await enqueueVerified(db, input)
        if (fast) return fast
      }
      return enqueueOne(input)
    },
  })

  return {
    async enqueue(record, payment, { cap, only } = {}) {
      const result = await enqueue({ record, payment, cap, only })
      if (result.queued) remember(record.key, payment)
      return result
    },

    async exposure(of) {
      const { rows } = await db.query(
        'SELECT unsettled::text AS unsettled FROM exposures WHERE payer = $1 AND pay_to = $2 AND asset = $3',
        [lower(of.payer), lower(of.payTo), lower(of.asset)],
      )
      return BigInt((rows[0]?.unsettled as string | undefined) ?? 0)
    },

    async leaseSigner(network, signer, owner, ttlMs) {
      // The database's clock decides, so instances with skewed clocks still agree on who holds a key.
      const { rows } = await db.query(
        `INSERT INTO signer_leases (network, address, owner, expires_at) VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')
         ON CONFLICT (network, address) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
         WHERE signer_leases.owner = EXCLUDED.owner OR signer_leases.expires_at < now()
         RETURNING owner`,
        [network, lower(signer), owner, ttlMs],
      )
      return rows.length > 0
    },

    async releaseSigner(network, signer, owner) {
      await db.query('DELETE FROM signer_leases WHERE network = $1 AND address = $2 AND owner = $3', [network, lower(signer), owner])
    },

    openBatch: ({ id, network, signer, owner, limit, now }) =>
      db.transaction(async (q) => {
        const lease = await q.query(
          'SELECT 1 FROM signer_leases WHERE network = $1 AND address = $2 AND owner = $3 AND expires_at > now() FOR SHARE',
          [network, lower(signer), owner],
        )
        if (lease.rows.length === 0) return undefined
        const head = await q.query(`SELECT asset FROM payments WHERE status = 'queued' AND network = $1 ORDER BY queued_at, key LIMIT 1`, [
          network,
        ])
        const asset = head.rows[0]?.asset as string | undefined
        if (asset === undefined) return undefined
        const taken = await q.query(
          `UPDATE payments SET status = 'submitted', batch_id = $1, updated_at = $2
           WHERE key IN (
             SELECT key FROM payments WHERE status = 'queued' AND network = $3 AND asset = $4
             ORDER BY queued_at, key LIMIT $5 FOR UPDATE SKIP LOCKED)
           RETURNING key, queued_at`,
          [id, new Date(now), network, asset, limit],
        )
        if (taken.rows.length === 0) return undefined
        const keys = taken.rows
          .map((row) => ({ key: row.key as string, at: (row.queued_at as Date).getTime() }))
          .sort((a, b) => a.at - b.at || (a.key < b.key ? -1 : 1))
          .map((row) => row.key)
        const batch: Batch = { id, network, asset, signer, keys, transactions: [], createdAt: now }
        await q.query(`INSERT INTO batches (id, network, asset, signer, keys, created_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6)`, [
          id,
          network,
          asset,
          signer,
          JSON.stringify(keys),
          new Date(now),
        ])
        return { batch, payments: await payments(q, 'batch_id = $1', [id], keys) }
      }),

    async addTransaction(batchId, transaction: BatchTransaction) {
      const { rows } = await db.query(`UPDATE batches SET transactions = transactions || $2::jsonb WHERE id = $1 AND open RETURNING id`, [
        batchId,
        JSON.stringify([transaction]),
      ])
      if (rows.length === 0) throw new Error(`Batch ${batchId} is not open.`)
    },

    closeBatch: (batchId, outcomes: readonly PaymentOutcome[], now) =>
      db.transaction(async (q) => {
        const open = await q.query('SELECT 1 FROM batches WHERE id = $1 AND open FOR UPDATE', [batchId])
        if (open.rows.length === 0) return
        const at = new Date(now)
        const settled: SettledEntry[] = []
        const released = new Map<string, { of: Exposure; amount: bigint }>()
        const requeued = outcomes.filter((outcome) => outcome.status === 'queued').map((outcome) => outcome.key)
        if (requeued.length > 0)
          await q.query(
            `UPDATE payments SET status = 'queued', batch_id = NULL, attempts = attempts + 1, updated_at = $3
             WHERE key = ANY($1::text[]) AND batch_id = $2 AND status = 'submitted'`,
            [requeued, batchId, at],
          )
        const final = outcomes.filter((outcome) => outcome.status !== 'queued') as Exclude<PaymentOutcome, { status: 'queued' }>[]
        // One statement for every outcome. The exposure is taken off under the payer each payment was
        // queued with, which its outcome may name only now.
        const { rows } =
          final.length === 0
            ? { rows: [] }
            : await q.query(
                `UPDATE payments SET status = o.status, result = o.result::jsonb, "transaction" = o.tx, error_reason = o.reason,
             payer = coalesce(o.payer, payments.payer), payment = NULL, updated_at = $7
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $8::text[]) AS o(key, status, result, tx, reason, payer),
             (SELECT key, payer FROM payments WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE) queued
           WHERE payments.key = o.key AND queued.key = o.key AND payments.batch_id = $6 AND payments.status = 'submitted'
           RETURNING payments.key, network, asset, pay_to, payments.payer, queued.payer AS queued_payer, amount::text AS amount`,
                [
                  final.map((outcome) => outcome.key),
                  final.map((outcome) => outcome.status),
                  final.map((outcome) => JSON.stringify(outcome.result)),
                  final.map((outcome) => outcome.transaction || null),
                  final.map((outcome) => (outcome.status === 'failed' ? outcome.errorReason : null)),
                  batchId,
                  at,
                  final.map((outcome) => outcome.result.payer ?? null),
                ],
              )
        const byKey = new Map(final.map((outcome) => [outcome.key, outcome]))
        for (const row of rows) {
          const outcome = byKey.get(row.key as string)!
          const payer = (row.payer as string | null) ?? undefined
          const queuedPayer = (row.queued_payer as string | null) ?? undefined
          if (queuedPayer) {
            const of = { payer: queuedPayer, payTo: row.pay_to as string, asset: row.asset as string }
            const total = released.get(exposureKey(of))
            released.set(exposureKey(of), { of, amount: (total?.amount ?? 0n) + BigInt(row.amount as string) })
          }
          if (outcome.status === 'settled')
            settled.push({
              key: outcome.key,
              network: row.network as string,
              asset: row.asset as string,
              payTo: row.pay_to as string,
              payer,
              amount: BigInt(row.amount as string),
              gasUsed: outcome.gasUsed,
              gasCost: outcome.gasCost,
              transaction: outcome.transaction,
              settledAt: at,
            })
        }
        // One statement for every exposure, its rows locked in one order for every batch: batches closing at
        // once on other signers share payers, and rows locked in the order of each batch's payments deadlock.
        const releases = [...released.keys()].sort().map((key) => released.get(key)!)
        if (releases.length > 0)
          await q.query(
            `UPDATE exposures SET unsettled = exposures.unsettled - v.d
             FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[]) AS v(p, t, a, d),
               (SELECT payer, pay_to, asset FROM exposures
                WHERE (payer, pay_to, asset) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))
                ORDER BY payer, pay_to, asset FOR UPDATE) locked
             WHERE exposures.payer = v.p AND exposures.pay_to = v.t AND exposures.asset = v.a
               AND locked.payer = v.p AND locked.pay_to = v.t AND locked.asset = v.a`,
            [
              releases.map(({ of }) => lower(of.payer)),
              releases.map(({ of }) => lower(of.payTo)),
              releases.map(({ of }) => lower(of.asset)),
              releases.map(({ amount }) => amount.toString()),
            ],
          )
        for (const outcome of final) known.delete(outcome.key)
        if (settled.length > 0 && options.ledger) await options.ledger(q, settled)
        // A payment the outcomes do not mention goes back to the queue: a closed batch would strand it.
        await q.query(
          `UPDATE payments SET status = 'queued', batch_id = NULL, attempts = attempts + 1, updated_at = $2
           WHERE batch_id = $1 AND status = 'submitted'`,
          [batchId, at],
        )
        await q.query('UPDATE batches SET open = false, closed_at = $2 WHERE id = $1', [batchId, at])
      }),

    async unfinishedBatches(network, signer) {
      const { rows } = await db.query(
        'SELECT id, network, asset, signer, keys, transactions, created_at FROM batches WHERE open AND network = $1 AND lower(signer) = $2 ORDER BY created_at',
        [network, lower(signer)],
      )
      const result: { batch: Batch; payments: QueuedPayment[] }[] = []
      for (const row of rows) {
        const batch: Batch = {
          id: row.id as string,
          network: row.network as string,
          asset: row.asset as string,
          signer: row.signer as string,
          keys: row.keys as string[],
          transactions: row.transactions as BatchTransaction[],
          createdAt: (row.created_at as Date).getTime(),
        }
        result.push({ batch, payments: await payments(db, `batch_id = $1 AND status = 'submitted'`, [batch.id]) })
      }
      return result
    },

    async stats(network) {
      const { rows } = await db.query(
        `SELECT count(*)::int AS depth, min(queued_at) AS oldest FROM payments WHERE status = 'queued' AND network = $1`,
        [network],
      )
      const oldest = rows[0]?.oldest as Date | null | undefined
      return { depth: Number(rows[0]?.depth ?? 0), oldestQueuedAt: oldest ? oldest.getTime() : undefined }
    },
  }
}
