/**
 * The issuer's signing keys (RFC 7517 JWK, published as a JWK Set at `/.well-known/jwks.json`) and
 * their rotation: a new key signs from the moment it is added, and a retired key stays published
 * until every credential it can have signed has expired, which `maxTtlSeconds` bounds.
 */
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose'
import { BaseError } from '../core/Errors.ts'
import { type Algorithm, algorithms, type Signer } from './Credential.ts'

/** A signing key as kept (in memory, or persisted by the facilitator service). */
export type CredentialKey = {
  /** The RFC 7638 thumbprint of the public key. */
  kid: string
  alg: Algorithm
  privateJwk: JWK
  publicJwk: JWK
  /** Milliseconds since the epoch. */
  createdAt: number
  /** When it stopped signing; absent while it signs. */
  retiredAt?: number | undefined
}

export type JsonWebKeySet = { keys: JWK[] }

export type CredentialKeyRing = {
  /** The longest lifetime of a credential its keys sign; issuers clamp `exp` to it. */
  readonly maxTtlSeconds: number
  /** The key that signs now: the first key not retired (one is generated if there is none). */
  signer(): Promise<Signer>
  /** Retires the signing key(s) and makes `next` (default: a new key) the one that signs. */
  rotate(next?: CredentialKey): Promise<CredentialKey>
  /** The public keys to publish: every key that signs or signed a credential still unexpired. */
  jwks(): Promise<JsonWebKeySet>
  /** The keys kept, private parts included, for persisting; retired keys past their last credential are gone. */
  list(): CredentialKey[]
  /** Replaces the keys kept, e.g. with those another instance rotated to. */
  replace(keys: readonly CredentialKey[]): void
}

export type CredentialKeysOptions = {
  /** Keys to start with, in the order they were created (persisted ones). Default: one generated on first use. */
  keys?: readonly CredentialKey[]
  /** Algorithm of generated keys. Default `'EdDSA'` (Ed25519). */
  algorithm?: Algorithm
  /** Longest credential lifetime, which also bounds how long a retired key stays published. Default 7 days. */
  maxTtlSeconds?: number
  now?: () => number
}

/** After `retiredAt + maxTtl`, a retired key is kept this much longer: a credential signed just as it retired. */
const retirementGraceMs = 60_000

/**
 * Generates a signing key.
 *
 * @example
 * ```ts
 * import { generateCredentialKey } from 'x402kit/credential'
 * const key = await generateCredentialKey('ES256')
 * ```
 */
export async function generateCredentialKey(alg: Algorithm = 'EdDSA', now = Date.now()): Promise<CredentialKey> {
  if (!algorithms.includes(alg))
    throw new BaseError(`Credentials are signed with ${algorithms.join(' or ')}, not "${alg}".`, { code: 'invalid_config' })
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
  const publicJwk = await exportJWK(publicKey)
  const kid = await calculateJwkThumbprint(publicJwk)
  return {
    kid,
    alg,
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg },
    publicJwk: { ...publicJwk, kid, alg, use: 'sig' },
    createdAt: now,
  }
}

/**
 * A key ring for a credential issuer.
 *
 * @example
 * ```ts
 * import { credentialKeys } from 'x402kit/credential'
 * import { createFacilitator } from 'x402kit/facilitator'
 * const keys = credentialKeys({ maxTtlSeconds: 86_400 })
 * const facilitator = createFacilitator({ schemes, credentials: { issuer: 'https://facilitator.example', keys } })
 * await keys.rotate() // credentials signed before stay valid; the old public key is published until they expire
 * ```
 */
export function credentialKeys(options: CredentialKeysOptions = {}): CredentialKeyRing {
  const now = options.now ?? Date.now
  const algorithm = options.algorithm ?? 'EdDSA'
  const maxTtlSeconds = options.maxTtlSeconds ?? 7 * 24 * 3600
  if (!Number.isInteger(maxTtlSeconds) || maxTtlSeconds <= 0)
    throw new BaseError('maxTtlSeconds must be a positive whole number of seconds.', { code: 'invalid_config' })
  let keys: CredentialKey[] = [...(options.keys ?? [])]
  const imported = new Map<string, Promise<CryptoKey>>()
  let generating: Promise<CredentialKey> | undefined

  function kept(): CredentialKey[] {
    const cutoff = now() - maxTtlSeconds * 1000 - retirementGraceMs
    keys = keys.filter((key) => key.retiredAt === undefined || key.retiredAt > cutoff)
    return keys
  }

  async function current(): Promise<CredentialKey> {
    const active = kept().find((key) => key.retiredAt === undefined)
    if (active) return active
    // Concurrent first uses share one generated key.
    generating ??= generateCredentialKey(algorithm, now()).then((key) => {
      keys.push(key)
      generating = undefined
      return key
    })
    return generating
  }

  return {
    maxTtlSeconds,
    async signer() {
      const key = await current()
      let cryptoKey = imported.get(key.kid)
      if (!cryptoKey) {
        cryptoKey = importJWK(key.privateJwk, key.alg) as Promise<CryptoKey>
        imported.set(key.kid, cryptoKey)
      }
      return { kid: key.kid, alg: key.alg, key: await cryptoKey }
    },
    async rotate(next) {
      const key = next ?? (await generateCredentialKey(algorithm, now()))
      const at = now()
      keys = [...kept().map((old) => (old.retiredAt === undefined ? { ...old, retiredAt: at } : old)), key]
      return key
    },
    async jwks() {
      await current()
      return { keys: kept().map((key) => key.publicJwk) }
    },
    list: () => kept().map((key) => ({ ...key })),
    replace(next) {
      keys = [...next]
    },
  }
}
