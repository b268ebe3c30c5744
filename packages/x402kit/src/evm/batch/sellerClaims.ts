/**
 * What the seller hands the facilitator's `/settle` to turn vouchers into money, in the payloads the
 * reference server sends (x402 `specs/schemes/batch-settlement/`): `claim` (the latest voucher of
 * many channels, one transaction), `settle` (sweep what was claimed to the receiver) and `refund`
 * (give the payer back what it has not spent, claiming the rest first).
 */
import { getAddress, type Hex } from 'viem'
import type { FacilitatorClient, SettleResponse } from '../../core/Facilitator.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import * as Channel from './Channel.ts'
import type { SellerChannel } from './sellerVoucher.ts'

/** A key that signs claims and refunds as the channels' receiver authorizer (a viem account fits). */
export type AuthorizerSigner = {
  address: string
  signTypedData(parameters: {
    domain: Record<string, unknown>
    types: Record<string, readonly { name: string; type: string }[]>
    primaryType: string
    message: Record<string, unknown>
  }): Promise<Hex>
}

export const claimTypes = {
  ClaimBatch: [{ name: 'claims', type: 'ClaimEntry[]' }],
  ClaimEntry: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'maxClaimableAmount', type: 'uint128' },
    { name: 'totalClaimed', type: 'uint128' },
  ],
} as const

export const refundTypes = {
  Refund: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'nonce', type: 'uint256' },
    { name: 'amount', type: 'uint128' },
  ],
} as const

/** One row of a `claim` payload: the channel's latest voucher, claimed in full. */
export type VoucherClaim = {
  voucher: { channel: Channel.ChannelConfig; maxClaimableAmount: string }
  signature: Hex
  totalClaimed: string
}

export function claimOf(channel: SellerChannel): VoucherClaim {
  return {
    voucher: { channel: channel.config, maxClaimableAmount: channel.charged.toString() },
    signature: channel.signature as Hex,
    totalClaimed: channel.charged.toString(),
  }
}

export type Operations = {
  facilitator: FacilitatorClient
  chainIdOf(network: string): number
  signer: AuthorizerSigner | undefined
}

function requirements(network: string, receiver: string, token: string): PaymentRequirements {
  return {
    scheme: Channel.scheme,
    network,
    asset: getAddress(token),
    amount: '0',
    payTo: getAddress(receiver),
    maxTimeoutSeconds: 0,
    extra: {},
  }
}

function send(operations: Operations, accepted: PaymentRequirements, payload: Record<string, unknown>): Promise<SettleResponse> {
  return operations.facilitator.settle({ payload: { x402Version: 2, accepted, payload }, requirements: accepted })
}

async function signClaims(operations: Operations, network: string, claims: readonly VoucherClaim[], ids: readonly Hex[]) {
  if (!operations.signer) return undefined
  return operations.signer.signTypedData({
    domain: Channel.domainOf(operations.chainIdOf(network)),
    types: claimTypes,
    primaryType: 'ClaimBatch',
    message: {
      claims: claims.map((claim, index) => ({
        channelId: ids[index],
        maxClaimableAmount: BigInt(claim.voucher.maxClaimableAmount),
        totalClaimed: BigInt(claim.totalClaimed),
      })),
    },
  })
}

/** Sends one `claim` for channels of one network. */
export async function submitClaim(operations: Operations, network: string, channels: readonly SellerChannel[]): Promise<SettleResponse> {
  const claims = channels.map(claimOf)
  const first = channels[0]!.config
  const claimAuthorizerSignature = await signClaims(
    operations,
    network,
    claims,
    channels.map(({ id }) => id),
  )
  return send(operations, requirements(network, first.receiver, first.token), {
    type: 'claim',
    claims,
    ...(claimAuthorizerSignature && { claimAuthorizerSignature }),
  })
}

/** Sends one `settle`: the escrow moves what was claimed for `receiver` in `token` to it. */
export function submitSweep(operations: Operations, network: string, receiver: string, token: string): Promise<SettleResponse> {
  return send(operations, requirements(network, receiver, token), {
    type: 'settle',
    receiver: getAddress(receiver),
    token: getAddress(token),
  })
}

/**
 * Sends one cooperative `refund` of what the payer has not spent (`balance - charged`), with a claim
 * of the charged value not yet claimed, so that the seller is paid first.
 */
export async function submitRefund(
  operations: Operations,
  channel: SellerChannel,
  amount = channel.balance - channel.charged,
): Promise<SettleResponse> {
  const claims = channel.charged > channel.totalClaimed && channel.signature ? [claimOf(channel)] : []
  const signer = operations.signer
  const refundAuthorizerSignature = signer
    ? await signer.signTypedData({
        domain: Channel.domainOf(operations.chainIdOf(channel.network)),
        types: refundTypes,
        primaryType: 'Refund',
        message: { channelId: channel.id, nonce: channel.refundNonce, amount },
      })
    : undefined
  const claimAuthorizerSignature = claims.length > 0 ? await signClaims(operations, channel.network, claims, [channel.id]) : undefined
  return send(operations, requirements(channel.network, channel.config.receiver, channel.config.token), {
    type: 'refund',
    channelConfig: channel.config,
    voucher: { channelId: channel.id, maxClaimableAmount: channel.charged.toString(), signature: channel.signature ?? '0x' },
    amount: amount.toString(),
    refundNonce: channel.refundNonce.toString(),
    claims,
    ...(refundAuthorizerSignature && { refundAuthorizerSignature }),
    ...(claimAuthorizerSignature && { claimAuthorizerSignature }),
  })
}
