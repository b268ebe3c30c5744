/**
 * EIP-3009 `transferWithAuthorization` as the `exact` scheme uses it on EVM
 * (specs/schemes/exact/scheme_exact_evm.md): the payload schema and the EIP-712 typed data.
 */
import { type Address, getAddress, type Hex, type TypedDataDefinition } from 'viem'
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
