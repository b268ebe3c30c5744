/**
 * The settlement queue (DESIGN §5): verified payments wait here, durably, until a worker takes a
 * batch of them into one transaction. A record moves `verified → queued → submitted → settled | failed`;
 * a batch whose transaction never lands puts its payments back to `queued`.
 *
 * The queue is the crash-safety of the pipeline: a batch and every transaction signed for it are
 * written before anything is sent, so that a worker starting after a crash finds each unfinished
 * batch, with the exact bytes it may have broadcast, and settles the account with the chain first.
 */
import type { Payment, SettleResponse } from '../core/Facilitator.ts'
import type { SettlementRecord } from './Store.ts'

/** A payment in the queue, or taken from it into a batch. */
export type QueuedPayment = {
  key: string
  network: string
  asset: string
  payTo: string
  payer: string | undefined
  amount: string
  payment: Payment
  /** How many batches have already carried it without an outcome (a reverted or dropped transaction). */
  attempts: number
  queuedAt: number
}

/** A signed transaction of a batch, written before it is broadcast. */
export type BatchTransaction = { hash: string; raw: string; nonce: number }

/** One transaction's worth of payments, sent by one signer. */
export type Batch = {
  id: string
  network: string
  asset: string
  signer: string
  /** The settlement keys of its payments, in the order of the transaction's items. */
  keys: string[]
  /** Every signature of the batch's transaction, first to last (later ones replace earlier ones at one nonce). */
  transactions: BatchTransaction[]
  createdAt: number
}

/** What became of one payment of a batch. */
export type PaymentOutcome =
  | { key: string; status: 'settled'; result: SettleResponse; transaction: string; gasUsed: bigint; gasCost: bigint }
  | { key: string; status: 'failed'; result: SettleResponse; errorReason: string; transaction?: string }
  /** Back to the queue: nothing happened to it on chain. */
  | { key: string; status: 'queued' }

export type EnqueueResult =
  /** Queued, with the payer the record names (from its verification, when it had one). */
  | { queued: true; payer?: string | undefined }
  /** `only: 'verified'` and there is no record: the payment must be checked before it is queued. */
  | { queued: false; absent: true }
  /** The payer's unsettled value to this payee would pass the cap; nothing was changed. */
  | { queued: false; cap: true }
  /** The key is held by this record, which is not a `verified` record of the same payment. */
  | { queued: false; existing: SettlementRecord }

export type Exposure = { payer: string; payTo: string; asset: string }

/**
 * Where the queue lives; every method is atomic across the instances that share it. A facilitator
 * settles through the pipeline when its store is also a `SettlementQueue`.
 */
export type SettlementQueue = {
  /**
   * Queues a payment: inserts `record` (status `queued`), or moves a `verified` record with the same
   * payload hash to `queued`. With `cap`, only while the payer's queued and submitted value to the
   * payee in the asset stays at or under it. With `only: 'verified'`, a payment without a record is
   * not inserted (`absent`): the caller checks it first.
   */
  enqueue(record: SettlementRecord, payment: Payment, options?: { cap?: bigint; only?: 'verified' }): Promise<EnqueueResult>
  /** Value queued or submitted and not yet settled or failed, for a payer, payee and asset. */
  exposure(of: Exposure): Promise<bigint>
  /**
   * Takes or renews the lease of a signer key for `owner` for `ttlMs`: one owner at a time sends
   * from a key, so nonces never collide across instances. False while another owner holds it.
   */
  leaseSigner(network: string, signer: string, owner: string, ttlMs: number): Promise<boolean>
  releaseSigner(network: string, signer: string, owner: string): Promise<void>
  /**
   * Takes up to `limit` queued payments of one asset on `network`, oldest first, into a new batch of
   * `signer` — only while `owner` holds that signer's lease. `undefined` when there is nothing to take.
   */
  openBatch(input: {
    id: string
    network: string
    signer: string
    owner: string
    limit: number
    now: number
  }): Promise<{ batch: Batch; payments: QueuedPayment[] } | undefined>
  /** Records a signed transaction of a batch; called before the transaction is broadcast. */
  addTransaction(batchId: string, transaction: BatchTransaction): Promise<void>
  /** Ends a batch with every payment's outcome, atomically; `queued` outcomes go back to the queue. */
  closeBatch(batchId: string, outcomes: readonly PaymentOutcome[], now: number): Promise<void>
  /** The batches of a signer that were opened and never closed, with their payments. */
  unfinishedBatches(network: string, signer: string): Promise<{ batch: Batch; payments: QueuedPayment[] }[]>
  /** The number of payments waiting on a network, and when the oldest was queued. */
  stats(network: string): Promise<{ depth: number; oldestQueuedAt: number | undefined }>
}

export function isQueue(store: object): store is SettlementQueue {
  return (
    typeof (store as Partial<SettlementQueue>).enqueue === 'function' && typeof (store as Partial<SettlementQueue>).openBatch === 'function'
  )
}

/** The key of an exposure total; addresses compare in lower case. */
export function exposureKey({ payer, payTo, asset }: Exposure): string {
  return `${payer.toLowerCase()} ${payTo.toLowerCase()} ${asset.toLowerCase()}`
}
