/**
 * Facilitator: the wire of the facilitator HTTP API (x402 v2 §7: `/verify`, `/settle`, `/supported`)
 * and the interface a resource server uses to reach one, over HTTP or in-process.
 */
import { z } from 'zod'
import * as PaymentPayload from './PaymentPayload.ts'
import * as PaymentRequirements from './PaymentRequirements.ts'

const record = z.record(z.string(), z.unknown())

export const verifyRequest = z.union([
  z.looseObject({ x402Version: z.literal(2), paymentPayload: PaymentPayload.schema, paymentRequirements: PaymentRequirements.schema }),
  z.looseObject({ x402Version: z.literal(1), paymentPayload: PaymentPayload.schemaV1, paymentRequirements: PaymentRequirements.schemaV1 }),
])
export type VerifyRequest = z.output<typeof verifyRequest>

export const verifyResponse = z.looseObject({
  isValid: z.boolean(),
  invalidReason: z.string().max(256).nullish(),
  invalidMessage: z.string().max(4096).nullish(),
  payer: z.string().max(256).nullish(),
  extensions: record.nullish(),
})
export type VerifyResponse = z.output<typeof verifyResponse>

export const settleResponse = z.looseObject({
  success: z.boolean(),
  errorReason: z.string().max(256).nullish(),
  errorMessage: z.string().max(4096).nullish(),
  payer: z.string().max(256).nullish(),
  transaction: z.string().max(256),
  network: z.string().max(256),
  amount: z.string().max(80).nullish(),
  extensions: record.nullish(),
})
export type SettleResponse = z.output<typeof settleResponse>

export const supportedKind = z.looseObject({
  x402Version: z.number().int(),
  scheme: z.string().max(64),
  network: z.string().max(64),
  extra: record.nullish(),
})
export const supportedResponse = z.looseObject({
  kinds: z.array(supportedKind).max(1024),
  extensions: z.array(z.string()).default([]),
  signers: z.record(z.string(), z.array(z.string())).default({}),
})
export type SupportedResponse = z.output<typeof supportedResponse>

/** The version 2 form of a verify or settle request: payload and the offer it pays. */
export type Payment = { payload: PaymentPayload.PaymentPayload; requirements: PaymentRequirements.PaymentRequirements }

/**
 * What a resource server needs of a facilitator. `createFacilitator` (in-process) and
 * `httpFacilitator(url)` (remote) both provide it.
 */
export type FacilitatorClient = {
  verify(payment: Payment): Promise<VerifyResponse>
  settle(payment: Payment): Promise<SettleResponse>
  supported(): Promise<SupportedResponse>
  /**
   * Queues a payment for settlement and answers once it is durably queued, before it settles (an
   * x402kit extension, `POST /enqueue`). `success` means queued (`extensions.settlement.status` is
   * `queued`) or already settled; `maxUnsettled` caps, in atomic units, the value the payer may have
   * queued and unsettled to the payee, past which the answer is `payer_unsettled_cap`.
   */
  enqueue?(payment: Payment, options?: EnqueueOptions): Promise<SettleResponse>
}

export type EnqueueOptions = { maxUnsettled?: string | undefined }

/** The `extensions.settlement` of an answer to `enqueue` for a payment waiting in the queue. */
export const queuedExtension = { status: 'queued' } as const

/** Whether an answer to `enqueue` says the payment is queued, not yet settled. */
export function isQueued(response: SettleResponse): boolean {
  const settlement = response.extensions?.settlement as { status?: unknown } | undefined
  return response.success && settlement?.status === 'queued'
}

/**
 * The version 2 form of a verify or settle request of either version. `undefined` when a version 1
 * request names a network x402kit does not know.
 */
export function toPayment(request: VerifyRequest): Payment | undefined {
  if (request.x402Version === 2) return { payload: request.paymentPayload, requirements: request.paymentRequirements }
  const requirements = PaymentRequirements.fromV1(request.paymentRequirements)
  if (!requirements) return undefined
  return { requirements, payload: { x402Version: 2, accepted: requirements, payload: request.paymentPayload.payload } }
}
