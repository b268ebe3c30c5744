/**
 * EIP-2612 `permit` as `exact` uses it on EVM for tokens without EIP-3009 (PROTOCOL.md "EIP-2612
 * permit"): the payer signs `Permit(owner, spender, value, nonce, deadline)` under the token's
 * EIP-712 domain naming the facilitator's signer as spender, which then calls `permit` and
 * `transferFrom(owner, payTo, value)`. The offer says so in `extra`:
 * `{ name, version, assetTransferMethod: 'eip2612', spender }`.
 */
import { getAddress, type TypedDataDefinition } from 'viem'
import { z } from 'zod'
import type { Domain } from './Eip3009.ts'

export type { Domain } from './Eip3009.ts'

/** The `extra.assetTransferMethod` of an offer paid by permit. */
export const assetTransferMethod = 'eip2612'

const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 20-byte hex address')
const uint = z.string().regex(/^\d{1,78}$/, 'must be a decimal string')

export const permit = z.object({ owner: address, spender: address, value: uint, nonce: uint, deadline: uint })
export type Permit = z.output<typeof permit>

/**
 * The `payload` of an `exact` permit payment. `permit(owner, spender, value, deadline, v, r, s)`
 * takes a plain-key signature only, so it is exactly 65 bytes.
 */
export const payload = z.object({
  signature: z.string().regex(/^0x[0-9a-fA-F]{130}$/, 'must be a 65-byte signature r ‖ s ‖ v'),
  permit,
})
export type Payload = z.output<typeof payload>

/** Whether a scheme payload is shaped as a permit (`permit`, not `authorization`); it may still be malformed. */
export function isPayload(value: unknown): boolean {
  return typeof value === 'object' && value !== null && 'permit' in value && !('authorization' in value)
}

export const types = {
  Permit: [
    { name: 'owner', type: 'address' },
    { name: 'spender', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'nonce', type: 'uint256' },
    { name: 'deadline', type: 'uint256' },
  ],
} as const

/**
 * The typed data a payer signs for a permit under a token's domain.
 *
 * @example
 * ```ts
 * import { Eip2612 } from 'x402kit/evm'
 * const signature = await account.signTypedData(Eip2612.typedData({ name: 'Permit Dollar', version: '1', chainId, verifyingContract: token }, permit))
 * ```
 */
export function typedData(domain: Domain, value: Permit): TypedDataDefinition<typeof types, 'Permit'> {
  return {
    domain: { ...domain, verifyingContract: getAddress(domain.verifyingContract) },
    types,
    primaryType: 'Permit',
    message: {
      owner: getAddress(value.owner),
      spender: getAddress(value.spender),
      value: BigInt(value.value),
      nonce: BigInt(value.nonce),
      deadline: BigInt(value.deadline),
    },
  }
}
