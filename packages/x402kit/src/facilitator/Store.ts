/**
 * Store: the durable record of every payment a facilitator verified or settled (DESIGN §5). The record
 * is what makes settlement idempotent, replay-safe and crash-safe: its key is the scheme's
 * `settlementKey`, and its status only moves forward, `verified → settling → settled | failed`.
 */
import type { SettleResponse } from '../core/Facilitator.ts'

export type SettlementStatus = 'verified' | 'settling' | 'settled' | 'failed'

export type SettlementRecord = {
  key: string
  network: string
  scheme: string
  /** Known once the scheme has verified or settled the payment. */
  payer?: string | undefined
  amount: string
  asset: string
  payTo: string
  /**
   * A digest of the scheme payload that claimed the key. A stored or running settlement is only ever
   * answered to the same payload: the key (say, a public transaction hash, or an authorization's
   * nonce once it is on chain) is no secret, and must not buy the payer's result for someone else.
   */
  payloadHash?: string | undefined
  status: SettlementStatus
  transaction?: string | undefined
  errorReason?: string | undefined
  /** The settle response, kept so that a repeated settle answers exactly the same. */
  result?: SettleResponse | undefined
  /** Milliseconds since the epoch. */
  createdAt: number
  updatedAt: number
}

export type SettlementPatch = Partial<Omit<SettlementRecord, 'key' | 'createdAt'>>

/** The condition of a compare-and-set `update`: the record must still be in `status` (and older than `updatedBefore`). */
export type SettlementCondition = { status: SettlementStatus; updatedBefore?: number }

/**
 * Where settlement records live. Every method must be atomic across all facilitator instances that
 * share the store: two instances must never both win `reserve`, or both pass one `update` condition.
 */
export type SettlementStore = {
  /** Claims `key` with `record`. `undefined` when this call claimed it; otherwise the record that holds it. */
  reserve(key: string, record: SettlementRecord): Promise<SettlementRecord | undefined>
  /**
   * Applies `patch` to the record of `key`, only if it meets `when` where given. The updated record,
   * or `undefined` when there is none or the condition failed.
   */
  update(key: string, patch: SettlementPatch, when?: SettlementCondition): Promise<SettlementRecord | undefined>
  get(key: string): Promise<SettlementRecord | undefined>
}

/** True when a record meets a compare-and-set condition. */
function meets(record: SettlementRecord, when: SettlementCondition | undefined): boolean {
  if (!when) return true
  if (record.status !== when.status) return false
  return when.updatedBefore === undefined || record.updatedAt < when.updatedBefore
}

/**
 * A store in this process's memory: the default, right for one instance and for tests. Records of
 * finished payments are dropped after `retentionMs` (default a day), when a payment's authorization
 * has long expired; records still `settling` are kept, as only a reconciliation with the chain may end them.
 *
 * @example
 * ```ts
 * import { createFacilitator, memoryStore } from 'x402kit/facilitator'
 * const facilitator = createFacilitator({ schemes, store: memoryStore() })
 * ```
 */
export function memoryStore(options: { retentionMs?: number; now?: () => number } = {}): SettlementStore {
  const retentionMs = options.retentionMs ?? 24 * 60 * 60 * 1000
  const now = options.now ?? Date.now
  const records = new Map<string, SettlementRecord>()
  let writes = 0

  function prune() {
    const cutoff = now() - retentionMs
    for (const [key, record] of records) if (record.status !== 'settling' && record.updatedAt < cutoff) records.delete(key)
  }

  // Every method does its check and its write without an `await` between them, which makes it atomic in one process.
  return {
    async reserve(key, record) {
      const existing = records.get(key)
      if (existing) return structuredClone(existing)
      records.set(key, structuredClone({ ...record, key }))
      if (++writes % 1024 === 0) prune()
      return undefined
    },
    async update(key, patch, when) {
      const existing = records.get(key)
      if (!existing || !meets(existing, when)) return undefined
      const updated: SettlementRecord = { ...existing, ...structuredClone(patch), key, createdAt: existing.createdAt }
      records.set(key, updated)
      return structuredClone(updated)
    },
    async get(key) {
      const existing = records.get(key)
      return existing && structuredClone(existing)
    },
  }
}
