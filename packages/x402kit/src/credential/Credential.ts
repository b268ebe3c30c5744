/**
 * Credential: the access credential a facilitator issues once a payment settles (DESIGN §3 step 5):
 * a JWT (RFC 7519) signed with EdDSA (Ed25519) or ES256, header `typ: x402-credential+jwt` and the
 * signing key's `kid`, bound to payer (`sub`), resource server (`aud`), route (`scope`), what was paid,
 * expiry, and optionally a number of uses.
 *
 * Verification refuses before any cryptography what cannot be one (size, form, `alg` outside the
 * allow list: `none` and `HS*` are never accepted), picks keys only from issuers it trusts, and maps
 * every failure to a stable reason code.
 */
import type { KeyObject } from 'node:crypto'
import { decodeJwt, type JWTPayload, SignJWT } from 'jose'
import { z } from 'zod'
import { Reason } from '../core/Errors.ts'
import { atomicAmount, caip2, text } from '../core/PaymentRequirements.ts'
import type { TrustedIssuers } from './Trust.ts'

/** The signature algorithms a credential may use. */
export const algorithms = ['EdDSA', 'ES256'] as const
export type Algorithm = (typeof algorithms)[number]

/** The JOSE `typ` of a credential, so no other JWT signed by the same key passes for one (RFC 8725 §3.11). */
export const tokenType = 'x402-credential+jwt'

/** Longest token read; a longer one is refused unparsed. Issued credentials are about 600 characters. */
export const maxLength = 4096

export const claimsSchema = z.looseObject({
  iss: z.string().min(1).max(512),
  aud: z.string().min(1).max(512),
  /** The payer. */
  sub: z.string().min(1).max(256),
  /** The route key the credential was bought for, such as `'GET /feed/*'`. */
  scope: z.string().min(1).max(1024),
  paid: z.looseObject({ scheme: text, network: caip2, asset: text, amount: atomicAmount, payTo: text, transaction: z.string().max(256) }),
  iat: z.number().int().nonnegative(),
  exp: z.number().int().positive(),
  jti: z.string().min(1).max(128),
  /** How many requests it serves; absent: any number until `exp`. */
  uses: z.number().int().positive().max(1_000_000).optional(),
})
export type Claims = z.output<typeof claimsSchema>

/** A private key ready to sign, as a key ring hands it out. */
export type Signer = { kid: string; alg: Algorithm; key: CryptoKey }

export type Verified = { ok: true; claims: Claims; kid: string } | { ok: false; reason: Reason; message: string }

/**
 * Signs a credential.
 *
 * @example
 * ```ts
 * import { Credential, credentialKeys } from 'x402kit/credential'
 * const keys = credentialKeys()
 * const token = await Credential.issue(await keys.signer(), claims)
 * ```
 */
export async function issue(signer: Signer, claims: Claims): Promise<string> {
  return new SignJWT(claims as JWTPayload).setProtectedHeader({ alg: signer.alg, kid: signer.kid, typ: tokenType }).sign(signer.key)
}

/**
 * Verifies a credential offline against the keys of the issuers a server trusts, for `audience`.
 * Scope, price and use count are the caller's to check against the request.
 *
 * @example
 * ```ts
 * import { Credential, trustedIssuers } from 'x402kit/credential'
 * const trust = trustedIssuers([{ issuer: 'https://facilitator.example' }])
 * const result = await Credential.verify(token, { trust, audience: 'https://api.example' })
 * if (!result.ok) console.log(result.reason) // e.g. 'credential_expired'
 * ```
 */
export async function verify(
  token: string,
  options: { trust: TrustedIssuers; audience: string; algorithms?: readonly Algorithm[]; now?: () => number },
): Promise<Verified> {
  const allowed: readonly string[] = options.algorithms ?? algorithms
  if (typeof token !== 'string' || token.length > maxLength)
    return refuse(Reason.credentialInvalid, `The credential is longer than ${maxLength} characters.`)
  const parts = token.split('.')
  let header: { alg?: unknown; kid?: unknown; typ?: unknown; [name: string]: unknown }
  let unverified: JWTPayload
  try {
    if (parts.length !== 3) throw new Error('not three parts')
    header = json(parts[0]!)
    unverified = json(parts[1]!)
  } catch {
    return refuse(Reason.credentialInvalid, 'The credential is not a JWT.')
  }
  // Checked here, not only by jose: `none` and HMAC (a public key used as a shared secret) never reach a key.
  if (typeof header.alg !== 'string' || !allowed.includes(header.alg))
    return refuse(
      Reason.credentialAlgorithm,
      `The credential is signed with "${String(header.alg).slice(0, 20)}"; allowed: ${allowed.join(', ')}.`,
    )
  const issuer = unverified.iss
  if (typeof issuer !== 'string' || !options.trust.trusts(issuer))
    return refuse(Reason.credentialUntrustedIssuer, 'The credential is from an issuer this server does not trust.')
  const key = await options.trust.key(issuer, { alg: header.alg, ...(typeof header.kid === 'string' && { kid: header.kid }) })
  if (!key) return refuse(Reason.credentialInvalid, 'The credential is signed by a key its issuer does not publish.')
  if (header.typ !== tokenType) return refuse(Reason.credentialInvalid, `The token's type is not "${tokenType}".`)
  // An extension the verifier would have to understand (RFC 7515 §4.1.11) is one it does not.
  if ('crit' in header || 'b64' in header) return refuse(Reason.credentialInvalid, 'The credential uses a JWS extension.')
  if (!(await signatureVerifies(token, key, header.alg as Algorithm).catch(() => false)))
    return refuse(Reason.credentialInvalid, 'The credential signature does not verify.')
  const payload = unverified
  const now = Math.floor((options.now?.() ?? Date.now()) / 1000)
  if (typeof payload.exp !== 'number') return refuse(Reason.credentialInvalid, 'The credential has no expiry.')
  if (payload.exp <= now) return refuse(Reason.credentialExpired, 'The credential has expired.')
  if (typeof payload.nbf === 'number' && payload.nbf > now) return refuse(Reason.credentialInvalid, 'The credential is not valid yet.')
  const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud]
  if (!audiences.includes(options.audience)) return refuse(Reason.credentialAudienceMismatch, 'The credential is for another server.')
  const claims = claimsSchema.safeParse(payload)
  if (!claims.success)
    return refuse(Reason.credentialInvalid, `The credential's claims do not match the schema at ${claims.error.issues[0]?.path.join('.')}.`)
  return { ok: true, claims: claims.data, kid: String(header.kid ?? '') }
}

/**
 * The claims of a credential without checking its signature: for a client keeping its credentials
 * (scope, expiry, uses), never for granting access. `undefined` when it is not a credential.
 */
export function decode(token: string): Claims | undefined {
  if (typeof token !== 'string' || token.length > maxLength) return undefined
  try {
    return claimsSchema.safeParse(decodeJwt(token)).data
  } catch {
    return undefined
  }
}

/**
 * Checks a JWS signature with Node's own crypto, synchronously: about twice as fast as WebCrypto for
 * Ed25519, which keeps a credential check under a tenth of a millisecond. Elsewhere (a browser, an
 * edge runtime) WebCrypto does it. The key must be of the header's algorithm, so no key is ever used
 * with an algorithm the token picked.
 */
async function signatureVerifies(token: string, key: CryptoKey, alg: Algorithm): Promise<boolean> {
  const dot = token.lastIndexOf('.')
  const data = encoder.encode(token.slice(0, dot))
  const signature = base64url(token.slice(dot + 1))
  if (signature.length !== 64) return false
  const node = await nodeCrypto()
  if (node) {
    const keyObject = keyObjects.get(key) ?? node.KeyObject.from(key)
    keyObjects.set(key, keyObject)
    if (alg === 'EdDSA') return keyObject.asymmetricKeyType === 'ed25519' && node.verify(null, data, keyObject, signature)
    return (
      keyObject.asymmetricKeyType === 'ec' &&
      keyObject.asymmetricKeyDetails?.namedCurve === 'prime256v1' &&
      node.verify('sha256', data, { key: keyObject, dsaEncoding: 'ieee-p1363' }, signature)
    )
  }
  const algorithm = alg === 'EdDSA' ? { name: 'Ed25519' } : { name: 'ECDSA', hash: 'SHA-256' }
  if (key.algorithm.name !== (alg === 'EdDSA' ? 'Ed25519' : 'ECDSA')) return false
  return crypto.subtle.verify(algorithm, key, signature, data)
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

function base64url(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error('not base64url')
  if (typeof Buffer === 'function') return new Uint8Array(Buffer.from(text, 'base64url'))
  const binary = atob(text.replaceAll('-', '+').replaceAll('_', '/'))
  return Uint8Array.from(binary, (char) => char.charCodeAt(0))
}

/** A JWS part: base64url of a UTF-8 JSON object. */
function json<value>(part: string): value {
  const parsed: unknown = JSON.parse(decoder.decode(base64url(part)))
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object')
  return parsed as value
}

const keyObjects = new WeakMap<CryptoKey, KeyObject>()
let nodeModule: Promise<typeof import('node:crypto') | undefined> | undefined
const nodeCrypto = () => (nodeModule ??= import('node:crypto').catch(() => undefined))

function refuse(reason: Reason, message: string): Verified {
  return { ok: false, reason, message }
}
