/**
 * Grant: what one payment buys beyond a single call (DESIGN §2a `grants`): N calls, a time window, or
 * both. A resource server puts it in its offers' `extra.grant`; the facilitator, once the payment
 * settles, issues a credential on exactly those terms.
 */
import { z } from 'zod'
import { BaseError } from '../core/Errors.ts'
import * as RoutePattern from '../core/RoutePattern.ts'

/** A duration: seconds, or a string such as `'30s'`, `'15m'`, `'1h'`, `'7d'`. */
export type Window = number | `${number}${'s' | 'm' | 'h' | 'd'}`

/** A route's grant as configured: `{ uses: 3 }`, `{ window: '1h' }`, or `{ uses: 100, window: '1d' }`. */
export type GrantConfig = { uses: number; window?: Window } | { uses?: number; window: Window }

/** Longest window: a year. A credential lives at most as long as its issuer allows (7 days by default). */
export const maxWindowSeconds = 365 * 24 * 3600

/** `extra.grant` of an offer. */
export const schema = z.strictObject({
  /** The resource server the credential is for (its `aud`). */
  audience: z.string().min(1).max(512),
  /** The route key it is bought for (its `scope`). */
  scope: z.string().min(1).max(1024),
  uses: z.number().int().positive().max(1_000_000).optional(),
  windowSeconds: z.number().int().positive().max(maxWindowSeconds).optional(),
})
export type Grant = z.output<typeof schema>

const units = { s: 1, m: 60, h: 3600, d: 86_400 } as const

/** Seconds in a window; throws a `BaseError` (code `invalid_config`) for anything else. */
export function windowSeconds(window: Window): number {
  const match = typeof window === 'string' ? /^(\d{1,8})([smhd])$/.exec(window) : undefined
  const seconds = typeof window === 'number' ? window : match ? Number(match[1]) * units[match[2] as keyof typeof units] : Number.NaN
  if (!Number.isInteger(seconds) || seconds <= 0 || seconds > maxWindowSeconds)
    throw new BaseError(`The grant window ${JSON.stringify(window)} is not a duration up to a year.`, {
      code: 'invalid_config',
      hint: "Write seconds, or e.g. '30m', '1h', '7d'.",
    })
  return seconds
}

/** The wire grant of a route's grant config; throws a `BaseError` (code `invalid_config`) naming the fault. */
export function fromConfig(config: GrantConfig, route: { audience: string; scope: string }): Grant {
  if (typeof config !== 'object' || config === null || (config.uses === undefined && config.window === undefined))
    throw new BaseError('A grant needs uses, a window, or both.', {
      code: 'invalid_config',
      hint: "Write e.g. { uses: 3 } or { window: '1h' }.",
    })
  if (config.uses !== undefined && (!Number.isInteger(config.uses) || config.uses < 1 || config.uses > 1_000_000))
    throw new BaseError(`The grant's uses ${JSON.stringify(config.uses)} is not a whole number from 1 to 1,000,000.`, {
      code: 'invalid_config',
    })
  return {
    audience: route.audience,
    scope: route.scope,
    ...(config.uses !== undefined && { uses: config.uses }),
    ...(config.window !== undefined && { windowSeconds: windowSeconds(config.window) }),
  }
}

/**
 * The grant an offer asks for: `undefined` when none, else the grant or why it is unacceptable
 * (malformed, or a scope that is not a route key).
 */
export function of(extra: Record<string, unknown> | null | undefined): Grant | { error: string } | undefined {
  if (extra?.grant === undefined) return undefined
  const parsed = schema.safeParse(extra.grant)
  if (!parsed.success) return { error: `extra.grant is malformed at ${parsed.error.issues[0]?.path.join('.') || 'grant'}.` }
  try {
    RoutePattern.parse(parsed.data.scope)
  } catch (error) {
    return { error: `extra.grant.scope: ${(error as BaseError).shortMessage}` }
  }
  return parsed.data
}
