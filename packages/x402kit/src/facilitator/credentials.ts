/**
 * Access credentials from the facilitator (DESIGN §3 step 5): an offer whose `extra.grant` asks for
 * one is checked before any money moves, and once its payment settles, a credential on exactly the
 * grant's terms goes into the settle response's `extensions.credential`. The response is what the
 * settlement record keeps, so a repeated settle answers the same credential instead of minting another.
 */

import { BaseError } from '../core/Errors.ts'
import type { Payment, SettleResponse } from '../core/Facilitator.ts'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import * as Credential from '../credential/Credential.ts'
import * as Grant from '../credential/Grant.ts'
import { type CredentialKeyRing, credentialKeys, type JsonWebKeySet } from '../credential/Keys.ts'

export type CredentialIssuerConfig = {
  /** This facilitator's identity in credentials (`iss`): best its public URL, under which `/.well-known/jwks.json` is served. */
  issuer: string
  /** Signing keys. Default `credentialKeys()`: one Ed25519 key, generated on first use, gone on restart. */
  keys?: CredentialKeyRing
  /** Lifetime of a credential whose grant has uses but no window. Default 1 hour. */
  ttlSeconds?: number
}

/** `extensions.credential` of a settle response. */
export type IssuedCredential = { token: string; expiresAt: string }

export type CredentialIssuer = {
  /** Why an offer's grant cannot be honoured, or `undefined` when it can (or there is none). */
  refusal(requirements: PaymentRequirements): string | undefined
  /** The settle response with a credential added, when the offer asks for one. */
  issue(payment: Payment, result: SettleResponse): Promise<SettleResponse>
  /** The public keys, when this facilitator issues credentials. */
  jwks: (() => Promise<JsonWebKeySet>) | undefined
}

export function credentialIssuer(
  config: CredentialIssuerConfig | undefined,
  options: { now(): number; onError(error: unknown): void },
): CredentialIssuer {
  if (!config)
    return {
      refusal: (requirements) =>
        requirements.extra?.grant === undefined ? undefined : 'This facilitator does not issue access credentials (extra.grant).',
      issue: async (_, result) => result,
      jwks: undefined,
    }
  if (typeof config.issuer !== 'string' || config.issuer.length === 0 || config.issuer.length > 512)
    throw new BaseError('credentials.issuer must be this facilitator’s public URL or identifier.', { code: 'invalid_config' })
  const ttlSeconds = config.ttlSeconds ?? 3600
  if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0)
    throw new BaseError('credentials.ttlSeconds must be a positive whole number.', { code: 'invalid_config' })
  const keys = config.keys ?? credentialKeys()

  return {
    refusal(requirements) {
      const grant = Grant.of(requirements.extra)
      return grant && 'error' in grant ? grant.error : undefined
    },
    async issue({ requirements }, result) {
      const grant = Grant.of(requirements.extra)
      if (!grant || 'error' in grant) return result
      const iat = Math.floor(options.now() / 1000)
      const exp = iat + Math.min(grant.windowSeconds ?? ttlSeconds, keys.maxTtlSeconds)
      const claims: Credential.Claims = {
        iss: config.issuer,
        aud: grant.audience,
        sub: result.payer || 'unknown',
        scope: grant.scope,
        paid: {
          scheme: requirements.scheme,
          network: requirements.network,
          asset: requirements.asset,
          amount: result.amount ?? requirements.amount,
          payTo: requirements.payTo,
          transaction: result.transaction,
        },
        iat,
        exp,
        jti: crypto.randomUUID(),
        ...(grant.uses !== undefined && { uses: grant.uses }),
      }
      let token: string
      try {
        token = await Credential.issue(await keys.signer(), claims)
      } catch (error) {
        // The money has moved: the settlement is answered as it is, only without a credential.
        options.onError(error)
        return result
      }
      const credential: IssuedCredential = { token, expiresAt: new Date(exp * 1000).toISOString() }
      return { ...result, extensions: { ...result.extensions, credential } }
    },
    jwks: () => keys.jwks(),
  }
}
