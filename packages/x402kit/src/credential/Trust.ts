/**
 * The issuers a resource server trusts and their public keys (RFC 7517 JWK Sets), fetched once and
 * cached. A key id not in the cache triggers one refresh, at most once per `refreshCooldownMs` per
 * issuer, so tokens with made-up key ids cannot make the server fetch per request. A stale cache is
 * refreshed in the background while its keys keep serving.
 */

import { createLocalJWKSet, type JWK, type JWTVerifyGetKey } from 'jose'
import { z } from 'zod'
import { readBody } from '../core/Body.ts'
import { BaseError } from '../core/Errors.ts'
import type { JsonWebKeySet } from './Keys.ts'

export type TrustedIssuer = {
  /** The `iss` of its credentials: its public URL or another identifier. */
  issuer: string
  /** Where its keys are published. Default `issuer + '/.well-known/jwks.json'`. */
  jwksUrl?: string
  /** Its keys, given here instead of fetched. */
  jwks?: JsonWebKeySet
}

export type TrustedIssuersOptions = {
  fetch?: typeof globalThis.fetch
  /** Least time between two fetches of one issuer's keys. Default 30 s. */
  refreshCooldownMs?: number
  /** Age after which keys are refreshed in the background. Default 10 minutes. */
  maxAgeMs?: number
  /** Deadline of a fetch, body included. Default 5 s. */
  timeoutMs?: number
  /** Largest key set read. Default 64 KiB. */
  maxBytes?: number
  now?: () => number
}

export type TrustedIssuers = {
  trusts(issuer: string): boolean
  /** The public key a token header names, from its issuer's keys; `undefined` when the issuer publishes none such. */
  key(issuer: string, header: { alg?: string | undefined; kid?: string | undefined }): Promise<CryptoKey | undefined>
  /** Grows whenever a key set changes: a cache of verified credentials older than it is stale. */
  readonly version: number
  /** How often each issuer's keys were fetched, by issuer. */
  readonly fetches: Readonly<Record<string, number>>
}

// Public signing keys only: a set carrying a private part (`d`) or a symmetric key is refused.
const jwkSchema = z.looseObject({ kty: z.enum(['OKP', 'EC']), kid: z.string().max(256).optional(), d: z.never().optional() })
const jwksSchema = z.object({ keys: z.array(jwkSchema).max(64) })

type State = {
  url: string | undefined
  select: JWTVerifyGetKey | undefined
  kids: string
  fetchedAt: number
  attemptedAt: number
  pending: Promise<void> | undefined
}

/**
 * The issuers a resource server accepts credentials from.
 *
 * @example
 * ```ts
 * import { trustedIssuers } from 'x402kit/credential'
 * const trust = trustedIssuers([{ issuer: 'https://facilitator.example' }])
 * ```
 */
export function trustedIssuers(trust: readonly TrustedIssuer[], options: TrustedIssuersOptions = {}): TrustedIssuers {
  const now = options.now ?? Date.now
  const cooldownMs = options.refreshCooldownMs ?? 30_000
  const maxAgeMs = options.maxAgeMs ?? 600_000
  const timeoutMs = options.timeoutMs ?? 5_000
  const maxBytes = options.maxBytes ?? 64 * 1024
  const fetch = options.fetch ?? globalThis.fetch
  const states = new Map<string, State>()
  const fetches: Record<string, number> = {}
  let version = 0

  for (const entry of trust) {
    if (typeof entry?.issuer !== 'string' || entry.issuer.length === 0)
      throw new BaseError('A trusted issuer needs an `issuer`.', { code: 'invalid_config' })
    const url = entry.jwks ? undefined : (entry.jwksUrl ?? `${entry.issuer.replace(/\/+$/, '')}/.well-known/jwks.json`)
    if (url !== undefined && (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)))
      throw new BaseError(`The key set URL of issuer "${entry.issuer.slice(0, 200)}" is not an http(s) URL.`, {
        code: 'invalid_config',
        hint: 'Give jwksUrl, or an issuer that is the facilitator’s URL.',
      })
    const state: State = { url, select: undefined, kids: '', fetchedAt: 0, attemptedAt: -Infinity, pending: undefined }
    if (entry.jwks) load(state, jwksSchema.parse(entry.jwks))
    states.set(entry.issuer, state)
  }

  function load(state: State, jwks: z.output<typeof jwksSchema>) {
    const kids = jwks.keys.map((key) => key.kid ?? '').join(' ')
    if (kids !== state.kids) version++
    state.kids = kids
    state.select = createLocalJWKSet({ keys: jwks.keys as JWK[] })
    state.fetchedAt = now()
  }

  function refresh(issuer: string, state: State): Promise<void> {
    if (!state.url) return Promise.resolve()
    state.pending ??= (async () => {
      state.attemptedAt = now()
      fetches[issuer] = (fetches[issuer] ?? 0) + 1
      try {
        load(state, jwksSchema.parse(await fetchJson(fetch, state.url!, timeoutMs, maxBytes)))
      } catch {
        // The keys held (if any) keep serving; the next attempt waits out the cooldown.
      } finally {
        state.pending = undefined
      }
    })()
    return state.pending
  }

  async function select(state: State, header: { alg?: string | undefined; kid?: string | undefined }): Promise<CryptoKey | undefined> {
    if (!state.select) return undefined
    try {
      return (await state.select(header as Parameters<JWTVerifyGetKey>[0], undefined as never)) as CryptoKey
    } catch {
      return undefined
    }
  }

  return {
    trusts: (issuer) => states.has(issuer),
    async key(issuer, header) {
      const state = states.get(issuer)
      if (!state) return undefined
      const coolingDown = now() - state.attemptedAt < cooldownMs
      if (!state.select) {
        if (!coolingDown) await refresh(issuer, state)
        else if (state.pending) await state.pending
      } else if (now() - state.fetchedAt > maxAgeMs && !coolingDown) void refresh(issuer, state)
      const found = await select(state, header)
      if (found) return found
      // An unknown key id: a refresh under way may bring it; else one refresh per cooldown.
      if (state.pending) await state.pending
      else if (now() - state.attemptedAt >= cooldownMs) await refresh(issuer, state)
      else return undefined
      return select(state, header)
    },
    get version() {
      return version
    },
    fetches,
  }
}

async function fetchJson(fetch: typeof globalThis.fetch, url: string, timeoutMs: number, maxBytes: number): Promise<unknown> {
  const response = await fetch(url, { headers: { accept: 'application/json' }, redirect: 'error', signal: AbortSignal.timeout(timeoutMs) })
  if (!response.ok) {
    await response.body?.cancel()
    throw new Error(`status ${response.status}`)
  }
  return JSON.parse(await readBody(response.body, maxBytes, response.headers.get('content-length')))
}
