/**
 * What a `batch-settlement` facilitator keeps durably: what it knows of each channel (its config, the
 * balance and claimed total last read or changed here, what it has been charged, the best voucher
 * held) and a record of each claim, sweep and refund transaction, written before it is sent. A crash
 * between sending and recording leaves an `open` action, settled at the next start against the
 * escrow's `channels(id)` (claims are cumulative on chain, so resending one never claims twice).
 */
import type { Hex } from 'viem'
import type * as Channel from './Channel.ts'

/** What the facilitator knows of a channel; amounts in the token's atomic units. */
export type ChannelRecord = {
  id: Hex
  network: string
  config: Channel.ChannelConfig
  balance: bigint
  claimed: bigint
  /** What requests paid through this facilitator charged the channel; `undefined` where a resource server keeps that. */
  charged: bigint | undefined
  /** The highest voucher held, and its signature. */
  signedMax: bigint
  signature: Hex | undefined
  /** The payer's pending withdrawal: its amount and when it started (unix seconds), 0 when none. */
  withdrawal: bigint
  withdrawRequestedAt: number
  refundNonce: bigint
  updatedAt: number
}

export type ActionKind = 'claim' | 'settle' | 'refund'
/** `open`: written, maybe sent; `confirmed` or `failed` once the chain answered (or a restart reconciled it). */
export type ActionStatus = 'open' | 'confirmed' | 'failed'

/** One claim, sweep or refund transaction. */
export type ActionRecord = {
  id: string
  network: string
  kind: ActionKind
  status: ActionStatus
  transaction: Hex | undefined
  /** Per channel, the claimed total (claim) or refunded amount (refund) the transaction is for. */
  channels: { channelId: Hex; amount: bigint }[]
  /** Vouchers in a claim; receivers swept in a sweep; 1 for a refund. */
  count: number
  /** The value moved: claimed, swept or refunded. */
  amount: bigint
  receiver: string | undefined
  token: string | undefined
  gasUsed: bigint | undefined
  errorReason: string | undefined
  createdAt: number
  updatedAt: number
}

export type ChannelQuery = { receiver?: string; payer?: string; network?: string; limit: number; offset: number }

export type BatchSettlementStore = {
  getChannel(id: Hex): Promise<ChannelRecord | undefined>
  putChannel(record: ChannelRecord): Promise<void>
  listChannels(query: ChannelQuery): Promise<{ items: ChannelRecord[]; total: number }>
  putAction(record: ActionRecord): Promise<void>
  updateAction(
    id: string,
    patch: Partial<Pick<ActionRecord, 'status' | 'transaction' | 'gasUsed' | 'errorReason' | 'amount' | 'updatedAt'>>,
  ): Promise<void>
  openActions(network: string): Promise<ActionRecord[]>
  actions(query: { channelId?: string; limit: number }): Promise<ActionRecord[]>
}

/**
 * A store in memory: for tests and a single process whose channel state may be lost on restart.
 *
 * @example
 * ```ts
 * import { batchSettlementEvmFacilitator, memoryBatchSettlementStore } from 'x402kit/evm'
 * const channels = batchSettlementEvmFacilitator({ networks, store: memoryBatchSettlementStore() })
 * ```
 */
export function memoryBatchSettlementStore(): BatchSettlementStore {
  const channels = new Map<string, ChannelRecord>()
  const actions = new Map<string, ActionRecord>()
  const copy = <value>(record: value): value => structuredClone(record)
  return {
    getChannel: async (id) => {
      const found = channels.get(id.toLowerCase())
      return found && copy(found)
    },
    putChannel: async (record) => {
      channels.set(record.id.toLowerCase(), copy(record))
    },
    listChannels: async ({ receiver, payer, network, limit, offset }) => {
      const all = [...channels.values()]
        .filter(
          (record) =>
            (!receiver || record.config.receiver.toLowerCase() === receiver.toLowerCase()) &&
            (!payer || record.config.payer.toLowerCase() === payer.toLowerCase()) &&
            (!network || record.network === network),
        )
        .sort((a, b) => b.updatedAt - a.updatedAt || a.id.localeCompare(b.id))
      return { items: all.slice(offset, offset + limit).map(copy), total: all.length }
    },
    putAction: async (record) => {
      actions.set(record.id, copy(record))
    },
    updateAction: async (id, patch) => {
      const found = actions.get(id)
      if (found) actions.set(id, { ...found, ...copy(patch) })
    },
    openActions: async (network) =>
      [...actions.values()].filter((record) => record.network === network && record.status === 'open').map(copy),
    actions: async ({ channelId, limit }) =>
      [...actions.values()]
        .filter((record) => !channelId || record.channels.some((entry) => entry.channelId.toLowerCase() === channelId.toLowerCase()))
        .sort((a, b) => b.createdAt - a.createdAt)
        .slice(0, limit)
        .map(copy),
  }
}
