/**
 * The client's access credentials (DESIGN §3 step 5), per origin and scope: kept from a paid answer's
 * `PAYMENT-CREDENTIAL`, attached to later requests to the same origin that the scope covers, until
 * they expire or their uses run out. Uses are reserved before a request is sent, so concurrent
 * requests never count on more uses than are left.
 *
 * The client reads the token's claims without checking its signature: they only decide when to send
 * it back to the server that handed it out, which checks everything.
 */
import * as RoutePattern from '../core/RoutePattern.ts'
import * as Credential from '../credential/Credential.ts'

export type HeldCredential = {
  token: string
  origin: string
  /** The route key it was bought for, e.g. `'GET /feed/*'`. */
  scope: string
  pattern: RoutePattern.RoutePattern
  /** Milliseconds since the epoch. */
  expiresAt: number
  /** Uses not yet spent or reserved; `undefined`: any number until expiry. */
  usesLeft: number | undefined
}

export type CredentialCache = {
  /** Keeps the credential a server handed out with its answer to `url`; replaces one held for the same scope. */
  keep(url: string, token: string): HeldCredential | undefined
  /** A credential for the request, with one use reserved; `undefined` when none covers it. */
  take(request: Request): HeldCredential | undefined
  /** The server counted the reserved use (it served the request). */
  spent(credential: HeldCredential): void
  /** The server did not count the reserved use (the handler failed, and a failed answer costs nothing). */
  giveBack(credential: HeldCredential): void
  drop(credential: HeldCredential): void
}

const maxHeld = 256
/** A credential this close to expiry is not sent: it would likely arrive expired. */
const expiryMarginMs = 1_000

export function credentialCache(options: { now?: () => number } = {}): CredentialCache {
  const now = options.now ?? Date.now
  let held: HeldCredential[] = []
  // Uses reserved and not yet reported back, per credential: one used up is let go when none is out.
  const pending = new WeakMap<HeldCredential, number>()
  const settle = (credential: HeldCredential) => pending.set(credential, Math.max(0, (pending.get(credential) ?? 0) - 1))

  const drop = (credential: HeldCredential) => {
    held = held.filter((other) => other !== credential)
  }

  return {
    keep(url, token) {
      const claims = Credential.decode(token)
      if (!claims) return undefined
      let pattern: RoutePattern.RoutePattern
      try {
        pattern = RoutePattern.parse(claims.scope)
      } catch {
        return undefined
      }
      const origin = new URL(url).origin
      const credential = { token, origin, scope: claims.scope, pattern, expiresAt: claims.exp * 1000, usesLeft: claims.uses }
      held = [...held.filter((other) => other.origin !== origin || other.scope !== claims.scope), credential].slice(-maxHeld)
      return credential
    },
    take(request) {
      const url = new URL(request.url)
      const segments = segmentsOf(url.pathname)
      const time = now()
      held = held.filter((credential) => credential.expiresAt - expiryMarginMs > time)
      const credential = held.find(
        (candidate) =>
          candidate.origin === url.origin &&
          (candidate.usesLeft === undefined || candidate.usesLeft > 0) &&
          segments !== undefined &&
          RoutePattern.matches(candidate.pattern, request.method, segments),
      )
      if (credential?.usesLeft !== undefined) {
        credential.usesLeft--
        pending.set(credential, (pending.get(credential) ?? 0) + 1)
      }
      return credential
    },
    spent(credential) {
      settle(credential)
      if (credential.usesLeft === 0 && !pending.get(credential)) drop(credential)
    },
    giveBack(credential) {
      settle(credential)
      if (credential.usesLeft !== undefined) credential.usesLeft++
    },
    drop,
  }
}

/** The path as a server reads it: decoded, case folded. `undefined` when it does not decode. */
function segmentsOf(pathname: string): string[] | undefined {
  try {
    return RoutePattern.segmentsOf(decodeURIComponent(pathname).toLowerCase())
  } catch {
    return undefined
  }
}
