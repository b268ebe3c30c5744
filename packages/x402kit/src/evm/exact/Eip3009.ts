/**
 * EIP-3009 `transferWithAuthorization` as the `exact` scheme uses it on EVM
 * (specs/schemes/exact/scheme_exact_evm.md): the payload schema and the EIP-712 typed data.
 */
import {
  type Address,
  domainSeparator,
  getAddress,
  type Hex,
  hexToBytes,
  keccak256,
  numberToHex,
  stringToBytes,
  type TypedDataDefinition,
} from 'viem'
import { z } from 'zod'

const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 20-byte hex address')
const uint = z.string().regex(/^\d{1,78}$/, 'must be a decimal string')

export const authorization = z.object({
  from: address,
  to: address,
  value: uint,
  validAfter: uint,
  validBefore: uint,
  nonce: z.string().regex(/^0x[0-9a-fA-F]{64}$/, 'must be 32 bytes of hex'),
})
export type Authorization = z.output<typeof authorization>

/** The `payload` of an `exact` EIP-3009 payment. Signatures may be long (ERC-1271, ERC-6492). */
export const payload = z.object({
  signature: z
    .string()
    .regex(/^0x[0-9a-fA-F]*$/, 'must be hex')
    .max(2 + 2 * 8192),
  authorization,
})
export type Payload = z.output<typeof payload>

export const types = {
  TransferWithAuthorization: [
    { name: 'from', type: 'address' },
    { name: 'to', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'validAfter', type: 'uint256' },
    { name: 'validBefore', type: 'uint256' },
    { name: 'nonce', type: 'bytes32' },
  ],
} as const

export type Domain = { name: string; version: string; chainId: number; verifyingContract: Address }

/** The typed data a payer signs for an authorization under a token's domain. */
export function typedData(domain: Domain, auth: Authorization): TypedDataDefinition<typeof types, 'TransferWithAuthorization'> {
  return {
    domain: { ...domain, verifyingContract: getAddress(domain.verifyingContract) },
    types,
    primaryType: 'TransferWithAuthorization',
    message: {
      from: getAddress(auth.from),
      to: getAddress(auth.to),
      value: BigInt(auth.value),
      validAfter: BigInt(auth.validAfter),
      validBefore: BigInt(auth.validBefore),
      nonce: auth.nonce as Hex,
    },
  }
}

const typeHash = keccak256(
  stringToBytes('TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)'),
)
/** Domain separators by domain: a facilitator sees a handful of tokens, and hashes each domain once. */
const separators = new Map<string, Uint8Array>()

/**
 * The EIP-712 digest of an authorization under a token's domain: what `hashTypedData(typedData(...))`
 * computes, with the domain separator kept per domain and the struct encoded directly, two keccak
 * rounds per payment instead of seven. The authorization must have passed `authorization` (schema)
 * and its numbers must fit in uint256.
 */
export function digest(domain: Domain, auth: Authorization): Hex {
  const domainKey = `${domain.name}\u0000${domain.version}\u0000${domain.chainId}\u0000${domain.verifyingContract.toLowerCase()}`
  let separator = separators.get(domainKey)
  if (!separator) {
    separator = hexToBytes(domainSeparator({ domain: { ...domain, verifyingContract: getAddress(domain.verifyingContract) } }))
    if (separators.size >= 256) separators.clear()
    separators.set(domainKey, separator)
  }
  const struct = new Uint8Array(7 * 32)
  struct.set(hexToBytes(typeHash), 0)
  struct.set(hexToBytes(auth.from as Hex), 32 + 12)
  struct.set(hexToBytes(auth.to as Hex), 64 + 12)
  struct.set(hexToBytes(numberToHex(BigInt(auth.value), { size: 32 })), 96)
  struct.set(hexToBytes(numberToHex(BigInt(auth.validAfter), { size: 32 })), 128)
  struct.set(hexToBytes(numberToHex(BigInt(auth.validBefore), { size: 32 })), 160)
  struct.set(hexToBytes(auth.nonce as Hex), 192)
  const message = new Uint8Array(2 + 32 + 32)
  message.set([0x19, 0x01], 0)
  message.set(separator, 2)
  message.set(keccak256(struct, 'bytes'), 34)
  return keccak256(message)
}
