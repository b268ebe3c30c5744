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
import { decodeJwt, decodeProtectedHeader, errors, type JWTPayload, jwtVerify, SignJWT } from 'jose'
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
  let header: ReturnType<typeof decodeProtectedHeader>
  let unverified: JWTPayload
  try {
    header = decodeProtectedHeader(token)
    unverified = decodeJwt(token)
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
  const key = await options.trust.key(issuer, header)
  if (!key) return refuse(Reason.credentialInvalid, 'The credential is signed by a key its issuer does not publish.')
  let payload: JWTPayload
  try {
    ;({ payload } = await jwtVerify(token, key, {
      algorithms: [...allowed],
      issuer,
      audience: options.audience,
      typ: tokenType,
      requiredClaims: ['exp', 'iat', 'jti', 'sub'],
      ...(options.now && { currentDate: new Date(options.now()) }),
    }))
  } catch (error) {
    return refuse(...reasonOf(error))
  }
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

function reasonOf(error: unknown): [Reason, string] {
  if (error instanceof errors.JWTExpired) return [Reason.credentialExpired, 'The credential has expired.']
  if (error instanceof errors.JOSEAlgNotAllowed)
    return [Reason.credentialAlgorithm, 'The credential is signed with an algorithm not allowed.']
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === 'aud') return [Reason.credentialAudienceMismatch, 'The credential is for another server.']
    if (error.claim === 'iss') return [Reason.credentialUntrustedIssuer, 'The credential is from an issuer this server does not trust.']
    return [Reason.credentialInvalid, `The credential's "${error.claim}" is not acceptable: ${error.reason}.`]
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) return [Reason.credentialInvalid, 'The credential signature does not verify.']
  return [Reason.credentialInvalid, 'The credential could not be verified.']
}

function refuse(reason: Reason, message: string): Verified {
  return { ok: false, reason, message }
}
