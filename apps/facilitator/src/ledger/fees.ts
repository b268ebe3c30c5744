/**
 * Fees the facilitator charges a merchant per settled payment: a fixed amount, a share in basis points,
 * or both, with an optional minimum; one default policy and per-merchant overrides. Exact bigint
 * arithmetic in the asset's atomic units throughout.
 */
import { BaseError } from 'x402kit'
import { z } from 'zod'

const atomic = z.string().regex(/^\d{1,78}$/, 'must be atomic units: a decimal integer string such as "1000"')

/** A fee policy as written in the configuration; `bps` or `fixed` (or both) must be given. */
export const feePolicySchema = z
  .strictObject({
    /** Share of the amount in basis points (1 bps = 0.01 %), an integer from 0 to 10000. */
    bps: z
      .number({ error: 'must be an integer of basis points from 0 to 10000' })
      .int('must be an integer of basis points from 0 to 10000')
      .min(0, 'must be an integer of basis points from 0 to 10000')
      .max(10_000, 'must be an integer of basis points from 0 to 10000')
      .optional(),
    /** A fixed fee in atomic units, added to the `bps` share. */
    fixed: atomic.optional(),
    /** The least fee in atomic units, however small the payment (still never above the amount). */
    minimum: atomic.optional(),
  })
  .refine((policy) => policy.bps !== undefined || policy.fixed !== undefined, 'needs bps, fixed, or both')

export type FeePolicy = z.output<typeof feePolicySchema>

const merchant = z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'must be an address: 0x and 40 hex digits')

/** The `fees` section of the configuration; merchant addresses are kept in lower case. */
export const feesSchema = z.strictObject({
  default: feePolicySchema.optional(),
  merchants: z
    .record(merchant, feePolicySchema)
    .transform((merchants, context) => {
      const lower: Record<string, FeePolicy> = {}
      for (const [address, policy] of Object.entries(merchants)) {
        const key = address.toLowerCase()
        if (key in lower) context.addIssue({ code: 'custom', path: [address], message: 'is listed twice (addresses differ only in case)' })
        lower[key] = policy
      }
      return lower
    })
    .optional(),
})

export type Fees = z.output<typeof feesSchema>

export class FeeError extends BaseError {
  override name = 'FeeError'
  constructor(shortMessage: string) {
    super(shortMessage, { code: 'invalid_fee', hint: 'A policy is { bps } (integer 0–10000), { fixed } (atomic units), or both.' })
  }
}

/**
 * The fee on `amount` under `policy`: `fixed` plus `amount × bps / 10000` rounded half up (to the
 * nearest atomic unit, a half going up), raised to `minimum`, and never above `amount`. No policy, no fee.
 *
 * @example
 * ```ts
 * import { feeFor } from '@x402kit/facilitator'
 * feeFor(1_000_000n, { bps: 250 }) // 25000n
 * feeFor(1_000_000n, { bps: 100, fixed: '10000' }) // 20000n
 * feeFor(5n, { fixed: '10000' }) // 5n: capped at the amount
 * ```
 */
export function feeFor(amount: bigint, policy: FeePolicy | undefined): bigint {
  if (amount < 0n) throw new FeeError(`A fee is taken on an amount of 0 or more, not ${amount}.`)
  if (!policy) return 0n
  const bps = policy.bps ?? 0
  if (!Number.isInteger(bps) || bps < 0 || bps > 10_000) throw new FeeError(`Invalid fee of ${bps} basis points.`)
  const share = (amount * BigInt(bps) + 5_000n) / 10_000n
  let fee = atomicUnits(policy.fixed, 'fixed') + share
  const minimum = atomicUnits(policy.minimum, 'minimum')
  if (fee < minimum) fee = minimum
  return fee > amount ? amount : fee
}

/**
 * The policy for a merchant: its own if it has one (replacing the default whole), else the default.
 *
 * @example
 * ```ts
 * import { feeFor, loadConfig, policyFor } from '@x402kit/facilitator'
 * const { fees } = loadConfig()
 * const fee = feeFor(1_000_000n, policyFor(fees, '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'))
 * ```
 */
export function policyFor(fees: Fees | undefined, merchant: string): FeePolicy | undefined {
  return fees?.merchants?.[merchant.toLowerCase()] ?? fees?.default
}

function atomicUnits(value: string | undefined, name: string): bigint {
  if (value === undefined) return 0n
  if (!/^\d{1,78}$/.test(value)) throw new FeeError(`Invalid ${name} fee "${String(value).slice(0, 80)}": not atomic units.`)
  return BigInt(value)
}
