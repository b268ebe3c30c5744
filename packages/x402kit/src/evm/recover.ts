/**
 * Signer recovery for secp256k1 ECDSA signatures as Ethereum checks them (`ecrecover`, with the
 * low-s rule of EIP-2 that OpenZeppelin's `ECDSA` and Circle's `ECRecover` enforce on chain).
 *
 * The native `secp256k1` binding (libsecp256k1, prebuilt in its npm package) recovers ~20x faster
 * than pure JS; where it does not load, `@noble/curves` does the same work.
 */
import { createRequire } from 'node:module'
import { secp256k1 } from '@noble/curves/secp256k1.js'
import { type Address, getAddress, type Hex, hexToBytes, keccak256 } from 'viem'
import { BaseError } from '../core/Errors.ts'

/** Which implementation recovers public keys. */
export type Backend = 'native' | 'js'

type RecoverPublicKey = (signature: Uint8Array, recovery: number, digest: Uint8Array) => Uint8Array

const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
const halfN = n >> 1n
/** `halfN` as 32 big-endian bytes: `s` is compared bytewise, without building a bigint per signature. */
const halfNBytes = Buffer.from(halfN.toString(16).padStart(64, '0'), 'hex')

const js: RecoverPublicKey = (signature, recovery, digest) =>
  secp256k1.Signature.fromBytes(signature, 'compact').addRecoveryBit(recovery).recoverPublicKey(digest).toBytes(false)

const require = createRequire(import.meta.url)

// `secp256k1/bindings.js`, not the package main: the main silently falls back to the slow
// `elliptic` library when the binary does not load, and we would rather fall back to noble.
function loadNative(): { recover: RecoverPublicKey; path: string } | undefined {
  try {
    const path = require.resolve('secp256k1/bindings.js')
    const binding = require(path) as {
      ecdsaRecover(signature: Uint8Array, recovery: number, digest: Uint8Array, compressed: boolean): Uint8Array
    }
    return { recover: (signature, recovery, digest) => binding.ecdsaRecover(signature, recovery, digest, false), path }
  } catch {
    return undefined
  }
}

const loaded = loadNative()
const native = loaded?.recover

/** Where the native binding loads from, for worker threads that load it themselves; `undefined` where it does not load. */
export const nativeBindingPath: string | undefined = loaded?.path

/** The backend `recoverAddress` uses: `'native'` where the binding loaded, else `'js'`. */
export const backend: Backend = native ? 'native' : 'js'

export class InvalidSignatureError extends BaseError {
  override name = 'InvalidSignatureError'
  constructor(details: string, cause?: unknown) {
    super('The signature is not a valid secp256k1 signature.', { code: 'invalid_signature', details, cause })
  }
}

/**
 * The address whose key signed `digest`. Throws `InvalidSignatureError` for a signature that is not
 * 65 bytes `r ‖ s ‖ v`, has `v` outside {27, 28, 0, 1}, has a high `s` (the malleated twin of a valid
 * signature, which the chain refuses), or does not recover to a point.
 *
 * @example
 * ```ts
 * import { hashTypedData } from 'viem'
 * import { recoverAddress } from 'x402kit/evm'
 * const signer = recoverAddress(hashTypedData(typedData), signature)
 * ```
 */
export function recoverAddress(digest: Hex | Uint8Array, signature: Hex | Uint8Array, options: { backend?: Backend } = {}): Address {
  const hash = typeof digest === 'string' ? hexToBytes(digest) : digest
  if (hash.length !== 32) throw new BaseError(`A digest is 32 bytes, got ${hash.length}.`, { code: 'invalid_digest' })
  const bytes = typeof signature === 'string' ? toBytes(signature) : signature
  const { compact, recovery } = signatureParts(bytes)
  const recover = options.backend === 'js' ? js : options.backend === 'native' ? requireNative() : (native ?? js)
  let publicKey: Uint8Array
  try {
    publicKey = recover(compact, recovery, hash)
  } catch (error) {
    throw new InvalidSignatureError('No public key recovers from this signature.', error)
  }
  return addressOfKey(publicKey)
}

/** The address of an uncompressed public key (65 bytes): the last 20 bytes of the Keccak hash of its point. */
export function addressOfKey(publicKey: Uint8Array): Address {
  return getAddress(`0x${keccak256(publicKey.subarray(1)).slice(-40)}`)
}

/**
 * The uncompressed public key (65 bytes) whose key signed `digest`, under the same rules as
 * `recoverAddress`: for callers that compare against a key they already hold, skipping the address hash.
 *
 * @example
 * ```ts
 * import { recoverPublicKey } from 'x402kit/evm'
 * const key = recoverPublicKey(digest, signatureBytes)
 * ```
 */
export function recoverPublicKey(digest: Uint8Array, signature: Uint8Array): Uint8Array {
  if (digest.length !== 32) throw new BaseError(`A digest is 32 bytes, got ${digest.length}.`, { code: 'invalid_digest' })
  const { compact, recovery } = signatureParts(signature)
  return recoverFromParts(digest, compact, recovery)
}

/** `recoverPublicKey` for a signature already split and checked by `signatureParts`. */
export function recoverFromParts(digest: Uint8Array, compact: Uint8Array, recovery: number): Uint8Array {
  try {
    return (native ?? js)(compact, recovery, digest)
  } catch (error) {
    throw new InvalidSignatureError('No public key recovers from this signature.', error)
  }
}

/**
 * A 65-byte `r ‖ s ‖ v` signature as the 64 bytes and recovery id a recovery takes, under the rules
 * the chain applies: `v` in {27, 28, 0, 1} and `s` in the lower half of the curve order.
 */
export function signatureParts(signature: Uint8Array): { compact: Uint8Array; recovery: number } {
  if (signature.length !== 65) throw new InvalidSignatureError(`A signature is 65 bytes, got ${signature.length}.`)
  const v = signature[64]!
  if (v !== 27 && v !== 28 && v !== 0 && v !== 1) throw new InvalidSignatureError(`v is ${v}; it must be 27, 28, 0 or 1.`)
  if (Buffer.compare(signature.subarray(32, 64), halfNBytes) > 0)
    throw new InvalidSignatureError('s is in the upper half of the curve order (a malleated signature).')
  return { compact: signature.subarray(0, 64), recovery: v >= 27 ? v - 27 : v }
}

function requireNative(): RecoverPublicKey {
  if (!native) throw new BaseError('The native secp256k1 binding did not load.', { hint: 'Use the "js" backend.' })
  return native
}

function toBytes(hex: string): Uint8Array {
  if (!/^0x([0-9a-fA-F]{2})*$/.test(hex)) throw new InvalidSignatureError('The signature is not hex of whole bytes.')
  return hexToBytes(hex as Hex)
}
