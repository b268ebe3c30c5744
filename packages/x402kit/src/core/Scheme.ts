/**
 * Scheme: the contract every way of paying fulfils, once per role. A scheme is registered by
 * `(scheme, network)`; adding one touches its own folder only.
 */
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
}

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
}

export type { FacilitatorClient }
