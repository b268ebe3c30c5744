/**
 * PaymentRequirements: one offer a resource server makes (x402 v2 §5.1; v1 form in §A).
 */
import { z } from 'zod'
import * as Network from './Network.ts'

export const maxStringLength = 512

export const text = z.string().min(1).max(maxStringLength)
export const atomicAmount = z.string().regex(/^\d{1,78}$/, 'must be a decimal string of atomic units')
export const caip2 = z.string().regex(/^[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}$/, 'must be a CAIP-2 network such as "eip155:8453"')
export const extra = z.record(z.string(), z.unknown()).nullish()
// 0 is what a resource server's claim, sweep and refund requests carry (`batch-settlement`): no payment waits on them.
export const timeoutSeconds = z
  .number()
  .int()
  .nonnegative()
  .max(7 * 24 * 3600)

/** The version 2 offer. Unknown fields are kept, so an offer echoed back compares equal. */
export const schema = z.looseObject({
  scheme: text,
  network: caip2,
  amount: atomicAmount,
  asset: text,
  payTo: text,
  maxTimeoutSeconds: timeoutSeconds,
  extra,
})
export type PaymentRequirements = z.output<typeof schema>

/** The version 1 offer: `maxAmountRequired`, a network name, and the resource described inline. */
export const schemaV1 = z.looseObject({
  scheme: text,
  network: text,
  maxAmountRequired: atomicAmount,
  resource: z.string().max(4096),
  description: z.string().max(4096),
  mimeType: z.string().max(maxStringLength).optional(),
  outputSchema: z.record(z.string(), z.unknown()).nullish(),
  payTo: text,
  maxTimeoutSeconds: timeoutSeconds,
  asset: text,
  extra,
})
export type PaymentRequirementsV1 = z.output<typeof schemaV1>

/**
 * Whether a payer's `accepted` offer is the one the server made: every field the payment depends on
 * must be identical (addresses compared case-insensitively, as EVM addresses are).
 */
export function matches(offer: PaymentRequirements, accepted: PaymentRequirements): boolean {
  return (
    offer.scheme === accepted.scheme &&
    offer.network === accepted.network &&
    offer.amount === accepted.amount &&
    offer.asset.toLowerCase() === accepted.asset.toLowerCase() &&
    offer.payTo.toLowerCase() === accepted.payTo.toLowerCase()
  )
}

/** The version 2 view of a version 1 offer; `undefined` when the network name is unknown. */
export function fromV1(offer: PaymentRequirementsV1): PaymentRequirements | undefined {
  const network = Network.find(offer.network)?.network
  if (!network) return undefined
  const { maxAmountRequired, resource, description, mimeType, outputSchema, ...rest } = offer
  return { ...rest, network, amount: maxAmountRequired }
}

/** The version 1 form of an offer for `resource`; `undefined` when version 1 has no name for its network. */
export function toV1(
  offer: PaymentRequirements,
  resource: { url: string; description?: string | null; mimeType?: string | null },
): PaymentRequirementsV1 | undefined {
  const v1Name = Network.find(offer.network)?.v1Name
  if (!v1Name) return undefined
  const { amount, network, ...rest } = offer
  return {
    ...rest,
    network: v1Name,
    maxAmountRequired: amount,
    resource: resource.url,
    description: resource.description ?? '',
    mimeType: resource.mimeType ?? 'application/json',
    outputSchema: null,
  }
}
