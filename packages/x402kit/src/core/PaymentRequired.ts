/**
 * PaymentRequired: the 402 answer (x402 v2 §5.2; HTTP transport: `PAYMENT-REQUIRED` header in
 * version 2, a JSON body in version 1).
 */
import { z } from 'zod'
import * as Base64Json from './Base64Json.ts'
import * as PaymentRequirements from './PaymentRequirements.ts'

export const resourceInfo = z.looseObject({
  url: z.string().min(1).max(4096),
  description: z.string().max(4096).nullish(),
  mimeType: z.string().max(PaymentRequirements.maxStringLength).nullish(),
})
export type ResourceInfo = z.output<typeof resourceInfo>

export const schema = z.looseObject({
  x402Version: z.literal(2),
  error: z.string().max(4096).nullish(),
  resource: resourceInfo,
  accepts: z.array(PaymentRequirements.schema).min(1).max(64),
  extensions: z.record(z.string(), z.unknown()).nullish(),
})
export type PaymentRequired = z.output<typeof schema>

export const schemaV1 = z.looseObject({
  x402Version: z.literal(1),
  error: z.string().max(4096).nullish(),
  accepts: z.array(PaymentRequirements.schemaV1).max(64),
})
export type PaymentRequiredV1 = z.output<typeof schemaV1>

export const anyVersion = z.discriminatedUnion('x402Version', [schema, schemaV1])

/** The `PAYMENT-REQUIRED` header value. */
export function encode(value: PaymentRequired): string {
  return Base64Json.encode(value)
}

/** Decodes a `PAYMENT-REQUIRED` header. */
export function decode(header: string): PaymentRequired {
  return Base64Json.decode(header, schema, { what: 'PAYMENT-REQUIRED header', maxLength: 64 * 1024 })
}

/**
 * The version 1 form of a 402 answer, sent as its JSON body so that version 1 clients can pay too.
 * Offers on networks version 1 has no name for are left out.
 */
export function toV1(value: PaymentRequired): PaymentRequiredV1 {
  const accepts = value.accepts.flatMap((offer) => PaymentRequirements.toV1(offer, value.resource) ?? [])
  return { x402Version: 1, error: value.error ?? 'Payment required', accepts }
}

/** The version 2 view of a version 1 answer, so one selection logic serves both versions. */
export function fromV1(value: PaymentRequiredV1): PaymentRequired {
  const first = value.accepts[0]
  const accepts = value.accepts.flatMap((offer) => PaymentRequirements.fromV1(offer) ?? [])
  return {
    x402Version: 2,
    error: value.error,
    resource: { url: first?.resource ?? '', description: first?.description, mimeType: first?.mimeType },
    accepts,
  }
}
