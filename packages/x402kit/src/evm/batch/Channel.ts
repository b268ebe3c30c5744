/**
 * Channel: the wire of `batch-settlement` on EVM (x402 `specs/schemes/batch-settlement/`, as the
 * reference `@x402/evm` 2.27 sends it) — the channel config, the cumulative voucher, the deposit and
 * voucher payloads — and the EIP-712 domain and types the `x402BatchSettlement` escrow checks.
 */
import { type Address, encodeAbiParameters, getAddress, type Hex, hashTypedData, isAddress, keccak256, zeroAddress } from 'viem'
import { z } from 'zod'
import type { SettleResponse } from '../../core/Facilitator.ts'
import * as Eip3009 from '../exact/Eip3009.ts'
import { recoverAddress } from '../recover.ts'

export const scheme = 'batch-settlement' as const

/** The escrow and the EIP-3009 deposit collector at their canonical addresses. */
export const escrowAddress = '0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003' as const
export const erc3009CollectorAddress = '0x4020806089470a89826cB9fB1f4059150b550004' as const

/** Bounds of a channel's `withdrawDelay`, in seconds, as the escrow enforces them. */
export const minWithdrawDelay = 900
export const maxWithdrawDelay = 2_592_000

export const domain = { name: 'x402 Batch Settlement', version: '1' } as const

export const types = {
  ChannelConfig: [
    { name: 'payer', type: 'address' },
    { name: 'payerAuthorizer', type: 'address' },
    { name: 'receiver', type: 'address' },
    { name: 'receiverAuthorizer', type: 'address' },
    { name: 'token', type: 'address' },
    { name: 'withdrawDelay', type: 'uint40' },
    { name: 'salt', type: 'bytes32' },
  ],
  Voucher: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'maxClaimableAmount', type: 'uint128' },
  ],
} as const

/** EIP-3009 `ReceiveWithAuthorization`: the fields of `TransferWithAuthorization` under its own type name. */
export const receiveWithAuthorizationTypes = { ReceiveWithAuthorization: Eip3009.types.TransferWithAuthorization } as const

const maxUint128 = (1n << 128n) - 1n
const address = z
  .string()
  .max(42)
  .refine((value) => isAddress(value, { strict: false }), 'not an address')
  .transform((value) => getAddress(value))
const bytes32 = z
  .string()
  .regex(/^0x[0-9a-fA-F]{64}$/, 'not 32 bytes of hex')
  .transform((value) => value.toLowerCase() as Hex)
const signature = z.string().regex(/^0x[0-9a-fA-F]{130,2000}$/, 'not a signature') as z.ZodType<Hex>
const amount = z
  .string()
  .regex(/^\d{1,39}$/, 'not an amount in atomic units')
  .transform((value) => BigInt(value))
  .refine((value) => value <= maxUint128, 'above uint128')
const decimal = z
  .string()
  .regex(/^\d{1,78}$/, 'not a decimal integer')
  .transform((value) => BigInt(value))

export const channelConfig = z.object({
  payer: address,
  payerAuthorizer: address,
  receiver: address,
  receiverAuthorizer: address,
  token: address,
  withdrawDelay: z
    .number()
    .int()
    .min(0)
    .max(2 ** 40 - 1),
  salt: bytes32,
})
export type ChannelConfig = z.output<typeof channelConfig>

export const voucher = z.object({ channelId: bytes32, maxClaimableAmount: amount, signature })
export type Voucher = z.output<typeof voucher>

/** The payer's EIP-3009 `receiveWithAuthorization` to the collector; the nonce is derived from the channel and `salt`. */
export const erc3009Authorization = z.object({ validAfter: decimal, validBefore: decimal, salt: bytes32, signature })
export type Erc3009Authorization = z.output<typeof erc3009Authorization>

export const depositPayload = z.object({
  type: z.literal('deposit'),
  channelConfig,
  voucher,
  deposit: z.object({ amount, authorization: z.object({ erc3009Authorization }) }),
})
export type DepositPayload = z.output<typeof depositPayload>

export const voucherPayload = z.object({ type: z.literal('voucher'), channelConfig, voucher })
export type VoucherPayload = z.output<typeof voucherPayload>

/** The payloads a paid request carries: a deposit that opens or tops up the channel, or a voucher alone. */
export const payload = z.discriminatedUnion('type', [depositPayload, voucherPayload])
export type Payload = z.output<typeof payload>

export function domainOf(chainId: number, escrow: Address = escrowAddress) {
  return { ...domain, chainId, verifyingContract: getAddress(escrow) }
}

/**
 * The channel id: the EIP-712 digest of the config under the escrow's domain, so the same terms name
 * other channels on other chains and at other escrows.
 *
 * @example
 * ```ts
 * import { Channel } from 'x402kit/evm'
 * const id = Channel.id(config, 8453)
 * ```
 */
export function id(config: ChannelConfig, chainId: number, escrow?: Address): Hex {
  return hashTypedData({ domain: domainOf(chainId, escrow), types, primaryType: 'ChannelConfig', message: config })
}

/** The digest a payer signs for a cumulative voucher. */
export function voucherDigest(channelId: Hex, maxClaimableAmount: bigint, chainId: number, escrow?: Address): Hex {
  return hashTypedData({
    domain: domainOf(chainId, escrow),
    types,
    primaryType: 'Voucher',
    message: { channelId, maxClaimableAmount },
  })
}

/** Who may sign the channel's vouchers: its payer authorizer, or the payer where none is set. */
export function voucherSigner(config: ChannelConfig): Address {
  return config.payerAuthorizer === zeroAddress ? config.payer : config.payerAuthorizer
}

/** The address that signed a voucher (native secp256k1, no network call); `undefined` for a malformed signature. */
export function recoverVoucherSigner(voucher: Voucher, chainId: number, escrow?: Address): Address | undefined {
  try {
    return recoverAddress(voucherDigest(voucher.channelId, voucher.maxClaimableAmount, chainId, escrow), voucher.signature)
  } catch {
    return undefined
  }
}

/** The EIP-3009 nonce of a deposit: `keccak256(abi.encode(channelId, uint256(salt)))`. */
export function depositNonce(channelId: Hex, salt: Hex): Hex {
  return keccak256(encodeAbiParameters([{ type: 'bytes32' }, { type: 'uint256' }], [channelId, BigInt(salt)]))
}

/** The collector's data of an EIP-3009 deposit: `abi.encode(validAfter, validBefore, salt, signature)`. */
export function collectorData(authorization: Erc3009Authorization): Hex {
  return encodeAbiParameters(
    [{ type: 'uint256' }, { type: 'uint256' }, { type: 'uint256' }, { type: 'bytes' }],
    [authorization.validAfter, authorization.validBefore, BigInt(authorization.salt), authorization.signature],
  )
}

/** The EIP-712 types a receiver authorizer signs: a batch of claims (`claimWithSignature`) and a cooperative refund. */
export const authorizerTypes = {
  ClaimBatch: [{ name: 'claims', type: 'ClaimEntry[]' }],
  ClaimEntry: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'maxClaimableAmount', type: 'uint128' },
    { name: 'totalClaimed', type: 'uint128' },
  ],
  Refund: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'nonce', type: 'uint256' },
    { name: 'amount', type: 'uint128' },
  ],
} as const

/** One row of a claim: a voucher with its channel's config, its signature, and the cumulative total to claim up to. */
export const voucherClaim = z.object({
  voucher: z.object({ channel: channelConfig, maxClaimableAmount: amount }),
  signature,
  totalClaimed: amount,
})
export type VoucherClaim = z.output<typeof voucherClaim>

/** A resource server's claim of many vouchers, across channels, optionally signed by their receiver authorizer. */
export const claimPayload = z.object({
  type: z.literal('claim'),
  claims: z.array(voucherClaim).min(1).max(1_000),
  claimAuthorizerSignature: signature.optional(),
})
export type ClaimPayload = z.output<typeof claimPayload>

/** A sweep of what was claimed for a receiver in a token. */
export const settlePayload = z.object({ type: z.literal('settle'), receiver: address, token: address })
export type SettlePayload = z.output<typeof settlePayload>

/** A cooperative refund of a channel's unclaimed balance, after claiming `claims`; `amount` and `refundNonce` as the escrow has them. */
export const refundPayload = z.object({
  type: z.literal('refund'),
  channelConfig,
  voucher,
  amount: amount.optional(),
  refundNonce: z
    .union([
      decimal,
      z
        .number()
        .int()
        .min(0)
        .transform((value) => BigInt(value)),
    ])
    .optional(),
  claims: z.array(voucherClaim).max(100).optional(),
  refundAuthorizerSignature: signature.optional(),
  claimAuthorizerSignature: signature.optional(),
})
export type RefundPayload = z.output<typeof refundPayload>

/** The digest a receiver authorizer signs for `claimWithSignature`. */
export function claimBatchDigest(claims: readonly VoucherClaim[], chainId: number, escrow?: Address): Hex {
  return hashTypedData({
    domain: domainOf(chainId, escrow),
    types: authorizerTypes,
    primaryType: 'ClaimBatch',
    message: {
      claims: claims.map((claim) => ({
        channelId: id(claim.voucher.channel, chainId, escrow),
        maxClaimableAmount: claim.voucher.maxClaimableAmount,
        totalClaimed: claim.totalClaimed,
      })),
    },
  })
}

/** The digest a receiver authorizer signs for `refundWithSignature`. */
export function refundDigest(channelId: Hex, nonce: bigint, amount: bigint, chainId: number, escrow?: Address): Hex {
  return hashTypedData({
    domain: domainOf(chainId, escrow),
    types: authorizerTypes,
    primaryType: 'Refund',
    message: { channelId, nonce, amount },
  })
}

/** A settlement of this scheme that failed on `network`: its reason code and message, and its transaction when one was sent. */
export function failure(network: string, reason: string, message: string, transaction = ''): SettleResponse {
  return { success: false, errorReason: reason, errorMessage: message, transaction, network }
}
