/**
 * Pay-by-transaction (`txproof`, DESIGN §4): the payer sends a transfer itself, then proves it with
 * the transaction hash and an EIP-712 signature by the sending account. This module is the scheme's
 * one definition: its name, the offer's `extra`, the payload schema and the typed data signed.
 *
 * The signature binds the transaction to the offer (asset, payTo, amount) and to the resource it pays
 * for: anyone can read a hash off a public chain, but only the sender can sign for it.
 */
import { type Address, getAddress, type Hex, isAddressEqual, type TypedDataDefinition } from 'viem'
import { z } from 'zod'

export const scheme = 'txproof'

/** The EIP-712 domain's name and version; the offer's `extra` repeats them. */
export const domain = { name: 'x402 transaction proof', version: '1' } as const

/** The `asset` of an offer in the chain's native coin (18 decimals), as ERC-7528 spells it. */
export const nativeCoinAddress = '0xEeeeeEeeeEeEeeEeEeEeeEEEeeeeEeeeeeeeEEeE'

export const nativeCoinDecimals = 18

/** The confirmations an offer asks for when it names none. */
export const defaultConfirmations = 1

/** Most confirmations an offer may ask for: beyond this a payer would wait for hours on any chain. */
export const maxConfirmations = 10_000

const hex = (bytes: number) => new RegExp(`^0x[0-9a-fA-F]{${bytes * 2}}$`)

/** The `payload` of a `txproof` payment. */
export const payload = z.object({
  transaction: z.string().regex(hex(32), 'must be a 32-byte transaction hash'),
  signature: z.string().regex(hex(65), 'must be a 65-byte signature'),
})
export type Payload = z.output<typeof payload>

export const types = {
  TransactionProof: [
    { name: 'transaction', type: 'bytes32' },
    { name: 'asset', type: 'address' },
    { name: 'payTo', type: 'address' },
    { name: 'amount', type: 'uint256' },
    { name: 'resource', type: 'string' },
  ],
} as const

export type Message = { transaction: Hex; asset: string; payTo: string; amount: string | bigint; resource: string }

/** The typed data the sender of `transaction` signs to present it as payment on chain `chainId`. */
export function typedData(chainId: number, message: Message): TypedDataDefinition<typeof types, 'TransactionProof'> {
  return {
    domain: { ...domain, chainId },
    types,
    primaryType: 'TransactionProof',
    message: {
      transaction: message.transaction,
      asset: getAddress(message.asset),
      payTo: getAddress(message.payTo),
      amount: BigInt(message.amount),
      resource: message.resource,
    },
  }
}

/** Whether an offer's asset is the chain's native coin rather than a token. */
export function isNativeCoin(asset: string): boolean {
  return /^0x[0-9a-fA-F]{40}$/.test(asset) && isAddressEqual(asset as Address, nativeCoinAddress)
}

/**
 * The confirmations an offer asks for: `extra.confirmations`, or the default when absent;
 * `undefined` when it is there but not a whole number from 1 to `maxConfirmations`.
 */
export function confirmationsOf(extra: Record<string, unknown> | null | undefined): number | undefined {
  const value = extra?.confirmations ?? defaultConfirmations
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= maxConfirmations ? value : undefined
}
