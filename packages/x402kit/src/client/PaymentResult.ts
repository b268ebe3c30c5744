/**
 * PaymentResult: what `wrapFetch` did about a 402, attached to the response it returns, and the
 * decoding of the settlement a server reports (`PAYMENT-RESPONSE`, version 1 `X-PAYMENT-RESPONSE`).
 */
import * as Base64Json from '../core/Base64Json.ts'
import { type SettleResponse, settleResponse } from '../core/Facilitator.ts'
import { HttpHeader } from '../core/HttpHeader.ts'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import type { Rejection } from './select.ts'

/** Why a 402 was not paid. A shipped code never changes. */
export const NotPaidReason = {
  /** Every offer a scheme could pay costs more than the budget allows. */
  overBudget: 'over_budget',
  /** No offer is in a scheme, network and asset this client pays. */
  noPayableOffer: 'no_payable_offer',
  /** The payable offers are in assets the budget has no limit for (no dollar value, no `perRequestAtomic`). */
  assetNotInBudget: 'asset_not_in_budget',
  /** The request body is a stream, which cannot be sent a second time with the payment. */
  unreplayableBody: 'unreplayable_body',
  /** The 402 carried no readable offers: a malformed `PAYMENT-REQUIRED` header or version 1 body. */
  invalidPaymentRequired: 'invalid_payment_required',
  /** The request already carried a payment header, so the 402 is the answer to that payment. */
  paymentAlreadyAttached: 'payment_already_attached',
  /** The payment was sent and the server refused it (a second 402, or a failed settlement). */
  paymentRejected: 'payment_rejected',
  /**
   * The payment was sent and the server failed (5xx) without reporting a settlement: it may still be
   * settled, so a new payment for the same call could pay twice.
   */
  paymentUnconfirmed: 'payment_unconfirmed',
} as const
export type NotPaidReason = (typeof NotPaidReason)[keyof typeof NotPaidReason]

/** An access credential the client holds, as a `PaymentResult` reports it. */
export type CredentialInfo = {
  /** The route key it was bought for, e.g. `'GET /feed/*'`. */
  scope: string
  /** Milliseconds since the epoch. */
  expiresAt: number
  /** Uses left as the client counts them; absent: any number until expiry. */
  usesLeft?: number
}

export type PaymentResult = {
  /** A payment was sent and the server did not refuse it. */
  paid: boolean
  /** The request was served on an access credential bought earlier (`paid` is false: nothing was paid for it). */
  credential?: CredentialInfo
  /** The access credential this payment earned; sent with later requests it covers. */
  granted?: CredentialInfo
  /** Why the server refused the credential the request carried (a `credential_*` code), before it was paid instead. */
  credentialRefused?: string
  /** Why nothing was paid; absent when `paid`. */
  reason?: NotPaidReason
  /** Details: the server's error message, or why its payment headers could not be read. */
  error?: string
  /** The protocol version the server asked in and the client answered in. */
  x402Version?: 1 | 2
  /** The offer chosen (version 2 form, also for a version 1 server). */
  offer?: PaymentRequirements
  /** The settlement the server reported, schema-checked. */
  settlement?: SettleResponse
  /** The paying address, as the server reported it or as the payload names it. */
  payer?: string
  /**
   * For a payment over a channel: its id, the cumulative voucher sent, and the deposit that came with
   * it. The price is spent; a deposit is held in the channel (what is not spent comes back on close).
   */
  channel?: { id: string; voucher: string; deposit?: string }
  /** The offers not chosen, each with why. */
  rejected?: readonly Rejection[]
}

const results = new WeakMap<Response, PaymentResult>()

/**
 * What `wrapFetch` did about payment for a response it returned; `undefined` when the server did not
 * ask for payment and no access credential was sent.
 *
 * @example
 * ```ts
 * import { getPaymentResult, wrapFetch } from 'x402kit/client'
 * const response = await wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })(url)
 * const result = getPaymentResult(response)
 * if (!result?.paid) console.log(result?.reason, result?.error)
 * ```
 */
export function getPaymentResult(response: Response): PaymentResult | undefined {
  return results.get(response)
}

export function attach(response: Response, result: PaymentResult): Response {
  results.set(response, result)
  return response
}

/**
 * Decodes the settlement a server reports: `PAYMENT-RESPONSE`, else version 1's `X-PAYMENT-RESPONSE`.
 * `undefined` when neither is present; throws a `ParseError` when the header does not parse.
 *
 * @example
 * ```ts
 * import { decodePaymentResponse } from 'x402kit/client'
 * const settlement = decodePaymentResponse(response.headers)
 * console.log(settlement?.transaction)
 * ```
 */
export function decodePaymentResponse(headers: Headers): SettleResponse | undefined {
  for (const name of [HttpHeader.paymentResponse, HttpHeader.xPaymentResponse]) {
    const value = headers.get(name)
    if (value !== null) return Base64Json.decode(value, settleResponse, { what: `${name} header` })
  }
  return undefined
}
