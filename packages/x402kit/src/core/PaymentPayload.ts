/**
 * PaymentPayload: what a client sends to pay (x402 v2 §5.3; `PAYMENT-SIGNATURE` header in version 2,
 * `X-PAYMENT` in version 1).
 */
import { z } from 'zod'
import * as Base64Json from './Base64Json.ts'
import * as Network from './Network.ts'
import { resourceInfo } from './PaymentRequired.ts'
import * as PaymentRequirements from './PaymentRequirements.ts'

const schemePayload = z.record(z.string(), z.unknown())

export const schema = z.looseObject({
  x402Version: z.literal(2),
  resource: resourceInfo.nullish(),
  accepted: PaymentRequirements.schema,
  payload: schemePayload,
  extensions: z.record(z.string(), z.unknown()).nullish(),
})
export type PaymentPayload = z.output<typeof schema>

export const schemaV1 = z.looseObject({
  x402Version: z.literal(1),
  scheme: PaymentRequirements.text,
  network: PaymentRequirements.text,
  payload: schemePayload,
})
export type PaymentPayloadV1 = z.output<typeof schemaV1>

export const anyVersion = z.discriminatedUnion('x402Version', [schema, schemaV1])
export type AnyPaymentPayload = z.output<typeof anyVersion>

/** The header value (`PAYMENT-SIGNATURE`, or `X-PAYMENT` for version 1). */
export function encode(value: AnyPaymentPayload): string {
  return Base64Json.encode(value)
}

/** Decodes a payment header of either version. */
export function decode(header: string, options: { maxLength?: number } = {}): AnyPaymentPayload {
  return Base64Json.decode(header, anyVersion, { what: 'payment header', ...options })
}

/**
 * The version 2 view of a payload: a version 1 payload names only scheme and network, so the offer
 * it pays is found among `offers` (version 2 offers).
 */
export function toV2(value: AnyPaymentPayload, offers: readonly PaymentRequirements.PaymentRequirements[]): PaymentPayload | undefined {
  if (value.x402Version === 2) return value
  const network = Network.find(value.network)?.network
  const accepted = offers.find((offer) => offer.scheme === value.scheme && offer.network === network)
  if (!accepted) return undefined
  return { x402Version: 2, accepted, payload: value.payload }
}
