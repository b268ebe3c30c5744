/**
 * Store: the durable record of every payment a facilitator verified or settled (DESIGN §5). The record
 * is what makes settlement idempotent, replay-safe and crash-safe: its key is the scheme's
 * `settlementKey`, and its status moves `verified → settling → settled | failed` when a scheme settles
 * a payment itself, or `verified → queued → submitted → settled | failed` through the settlement
 * pipeline (`Queue.ts`), where a batch that never lands puts its payments back to `queued`.
 */
import type { Payment, SettleResponse } from '../core/Facilitator.ts'
import {
  type Batch,
  type EnqueueResult,
  type Exposure,
  exposureKey,
  type PaymentOutcome,
  type QueuedPayment,
  type SettlementQueue,
} from './Queue.ts'

export type SettlementStatus = 'verified' | 'queued' | 'submitted' | 'settling' | 'settled' | 'failed'

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
  /** Records still `settling` that were last written before `before` (ms): settlements a crash may have cut short. */
  unfinished?(before: number, limit: number): Promise<SettlementRecord[]>
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
export function memoryStore(options: { retentionMs?: number; now?: () => number } = {}): SettlementStore & SettlementQueue {
  const retentionMs = options.retentionMs ?? 24 * 60 * 60 * 1000
  const now = options.now ?? Date.now
  const records = new Map<string, SettlementRecord>()
  /** Queued and submitted payments, with what a worker needs to settle them. */
  const queued = new Map<string, { payment: Payment; attempts: number; queuedAt: number; batchId?: string }>()
  const batches = new Map<string, Batch & { open: boolean }>()
  const leases = new Map<string, { owner: string; until: number }>()
  const exposures = new Map<string, bigint>()
  let writes = 0

  const exposureOf = (record: SettlementRecord): Exposure | undefined =>
    record.payer === undefined ? undefined : { payer: record.payer, payTo: record.payTo, asset: record.asset }
  function expose(record: SettlementRecord, delta: bigint) {
    const of = exposureOf(record)
    if (!of) return
    const key = exposureKey(of)
    const total = (exposures.get(key) ?? 0n) + delta
    if (total === 0n) exposures.delete(key)
    else exposures.set(key, total)
  }
  function toQueued(record: SettlementRecord): QueuedPayment {
    const entry = queued.get(record.key)!
    return {
      key: record.key,
      network: record.network,
      asset: record.asset,
      payTo: record.payTo,
      payer: record.payer,
      amount: record.amount,
      payment: structuredClone(entry.payment),
      attempts: entry.attempts,
      queuedAt: entry.queuedAt,
    }
  }

  function prune() {
    const cutoff = now() - retentionMs
    for (const [key, record] of records)
      if ((record.status === 'settled' || record.status === 'failed' || record.status === 'verified') && record.updatedAt < cutoff) {
        records.delete(key)
        queued.delete(key)
      }
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
    async unfinished(before, limit) {
      return [...records.values()]
        .filter((record) => record.status === 'settling' && record.updatedAt < before)
        .slice(0, limit)
        .map((record) => structuredClone(record))
    },

    async enqueue(record, payment, { cap, only } = {}): Promise<EnqueueResult> {
      const existing = records.get(record.key)
      if (!existing && only === 'verified') return { queued: false, absent: true }
      if (existing && (existing.status !== 'verified' || existing.payloadHash !== record.payloadHash))
        return { queued: false, existing: structuredClone(existing) }
      const payer = record.payer ?? existing?.payer
      const entry: SettlementRecord = { ...record, payer, status: 'queued', createdAt: existing?.createdAt ?? record.createdAt }
      if (cap !== undefined) {
        const of = exposureOf(entry)
        if (of && (exposures.get(exposureKey(of)) ?? 0n) + BigInt(entry.amount) > cap) return { queued: false, cap: true }
      }
      records.set(record.key, structuredClone(entry))
      queued.set(record.key, { payment: structuredClone(payment), attempts: 0, queuedAt: record.updatedAt })
      expose(entry, BigInt(entry.amount))
      return { queued: true, payer }
    },
    async exposure(of) {
      return exposures.get(exposureKey(of)) ?? 0n
    },
    async leaseSigner(network, signer, owner, ttlMs) {
      const key = `${network} ${signer.toLowerCase()}`
      const lease = leases.get(key)
      if (lease && lease.owner !== owner && lease.until > now()) return false
      leases.set(key, { owner, until: now() + ttlMs })
      return true
    },
    async releaseSigner(network, signer, owner) {
      const key = `${network} ${signer.toLowerCase()}`
      if (leases.get(key)?.owner === owner) leases.delete(key)
    },
    async openBatch({ id, network, signer, owner, limit, now: at }) {
      const lease = leases.get(`${network} ${signer.toLowerCase()}`)
      if (!lease || lease.owner !== owner || lease.until <= now()) return undefined
      const waiting = [...records.values()]
        .filter((record) => record.status === 'queued' && record.network === network)
        .sort((a, b) => queued.get(a.key)!.queuedAt - queued.get(b.key)!.queuedAt || (a.key < b.key ? -1 : 1))
      const asset = waiting[0]?.asset.toLowerCase()
      if (asset === undefined) return undefined
      const taken = waiting.filter((record) => record.asset.toLowerCase() === asset).slice(0, limit)
      const batch: Batch = {
        id,
        network,
        asset: taken[0]!.asset,
        signer,
        keys: taken.map((record) => record.key),
        transactions: [],
        createdAt: at,
      }
      batches.set(id, { ...batch, open: true })
      for (const record of taken) {
        record.status = 'submitted'
        record.updatedAt = at
        queued.get(record.key)!.batchId = id
      }
      return { batch: structuredClone(batch), payments: taken.map(toQueued) }
    },
    async addTransaction(batchId, transaction) {
      const batch = batches.get(batchId)
      if (!batch?.open) throw new Error(`Batch ${batchId} is not open.`)
      batch.transactions.push({ ...transaction })
    },
    async closeBatch(batchId, outcomes: readonly PaymentOutcome[], at) {
      const batch = batches.get(batchId)
      if (!batch?.open) return
      for (const outcome of outcomes) {
        const record = records.get(outcome.key)
        const entry = queued.get(outcome.key)
        if (!record || !entry || entry.batchId !== batchId || record.status !== 'submitted') continue
        record.updatedAt = at
        if (outcome.status === 'queued') {
          record.status = 'queued'
          entry.attempts++
          entry.batchId = undefined
          continue
        }
        // The exposure this payment added when queued: under the payer it was queued with.
        expose(record, -BigInt(record.amount))
        record.status = outcome.status
        record.result = structuredClone(outcome.result)
        record.transaction = outcome.transaction || undefined
        record.errorReason = outcome.status === 'failed' ? outcome.errorReason : undefined
        if (outcome.result.payer) record.payer = outcome.result.payer
        queued.delete(outcome.key)
      }
      // A payment the outcomes do not mention goes back to the queue: a closed batch would strand it.
      for (const [key, entry] of queued) {
        const record = records.get(key)
        if (entry.batchId !== batchId || record?.status !== 'submitted') continue
        record.status = 'queued'
        record.updatedAt = at
        entry.attempts++
        entry.batchId = undefined
      }
      batch.open = false
    },
    async unfinishedBatches(network, signer) {
      const open = [...batches.values()].filter(
        (batch) => batch.open && batch.network === network && batch.signer.toLowerCase() === signer.toLowerCase(),
      )
      return open.map(({ open: _, ...batch }) => ({
        batch: structuredClone(batch),
        payments: [...queued.entries()].filter(([, entry]) => entry.batchId === batch.id).map(([key]) => toQueued(records.get(key)!)),
      }))
    },
    async stats(network) {
      let depth = 0
      let oldestQueuedAt: number | undefined
      for (const [key, entry] of queued) {
        const record = records.get(key)
        if (record?.status !== 'queued' || record.network !== network) continue
        depth++
        if (oldestQueuedAt === undefined || entry.queuedAt < oldestQueuedAt) oldestQueuedAt = entry.queuedAt
      }
      return { depth, oldestQueuedAt }
    },
  }
}
