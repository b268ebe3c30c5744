export type { Algorithm, Claims, Signer, Verified } from './Credential.ts'
export * as Credential from './Credential.ts'
export type { GrantConfig, Window } from './Grant.ts'
export * as Grant from './Grant.ts'
export {
  type CredentialKey,
  type CredentialKeyRing,
  type CredentialKeysOptions,
  credentialKeys,
  generateCredentialKey,
  type JsonWebKeySet,
} from './Keys.ts'
export { type TrustedIssuer, type TrustedIssuers, type TrustedIssuersOptions, trustedIssuers } from './Trust.ts'
