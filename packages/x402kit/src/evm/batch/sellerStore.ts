/**
 * Where a seller keeps its channels across restarts: the latest voucher accepted on each (its
 * cumulative amount and signature, what a claim needs) and what the escrow holds. The seller's memory
 * is authoritative while it runs; the store is written behind it in group commits (`sellerJournal`).
 */
import type { Hex } from 'viem'
import * as Channel from './Channel.ts'

/** One channel as stored; amounts in the token's atomic units. */
export type SellerChannelRecord = {
  /** The channel id, lower-case hex. */
  id: Hex
  network: string
  config: Channel.ChannelConfig
  /** In the escrow, as last deposited through this seller or read. */
  balance: bigint
  /** Claimed on chain so far. */
  totalClaimed: bigint
  /** The highest voucher accepted: the channel's cumulative charge, and what a claim presents. */
  charged: bigint
  signature: Hex | undefined
  /** When the payer started a withdrawal (seconds), 0 when none. */
  withdrawRequestedAt: number
  refundNonce: bigint
  /** Milliseconds since the epoch of the last paid request. */
  lastRequestAt: number
}

/**
 * A seller's channel store. `save` is atomic per call and never lowers a channel's `charged`: a
 * record older than the one stored leaves it as it is.
 */
export type SellerChannelStore = {
  load(): Promise<SellerChannelRecord[]>
  save(records: readonly SellerChannelRecord[]): Promise<void>
}

/**
 * Channels in this process's memory: state survives nothing; for tests and single-run tools.
 *
 * @example
 * ```ts
 * import { memorySellerChannelStore } from 'x402kit/evm'
 * const store = memorySellerChannelStore()
 * ```
 */
export function memorySellerChannelStore(): SellerChannelStore & { readonly records: ReadonlyMap<string, SellerChannelRecord> } {
  const records = new Map<string, SellerChannelRecord>()
  return {
    records,
    async load() {
      return [...records.values()].map((record) => ({ ...record }))
    },
    async save(batch) {
      for (const record of batch) {
        const stored = records.get(record.id)
        if (!stored || stored.charged <= record.charged) records.set(record.id, { ...record })
      }
    },
  }
}

/** What the SQL store needs of a database: PGlite and `pg`'s `Pool` both fit. */
export type SqlQueryable = { query(sql: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[] }> }

/**
 * Channels in a PostgreSQL table (PGlite or PostgreSQL), created on first use. Each save is one
 * statement over every channel in the batch.
 *
 * @example
 * ```ts
 * import { PGlite } from '@electric-sql/pglite'
 * import { sqlSellerChannelStore } from 'x402kit/evm'
 * const store = sqlSellerChannelStore(await PGlite.create('.data/seller'))
 * ```
 */
export function sqlSellerChannelStore(db: SqlQueryable, options: { table?: string } = {}): SellerChannelStore {
  const table = options.table ?? 'x402_seller_channels'
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(table)) throw new Error(`"${table}" is not a plain table name.`)
  let ready: Promise<unknown> | undefined
  const migrate = () =>
    (ready ??= db.query(`CREATE TABLE IF NOT EXISTS ${table} (
      id text PRIMARY KEY,
      network text NOT NULL,
      config jsonb NOT NULL,
      balance numeric(78, 0) NOT NULL,
      total_claimed numeric(78, 0) NOT NULL,
      charged numeric(78, 0) NOT NULL,
      signature text,
      withdraw_requested_at bigint NOT NULL,
      refund_nonce numeric(78, 0) NOT NULL,
      last_request_at bigint NOT NULL
    )`))
  /** Channels known to have a row: loaded, or written by this store. */
  const present = new Set<string>()
  return {
    async load() {
      await migrate()
      const { rows } = await db.query(
        `SELECT id, network, config, balance::text, total_claimed::text, charged::text, signature,
          withdraw_requested_at::text, refund_nonce::text, last_request_at::text FROM ${table}`,
      )
      const records = rows.map((row) => ({
        id: row.id as Hex,
        network: row.network as string,
        config: Channel.channelConfig.parse(typeof row.config === 'string' ? JSON.parse(row.config) : row.config),
        balance: BigInt(row.balance as string),
        totalClaimed: BigInt(row.total_claimed as string),
        charged: BigInt(row.charged as string),
        signature: (row.signature as Hex | null) ?? undefined,
        withdrawRequestedAt: Number(row.withdraw_requested_at),
        refundNonce: BigInt(row.refund_nonce as string),
        lastRequestAt: Number(row.last_request_at),
      }))
      for (const record of records) present.add(record.id)
      return records
    },
    async save(batch) {
      if (batch.length === 0) return
      await migrate()
      // Channels already in the table change only their counters: an update, about half the cost of an upsert.
      const known = batch.filter((record) => present.has(record.id))
      const fresh = batch.filter((record) => !present.has(record.id))
      if (known.length > 0) await update(known)
      if (fresh.length > 0) {
        await upsert(fresh)
        for (const record of fresh) present.add(record.id)
      }
    },
  }

  /** The columns a save changes, in table order after `id`: what an update writes. */
  function counters(batch: readonly SellerChannelRecord[]) {
    return [
      batch.map((record) => record.balance.toString()),
      batch.map((record) => record.totalClaimed.toString()),
      batch.map((record) => record.charged.toString()),
      batch.map((record) => record.signature ?? null),
      batch.map((record) => record.withdrawRequestedAt.toString()),
      batch.map((record) => record.refundNonce.toString()),
      batch.map((record) => Math.floor(record.lastRequestAt).toString()),
    ]
  }

  async function update(batch: readonly SellerChannelRecord[]) {
    await db.query(
      `UPDATE ${table} AS stored SET balance = changed.balance, total_claimed = changed.total_claimed,
          charged = changed.charged, signature = changed.signature, withdraw_requested_at = changed.withdraw_requested_at,
          refund_nonce = changed.refund_nonce, last_request_at = changed.last_request_at
        FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[], $5::text[], $6::bigint[], $7::numeric[], $8::bigint[])
          AS changed (id, balance, total_claimed, charged, signature, withdraw_requested_at, refund_nonce, last_request_at)
        WHERE stored.id = changed.id AND stored.charged <= changed.charged`,
      [batch.map((record) => record.id), ...counters(batch)],
    )
  }

  async function upsert(batch: readonly SellerChannelRecord[]) {
    await db.query(
      `INSERT INTO ${table} AS stored (id, network, config, balance, total_claimed, charged, signature,
            withdraw_requested_at, refund_nonce, last_request_at)
          SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::numeric[], $5::numeric[], $6::numeric[], $7::text[],
            $8::bigint[], $9::numeric[], $10::bigint[])
          ON CONFLICT (id) DO UPDATE SET balance = excluded.balance, total_claimed = excluded.total_claimed,
            charged = excluded.charged, signature = excluded.signature, withdraw_requested_at = excluded.withdraw_requested_at,
            refund_nonce = excluded.refund_nonce, last_request_at = excluded.last_request_at
          WHERE stored.charged <= excluded.charged`,
      [
        batch.map((record) => record.id),
        batch.map((record) => record.network),
        batch.map((record) => JSON.stringify(record.config)),
        ...counters(batch),
      ],
    )
  }
}

export type Journal = {
  /** Marks a channel changed; it goes out with the next group commit. */
  touch(id: string): void
  /** Resolves once every change made before the call is in the store. */
  flushed(): Promise<void>
  /** Changes not yet in the store, per channel: how many commits each channel is ahead of the store. */
  unsaved(id: string): number
  close(): Promise<void>
}

/**
 * Write-behind group commit: changed channels are saved together every `intervalMs` (one statement
 * for all of them), the latest state of each; a save that fails is retried with the next round.
 */
export function sellerJournal(options: {
  store: SellerChannelStore
  intervalMs: number
  read(id: string): SellerChannelRecord | undefined
  onError(error: unknown): void
}): Journal {
  const dirty = new Map<string, number>()
  let inFlight: Map<string, number> | undefined
  let waiters: (() => void)[] = []
  let closed = false

  /** One group commit; false when the save failed (its changes and waiters go to the next round). */
  async function round(): Promise<boolean> {
    if (dirty.size === 0) {
      const done = waiters
      waiters = []
      for (const resolve of done) resolve()
      return true
    }
    const batch = new Map(dirty)
    dirty.clear()
    inFlight = batch
    const done = waiters
    waiters = []
    const records = [...batch.keys()].map((id) => options.read(id)).filter((record) => record !== undefined)
    try {
      await options.store.save(records)
      inFlight = undefined
      for (const resolve of done) resolve()
      return true
    } catch (error) {
      inFlight = undefined
      for (const [id, count] of batch) dirty.set(id, (dirty.get(id) ?? 0) + count)
      waiters.push(...done)
      options.onError(error)
      return false
    }
  }

  let running: Promise<void> | undefined
  function tick() {
    if (running) return
    running = round()
      .catch((error: unknown) => {
        options.onError(error)
        return false
      })
      .then((saved) => {
        running = undefined
        // Someone waits for a commit that holds their change: it starts now, not at the next tick. After
        // a failed save the timer paces the retries.
        if (saved && waiters.length > 0 && !closed) tick()
      })
  }

  const timer = setInterval(tick, options.intervalMs)
  timer.unref?.()

  return {
    touch(id) {
      dirty.set(id, (dirty.get(id) ?? 0) + 1)
    },
    flushed() {
      return new Promise<void>((resolve) => {
        waiters.push(resolve)
        // The waiter belongs to the round after the one in flight, which may not hold its change.
        if (!running) tick()
      })
    },
    unsaved: (id) => (dirty.get(id) ?? 0) + (inFlight?.get(id) ?? 0),
    async close() {
      if (closed) return
      closed = true
      while (running) await running
      await new Promise<void>((resolve) => {
        waiters.push(resolve)
        tick()
      })
      await running
      clearInterval(timer)
    },
  }
}
