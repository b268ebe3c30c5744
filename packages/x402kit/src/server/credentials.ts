/**
 * The paywall's credential path (DESIGN §3 step 5): a request carrying `PAYMENT-CREDENTIAL` on a route
 * that grants access is served after offline checks, with no facilitator call and no chain call:
 *
 * 1. the signature, by an issuer this server trusts, for this server (`aud`), not expired;
 * 2. the scope covers the request: its method, and every reading of the path (the same readings routes
 *    are matched on, but all must match here: a credential is never stretched over an ambiguous path);
 * 3. the payment it records covers this route's price (network, asset, payTo, amount) on no better
 *    terms than the route sells (uses, window), so a credential minted by calling the facilitator
 *    directly with a cheaper offer or a wider grant buys nothing;
 * 4. for an N-use credential, one use counted before the handler runs.
 *
 * Verified credentials are cached by token (bounded), so a repeat costs a map lookup and the checks
 * that depend on the request; expiry is checked every time, and a change of any issuer's keys empties it.
 */
import { Reason } from '../core/Errors.ts'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import * as RoutePattern from '../core/RoutePattern.ts'
import * as Credential from '../credential/Credential.ts'
import type { Grant } from '../credential/Grant.ts'
import { type TrustedIssuer, type TrustedIssuersOptions, trustedIssuers } from '../credential/Trust.ts'
import { memoryUseStore, type UseStore } from './UseStore.ts'

export type CredentialsConfig = {
  /** This server's identity in credentials (their `aud`), e.g. its public origin `https://api.example.com`. */
  audience: string
  /** The credential issuers (facilitators) this server accepts, each with where its keys are published. */
  trust: readonly TrustedIssuer[]
  /** Counts uses of N-use credentials. Default `memoryUseStore()`; instances behind one balancer share one. */
  store?: UseStore
  /** How issuers' keys are fetched and cached. */
  keys?: TrustedIssuersOptions
}

export type Admission = { ok: true; claims: Credential.Claims; release(): Promise<void> } | { ok: false; reason: Reason; message: string }

export type CredentialRequest = {
  method: string
  /** The path readings the route was found with. */
  readings: readonly string[]
  /** The route's grant; `undefined`: the route sells single calls only. */
  grant: Grant | undefined
  offers: readonly PaymentRequirements[]
}

export type CredentialGate = {
  /**
   * Checks a credential for a request. With `consume`, an N-use credential's use is counted, and
   * `release` gives it back.
   */
  admit(token: string, request: CredentialRequest, options?: { consume?: boolean }): Promise<Admission>
}

type Entry = { claims: Credential.Claims; scope: RoutePattern.RoutePattern | undefined; version: number }

const maxCached = 10_000

export function credentialGate(config: CredentialsConfig, options: { now?: () => number } = {}): CredentialGate {
  const now = options.now ?? Date.now
  const trust = trustedIssuers(config.trust, { now, ...config.keys })
  const store = config.store ?? memoryUseStore({ now })
  const verified = new Map<string, Entry>()

  async function verify(token: string): Promise<Entry | Extract<Admission, { ok: false }>> {
    const cached = verified.get(token)
    if (cached && cached.version === trust.version) return cached
    const version = trust.version
    const result = await Credential.verify(token, { trust, audience: config.audience, now })
    if (!result.ok) return result
    let scope: RoutePattern.RoutePattern | undefined
    try {
      scope = RoutePattern.parse(result.claims.scope)
    } catch {
      scope = undefined
    }
    const entry = { claims: result.claims, scope, version }
    if (verified.size >= maxCached) verified.delete(verified.keys().next().value!)
    verified.set(token, entry)
    return entry
  }

  return {
    async admit(token, request, { consume = true } = {}) {
      const entry = await verify(token)
      if ('ok' in entry) return entry
      const { claims, scope } = entry
      if (claims.exp <= Math.floor(now() / 1000)) return refuse(Reason.credentialExpired, 'The credential has expired.')
      const outOfScope = scopeRefusal(claims, scope, request)
      if (outOfScope) return refuse(Reason.credentialScopeMismatch, outOfScope)
      if (claims.uses === undefined || !consume) return { ok: true, claims, release: async () => {} }
      // Issuer and id together: two issuers' ids never share a count.
      const id = `${claims.iss} ${claims.jti}`
      if (!(await store.consume(id, claims.uses, claims.exp * 1000)))
        return refuse(Reason.credentialUsesExhausted, `The credential's ${claims.uses} uses are spent.`)
      let released = false
      return {
        ok: true,
        claims,
        release: async () => {
          if (released) return
          released = true
          await store.release(id)
        },
      }
    },
  }
}

function scopeRefusal(
  claims: Credential.Claims,
  scope: RoutePattern.RoutePattern | undefined,
  request: CredentialRequest,
): string | undefined {
  const { grant } = request
  if (!grant) return 'This route sells single calls only; pay per request.'
  if (!scope) return 'The credential scope is not a route key.'
  const method = request.method.toUpperCase()
  const covered =
    RoutePattern.coversMethod(scope.method, method) &&
    request.readings.every((reading) => RoutePattern.matchSegments(scope.pattern, RoutePattern.segmentsOf(reading)))
  if (!covered) return `The credential is for ${claims.scope.slice(0, 200)}, which does not cover this request.`
  const { paid } = claims
  const priced = request.offers.some(
    (offer) =>
      offer.network === paid.network &&
      same(offer.asset, paid.asset) &&
      same(offer.payTo, paid.payTo) &&
      BigInt(paid.amount) >= BigInt(offer.amount),
  )
  if (!priced) return 'The payment the credential records does not cover the price of this route.'
  if (grant.uses !== undefined && (claims.uses === undefined || claims.uses > grant.uses))
    return `This route grants at most ${grant.uses} uses per payment.`
  if (grant.windowSeconds !== undefined && claims.exp - claims.iat > grant.windowSeconds)
    return `This route grants at most ${grant.windowSeconds} s per payment.`
  return undefined
}

// EVM addresses compare case-insensitively; other chains' addresses (base58) do not.
const hex = /^0x[0-9a-fA-F]*$/
const same = (a: string, b: string) => a === b || (hex.test(a) && hex.test(b) && a.toLowerCase() === b.toLowerCase())

function refuse(reason: Reason, message: string): Extract<Admission, { ok: false }> {
  return { ok: false, reason, message }
}
