/**
 * Scheme: the contract every way of paying fulfils, once per role. A scheme is registered by
 * `(scheme, network)`; adding one touches its own folder only.
 */
import type { SettlementQueue } from '../facilitator/Queue.ts'
import type { SettlementRecord } from '../facilitator/Store.ts'
import type { FacilitatorClient, Payment, SettleResponse, VerifyResponse } from './Facilitator.ts'
import type { Price } from './Money.ts'
import type { Asset, Network } from './Network.ts'
import type { PaymentRequirements } from './PaymentRequirements.ts'

/** The payer's part: turns an offer into the scheme's signed payload. */
export type SchemeClient = {
  readonly scheme: string
  /** Whether this client can pay the offer (its network, asset and extra). */
  canPay(offer: PaymentRequirements): boolean
  /** Builds the `payload` field of a `PaymentPayload` for the offer. */
  createPayload(offer: PaymentRequirements, context: { resource: string }): Promise<Record<string, unknown>>
  /**
   * Told what became of a payload it built, once the paid request is answered (or failed): schemes
   * with state, such as channels, commit or resynchronise here. `retry` asks for one new payload.
   */
  paymentResult?(outcome: PaymentOutcome): Promise<{ retry?: boolean } | undefined>
}

/** What the server answered to a paid request: the settlement it reported, or the 402 refusing it. */
export type PaymentOutcome = {
  offer: PaymentRequirements
  payload: Record<string, unknown>
  /** The answer's status; absent when no answer came (a network fault). */
  status?: number
  settlement?: SettleResponse
  /** The error code and offers of a 402 answer (`PAYMENT-REQUIRED`). */
  refusal?: { error?: string; accepts: readonly PaymentRequirements[] }
}

/** The seller's part: turns a route's price into an offer. */
export type SchemeServer = {
  readonly scheme: string
  requirements(input: {
    price: Price
    network: Network
    payTo: string
    asset?: Asset
    maxTimeoutSeconds?: number
    extra?: Record<string, unknown>
  }): PaymentRequirements
  /**
   * Verifies, in the seller's process, a payment this scheme judges itself (a channel's voucher: a
   * signature check and a memory update, no facilitator call); `undefined` leaves it to the facilitator.
   * A valid answer promises nothing yet: `settle` checks again and charges atomically.
   */
  verify?(payment: Payment): Promise<LocalVerdict> | undefined
  /** Settles a payment `verify` took; `undefined` leaves it to the facilitator. */
  settle?(payment: Payment): Promise<SettleResponse> | undefined
  /** Told that a payment `verify` took will not be settled (the handler failed): whatever it holds for it goes. */
  release?(payment: Payment): void
}

/**
 * A scheme's own verdict. With `answer`, the payment asks for no resource (a channel's cooperative
 * refund): the handler does not run, `settle` still does, and `answer` is the JSON body of the reply.
 * With `offerExtra` on a refusal, the 402 adds those fields to the `extra` of the offer the payment
 * chose (a channel's state, so that a payer who lost count can pick up where the server is).
 */
export type LocalVerdict = VerifyResponse & { answer?: Record<string, unknown>; offerExtra?: Record<string, unknown> }

/** The facilitator's part: checks a payment and settles it. */
export type SchemeFacilitator = {
  readonly scheme: string
  /** The networks this instance serves. */
  readonly networks: readonly Network[]
  verify(payment: Payment): Promise<VerifyResponse>
  settle(payment: Payment): Promise<SettleResponse>
  /**
   * The identity of the money movement a payment authorises, such as `(network, asset, payer, nonce)`.
   * Two payments with one key settle at most once between them.
   */
  settlementKey(payment: Payment): string | undefined
  /** The reason a payment whose settlement key is taken is refused with. Default `invalid_exact_evm_nonce_already_used`. */
  readonly alreadyUsedReason?: string
  /** The addresses that send settlement transactions on a network (`/supported` `signers`). */
  signers(network: Network): string[]
  /** `extra` advertised in `/supported` for a network. */
  extra?(network: Network): Record<string, unknown> | undefined
  /** Settlement in batches through a durable queue, where the scheme offers it (`facilitator/Queue.ts`). */
  readonly pipeline?: SchemePipeline
  /**
   * What the chain says of a settlement left `settling` (a crash between sending and recording):
   * its outcome; `verified` when nothing was or can still be mined, so that it may be settled again;
   * `undefined` while it cannot yet tell (a transaction still pending).
   */
  reconcile?(record: SettlementRecord): Promise<Reconciled | undefined>
}

export type Reconciled = { status: 'settled' | 'failed'; result: SettleResponse } | { status: 'verified' }

/** A scheme's settlement pipeline: workers that take queued payments in batches and settle them. */
export type SchemePipeline = {
  /** Whether a payment can be settled in a batch; the others are settled one by one by `settle`. */
  accepts(payment: Payment): boolean
  /** Starts the workers on a queue. */
  start(queue: SettlementQueue, hooks: PipelineHooks): PipelineWorkers
}

export type PipelineHooks = {
  /** Names this process in signer leases; a restarted process with the same name takes its leases back at once. */
  owner: string
  /** Called with each settled payment's answer before it is recorded, e.g. to add an access credential. */
  finish(payment: Payment, result: SettleResponse): Promise<SettleResponse>
  /** Told of payments whose outcome was recorded (settled or failed), so that waiting requests answer at once. */
  recorded(keys: readonly string[]): void
  /** What the workers do: batches, gas, queue depth, signer balances. */
  event(event: PipelineEvent): void
  log(level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>): void
}

export type PipelineWorkers = {
  /** A payment was queued on `network`: a worker that is waiting looks now. */
  wake(network: string): void
  /** Stops taking batches, lets the ones in flight finish (up to `graceMs`), releases the leases. */
  stop(options?: { graceMs?: number }): Promise<void>
}

/** What a pipeline reports, for metrics and logs. */
export type PipelineEvent =
  | { type: 'queue'; network: string; depth: number; oldestAgeSeconds: number }
  | {
      type: 'batch'
      network: string
      signer: string
      size: number
      outcome: 'mined' | 'reverted' | 'dropped'
      gasUsed: bigint
      gasCostWei: bigint
      seconds: number
    }
  /** One payment of a closed batch: `settled`, `queued` (back in the queue), or the reason code of its failure. */
  | { type: 'item'; network: string; outcome: string }
  | { type: 'signer'; network: string; address: string; balanceWei: bigint; nonce: number; low: boolean }
  | { type: 'replaced'; network: string; signer: string }
  | { type: 'reorg'; network: string; payments: number }

export type { FacilitatorClient }
