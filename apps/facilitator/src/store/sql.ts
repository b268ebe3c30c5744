/**
 * A `SettlementStore` on SQL (DESIGN §5): one schema, one dialect and one migration set for PGlite
 * (embedded) and PostgreSQL (many instances sharing one database). Atomicity comes from the
 * database: `reserve` is one `INSERT … ON CONFLICT DO NOTHING`, and a conditional `update` is one
 * `UPDATE … WHERE`, which PostgreSQL re-checks on the latest row version under concurrent writers.
 */
import { BaseError } from 'x402kit'
import type { SettlementCondition, SettlementPatch, SettlementQueue, SettlementRecord, SettlementStore } from 'x402kit/facilitator'
import { ledgerMigration } from '../ledger/ledger.ts'
import { denyListMigration } from '../risk/denyList.ts'
import { channelsMigration } from './channels.ts'
import { groupMax } from './enqueue.ts'
import { grouped } from './grouped.ts'
import { credentialKeysMigration } from './keys.ts'
import { type QueueOptions, queueMigration, sqlQueue } from './queue.ts'
import { columns, readRecord, toRecord } from './records.ts'

/** What the store needs of a database; a `pg` `Pool` and a `PGlite` both have it. */
export type Queryable = {
  query(sql: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>
}

/** A database that can also run statements in one transaction (on one connection). */
export type Transactional = Queryable & {
  transaction<result>(run: (db: Queryable) => Promise<result>): Promise<result>
}

/** Each migration runs once per database, in order; a shipped one never changes. */
export const migrations = [
  {
    version: 1,
    sql: `
      CREATE TABLE payments (
        key text PRIMARY KEY,
        network text NOT NULL,
        scheme text NOT NULL,
        payer text,
        amount numeric(78, 0) NOT NULL,
        asset text NOT NULL,
        pay_to text NOT NULL,
        status text NOT NULL CHECK (status IN ('verified', 'settling', 'settled', 'failed')),
        "transaction" text,
        error_reason text,
        result jsonb,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
      );
      CREATE INDEX payments_status ON payments (status);`,
  },
  { version: 2, sql: credentialKeysMigration },
  // The payload that claimed a key: stored results are answered to that payload only.
  { version: 3, sql: 'ALTER TABLE payments ADD COLUMN payload_hash text;' },
  // The settlement pipeline: the queue, batches, signer leases and each payer's unsettled value.
  { version: 4, sql: queueMigration },
  // Fees and gas of each settled payment, per merchant.
  { version: 5, sql: ledgerMigration },
  { version: 6, sql: denyListMigration },
  // batch-settlement: channels, and claim, sweep and refund transactions.
  { version: 7, sql: channelsMigration },
] as const

// Any fixed number: it names the lock that makes instances starting together migrate one at a time.
const migrationLock = 402_4020

/**
 * Brings the database's schema up to date; safe to run from many instances at once. Each migration
 * is one `DO` block, so it applies whole or not at all, under a transaction-scoped advisory lock.
 */
export async function migrate(db: Queryable): Promise<void> {
  for (const migration of migrations)
    await db.query(`DO $migrate$ BEGIN
      PERFORM pg_advisory_xact_lock(${migrationLock});
      CREATE TABLE IF NOT EXISTS migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
      IF NOT EXISTS (SELECT 1 FROM migrations WHERE version = ${migration.version}) THEN
        ${migration.sql}
        INSERT INTO migrations (version) VALUES (${migration.version});
      END IF;
    END $migrate$`)
  const { rows } = await db.query('SELECT max(version) AS version FROM migrations')
  const version = Number(rows[0]?.version ?? 0)
  const known = migrations.at(-1)?.version ?? 0
  if (version > known)
    throw new BaseError(`The database schema is at version ${version}, newer than this facilitator knows (${known}).`, {
      code: 'database_schema_newer',
      hint: 'Run the facilitator version that migrated it, or a newer one.',
    })
}

const fields = {
  network: 'network',
  scheme: 'scheme',
  payer: 'payer',
  amount: 'amount',
  asset: 'asset',
  payTo: 'pay_to',
  payloadHash: 'payload_hash',
  status: 'status',
  transaction: '"transaction"',
  errorReason: 'error_reason',
  result: 'result',
  updatedAt: 'updated_at',
} as const satisfies Record<keyof SettlementPatch, string>

/**
 * The settlement store on a migrated database.
 *
 * @example
 * ```ts
 * import { PGlite } from '@electric-sql/pglite'
 * import { migrate, sqlStore } from '@x402kit/facilitator'
 * const db = await PGlite.create('.data/facilitator')
 * await migrate(db)
 * const store = sqlStore(db)
 * ```
 */
export function sqlStore(db: Transactional, options: QueueOptions = {}): SettlementStore & SettlementQueue {
  // Reads and reservations of concurrent requests go to the database together (`grouped.ts`).
  const get = grouped<string, SettlementRecord | undefined>(
    async (keys) => {
      const { rows } = await db.query(`SELECT ${columns} FROM payments WHERE key = ANY($1::text[])`, [keys])
      const byKey = new Map(rows.map((row) => [row.key as string, toRecord(row)]))
      return keys.map((key) => byKey.get(key))
    },
    { max: groupMax, keyOf: (key) => key, one: (key) => readRecord(db, key) },
  )

  async function reserveOne({ key, record }: { key: string; record: SettlementRecord }): Promise<SettlementRecord | undefined> {
    const inserted = await db.query(
      `INSERT INTO payments (key, network, scheme, payer, amount, asset, pay_to, payload_hash, status, "transaction", error_reason, result, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14)
       ON CONFLICT (key) DO NOTHING RETURNING key`,
      [
        key,
        record.network,
        record.scheme,
        record.payer ?? null,
        record.amount,
        record.asset,
        record.payTo,
        record.payloadHash ?? null,
        record.status,
        record.transaction ?? null,
        record.errorReason ?? null,
        record.result === undefined ? null : JSON.stringify(record.result),
        new Date(record.createdAt),
        new Date(record.updatedAt),
      ],
    )
    if (inserted.rows.length > 0) return undefined
    const existing = await readRecord(db, key)
    if (!existing) throw new BaseError(`The payment record ${key} could neither be inserted nor read.`, { code: 'store_unavailable' })
    return existing
  }

  const reserve = grouped<{ key: string; record: SettlementRecord }, SettlementRecord | undefined>(
    (inputs) =>
      // One transaction, so that a group that fails half-way leaves nothing behind for its calls' retries to trip on.
      db.transaction(async (q) => {
        const inserted = await q.query(
          `INSERT INTO payments (key, network, scheme, payer, amount, asset, pay_to, payload_hash, status, "transaction", error_reason, result, created_at, updated_at)
           SELECT k, n, s, p, m::numeric, a, t, h, st, tx, r, j::jsonb, c, u
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
             $11::text[], $12::text[], $13::timestamptz[], $14::timestamptz[]) AS v(k, n, s, p, m, a, t, h, st, tx, r, j, c, u)
           ORDER BY k
           ON CONFLICT (key) DO NOTHING RETURNING key`,
          [
            inputs.map(({ key }) => key),
            inputs.map(({ record }) => record.network),
            inputs.map(({ record }) => record.scheme),
            inputs.map(({ record }) => record.payer ?? null),
            inputs.map(({ record }) => record.amount),
            inputs.map(({ record }) => record.asset),
            inputs.map(({ record }) => record.payTo),
            inputs.map(({ record }) => record.payloadHash ?? null),
            inputs.map(({ record }) => record.status),
            inputs.map(({ record }) => record.transaction ?? null),
            inputs.map(({ record }) => record.errorReason ?? null),
            inputs.map(({ record }) => (record.result === undefined ? null : JSON.stringify(record.result))),
            inputs.map(({ record }) => new Date(record.createdAt).toISOString()),
            inputs.map(({ record }) => new Date(record.updatedAt).toISOString()),
          ],
        )
        const won = new Set(inserted.rows.map((row) => row.key as string))
        const lost = inputs.filter(({ key }) => !won.has(key)).map(({ key }) => key)
        const existing = new Map<string, SettlementRecord>()
        if (lost.length > 0) {
          const { rows } = await q.query(`SELECT ${columns} FROM payments WHERE key = ANY($1::text[])`, [lost])
          for (const row of rows) existing.set(row.key as string, toRecord(row))
        }
        return inputs.map(({ key }) => {
          if (won.has(key)) return undefined
          const record = existing.get(key)
          if (!record) throw new BaseError(`The payment record ${key} could neither be inserted nor read.`, { code: 'store_unavailable' })
          return record
        })
      }),
    { max: groupMax, keyOf: ({ key }) => key, one: reserveOne },
  )

  return {
    ...sqlQueue(db, options),
    get,
    async unfinished(before, limit) {
      const { rows } = await db.query(
        `SELECT ${columns} FROM payments WHERE status = 'settling' AND updated_at < $1 ORDER BY updated_at LIMIT $2`,
        [new Date(before), limit],
      )
      return rows.map(toRecord)
    },

    reserve: (key, record) => reserve({ key, record }),

    async update(key, patch, when) {
      const params: unknown[] = [key]
      const assignments: string[] = []
      for (const [field, column] of Object.entries(fields) as [keyof SettlementPatch, string][]) {
        if (!Object.hasOwn(patch, field)) continue
        params.push(toColumn(field, patch[field]))
        assignments.push(`${column} = $${params.length}${field === 'result' ? '::jsonb' : ''}`)
      }
      if (assignments.length === 0) assignments.push('key = key')
      const { rows } = await db.query(
        `UPDATE payments SET ${assignments.join(', ')} WHERE key = $1${condition(when, params)} RETURNING ${columns}`,
        params,
      )
      return rows[0] && toRecord(rows[0])
    },
  }
}

function condition(when: SettlementCondition | undefined, params: unknown[]): string {
  if (!when) return ''
  params.push(when.status)
  let sql = ` AND status = $${params.length}`
  if (when.updatedBefore !== undefined) {
    params.push(new Date(when.updatedBefore))
    sql += ` AND updated_at < $${params.length}`
  }
  return sql
}

function toColumn(field: keyof SettlementPatch, value: unknown): unknown {
  if (value === undefined || value === null) return null
  if (field === 'updatedAt') return new Date(value as number)
  if (field === 'result') return JSON.stringify(value)
  return value
}
