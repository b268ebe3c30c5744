/**
 * The `batch-settlement` store on SQL: what the facilitator knows of each channel, and each claim,
 * sweep and refund transaction, recorded before it is sent (`x402kit/evm` `BatchSettlementStore`).
 * A channel row only moves forward where instances could race: its claimed total, charged value and
 * best voucher never go back; its balance and withdrawal are the latest read.
 */
import type { Hex } from 'viem'
import type { ActionRecord, BatchSettlementStore, ChannelRecord } from 'x402kit/evm'
import type { Queryable } from './sql.ts'

export const channelsMigration = `
  CREATE TABLE batch_channels (
    id text PRIMARY KEY,
    network text NOT NULL,
    payer text NOT NULL,
    receiver text NOT NULL,
    token text NOT NULL,
    config jsonb NOT NULL,
    balance numeric(78, 0) NOT NULL,
    claimed numeric(78, 0) NOT NULL,
    charged numeric(78, 0),
    signed_max numeric(78, 0) NOT NULL,
    signature text,
    withdrawal numeric(78, 0) NOT NULL DEFAULT 0,
    withdraw_requested_at bigint NOT NULL DEFAULT 0,
    refund_nonce numeric(78, 0) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL
  );
  CREATE INDEX batch_channels_receiver ON batch_channels (receiver, updated_at DESC);
  CREATE INDEX batch_channels_payer ON batch_channels (payer, updated_at DESC);
  CREATE TABLE batch_actions (
    id text PRIMARY KEY,
    network text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('claim', 'settle', 'refund')),
    status text NOT NULL CHECK (status IN ('open', 'confirmed', 'failed')),
    "transaction" text,
    channels jsonb NOT NULL,
    count integer NOT NULL,
    amount numeric(78, 0) NOT NULL,
    receiver text,
    token text,
    gas_used numeric(78, 0),
    error_reason text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
  );
  CREATE INDEX batch_actions_open ON batch_actions (network) WHERE status = 'open';
  CREATE INDEX batch_actions_channels ON batch_actions USING gin (channels jsonb_path_ops);`

const channelColumns =
  'id, network, config, balance, claimed, charged, signed_max, signature, withdrawal, withdraw_requested_at, refund_nonce, updated_at'
const actionColumns =
  'id, network, kind, status, "transaction", channels, count, amount, receiver, token, gas_used, error_reason, created_at, updated_at'

const big = (value: unknown) => BigInt(String(value))
const time = (value: unknown) => (value instanceof Date ? value.getTime() : new Date(String(value)).getTime())
const json = (value: unknown) => (typeof value === 'string' ? JSON.parse(value) : value)

function toChannel(row: Record<string, unknown>): ChannelRecord {
  return {
    id: row.id as Hex,
    network: String(row.network),
    config: json(row.config),
    balance: big(row.balance),
    claimed: big(row.claimed),
    charged: row.charged === null ? undefined : big(row.charged),
    signedMax: big(row.signed_max),
    signature: (row.signature ?? undefined) as Hex | undefined,
    withdrawal: big(row.withdrawal),
    withdrawRequestedAt: Number(row.withdraw_requested_at),
    refundNonce: big(row.refund_nonce),
    updatedAt: time(row.updated_at),
  }
}

function toAction(row: Record<string, unknown>): ActionRecord {
  return {
    id: String(row.id),
    network: String(row.network),
    kind: row.kind as ActionRecord['kind'],
    status: row.status as ActionRecord['status'],
    transaction: (row.transaction ?? undefined) as Hex | undefined,
    channels: (json(row.channels) as { channelId: Hex; amount: string }[]).map((entry) => ({
      channelId: entry.channelId,
      amount: big(entry.amount),
    })),
    count: Number(row.count),
    amount: big(row.amount),
    receiver: (row.receiver ?? undefined) as string | undefined,
    token: (row.token ?? undefined) as string | undefined,
    gasUsed: row.gas_used === null ? undefined : big(row.gas_used),
    errorReason: (row.error_reason ?? undefined) as string | undefined,
    createdAt: time(row.created_at),
    updatedAt: time(row.updated_at),
  }
}

const patchColumns = {
  status: 'status',
  transaction: '"transaction"',
  gasUsed: 'gas_used',
  errorReason: 'error_reason',
  amount: 'amount',
  updatedAt: 'updated_at',
} as const

/**
 * The `batch-settlement` store on a migrated database.
 *
 * @example
 * ```ts
 * import { batchSettlementEvmFacilitator } from 'x402kit/evm'
 * import { openDatabase, migrate, sqlChannelStore } from '@x402kit/facilitator'
 * const db = await openDatabase({ dataDir: '.data/facilitator' })
 * await migrate(db)
 * const channels = batchSettlementEvmFacilitator({ networks, store: sqlChannelStore(db) })
 * ```
 */
export function sqlChannelStore(db: Queryable): BatchSettlementStore {
  return {
    async getChannel(id) {
      const { rows } = await db.query(`SELECT ${channelColumns} FROM batch_channels WHERE id = $1`, [id.toLowerCase()])
      return rows[0] && toChannel(rows[0])
    },
    async putChannel(record) {
      const { config } = record
      await db.query(
        `INSERT INTO batch_channels (id, network, payer, receiver, token, config, balance, claimed, charged, signed_max, signature,
           withdrawal, withdraw_requested_at, refund_nonce, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (id) DO UPDATE SET
           balance = EXCLUDED.balance,
           claimed = GREATEST(batch_channels.claimed, EXCLUDED.claimed),
           charged = GREATEST(batch_channels.charged, EXCLUDED.charged),
           signature = CASE WHEN EXCLUDED.signed_max >= batch_channels.signed_max THEN EXCLUDED.signature ELSE batch_channels.signature END,
           signed_max = GREATEST(batch_channels.signed_max, EXCLUDED.signed_max),
           withdrawal = EXCLUDED.withdrawal,
           withdraw_requested_at = EXCLUDED.withdraw_requested_at,
           refund_nonce = GREATEST(batch_channels.refund_nonce, EXCLUDED.refund_nonce),
           updated_at = EXCLUDED.updated_at`,
        [
          record.id.toLowerCase(),
          record.network,
          config.payer.toLowerCase(),
          config.receiver.toLowerCase(),
          config.token.toLowerCase(),
          JSON.stringify(config),
          record.balance.toString(),
          record.claimed.toString(),
          record.charged?.toString() ?? null,
          record.signedMax.toString(),
          record.signature ?? null,
          record.withdrawal.toString(),
          record.withdrawRequestedAt,
          record.refundNonce.toString(),
          new Date(record.updatedAt),
        ],
      )
    },
    async listChannels({ receiver, payer, network, limit, offset }) {
      const where: string[] = []
      const params: unknown[] = []
      if (receiver) where.push(`receiver = $${params.push(receiver.toLowerCase())}`)
      if (payer) where.push(`payer = $${params.push(payer.toLowerCase())}`)
      if (network) where.push(`network = $${params.push(network)}`)
      const filter = where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''
      const [page, count] = await Promise.all([
        db.query(
          `SELECT ${channelColumns} FROM batch_channels ${filter} ORDER BY updated_at DESC, id LIMIT $${params.length + 1} OFFSET $${params.length + 2}`,
          [...params, limit, offset],
        ),
        db.query(`SELECT count(*) AS total FROM batch_channels ${filter}`, params),
      ])
      return { items: page.rows.map(toChannel), total: Number(count.rows[0]?.total ?? 0) }
    },
    async putAction(record) {
      await db.query(`INSERT INTO batch_actions (${actionColumns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`, [
        record.id,
        record.network,
        record.kind,
        record.status,
        record.transaction ?? null,
        JSON.stringify(record.channels.map((entry) => ({ channelId: entry.channelId.toLowerCase(), amount: entry.amount.toString() }))),
        record.count,
        record.amount.toString(),
        record.receiver?.toLowerCase() ?? null,
        record.token?.toLowerCase() ?? null,
        record.gasUsed?.toString() ?? null,
        record.errorReason ?? null,
        new Date(record.createdAt),
        new Date(record.updatedAt),
      ])
    },
    async updateAction(id, patch) {
      const sets: string[] = []
      const params: unknown[] = [id]
      for (const [key, column] of Object.entries(patchColumns)) {
        if (!(key in patch)) continue
        const value = patch[key as keyof typeof patch]
        const stored = typeof value === 'bigint' ? value.toString() : key === 'updatedAt' ? new Date(value as number) : (value ?? null)
        sets.push(`${column} = $${params.push(stored)}`)
      }
      if (sets.length > 0) await db.query(`UPDATE batch_actions SET ${sets.join(', ')} WHERE id = $1`, params)
    },
    async openActions(network) {
      const { rows } = await db.query(
        `SELECT ${actionColumns} FROM batch_actions WHERE network = $1 AND status = 'open' ORDER BY created_at`,
        [network],
      )
      return rows.map(toAction)
    },
    async actions({ channelId, limit }) {
      const { rows } = channelId
        ? await db.query(`SELECT ${actionColumns} FROM batch_actions WHERE channels @> $1::jsonb ORDER BY created_at DESC LIMIT $2`, [
            JSON.stringify([{ channelId: channelId.toLowerCase() }]),
            limit,
          ])
        : await db.query(`SELECT ${actionColumns} FROM batch_actions ORDER BY created_at DESC LIMIT $1`, [limit])
      return rows.map(toAction)
    },
  }
}
