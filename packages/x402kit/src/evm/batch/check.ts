/**
 * The checks of a paid request on a channel that need no chain: the payload is bound to the offer
 * (receiver, token, receiver authorizer, delay), its voucher names this channel on this chain and is
 * signed by the payer, and it covers the price on top of what the channel has already been charged.
 */
import { type Address, getAddress, type Hex, isAddressEqual } from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import * as Channel from './Channel.ts'

/** What the facilitator knows of a channel; amounts in the token's atomic units. */
export type ChannelState = {
  readonly id: Hex
  readonly config: Channel.ChannelConfig
  readonly network: string
  /** Deposited into the escrow, as last read or deposited here. */
  balance: bigint
  /** Claimed on chain so far. */
  claimed: bigint
  /** What the channel has been charged: the sum of the prices of the requests it paid for. */
  charged: bigint
  /** The highest voucher accepted, and its signature: what a claim presents. */
  signedMax: bigint
  signature: Hex | undefined
  /** The payer has started a withdrawal. */
  closing: boolean
  /** When the payer's withdrawal started (unix seconds, 0 when none) and the escrow's refund nonce, as last read. */
  withdrawRequestedAt?: number
  refundNonce?: bigint
}

export type Refusal = { reason: Reason; message: string }

/**
 * Checks that the payload pays this offer over the channel it names: the channel's terms are the
 * offer's, its id is the one its config has on this chain and escrow, and the voucher's signer is the
 * channel's payer (or payer authorizer).
 */
export function binding(
  payload: Channel.Payload,
  requirements: PaymentRequirements,
  options: { chainId: number; escrow?: Address | undefined },
): Refusal | undefined {
  const { channelConfig: config, voucher } = payload
  const extra = requirements.extra ?? {}
  if (!isAddressEqual(config.receiver, getAddress(requirements.payTo)))
    return { reason: Reason.batchReceiverMismatch, message: 'The channel pays another receiver than the offer.' }
  if (!isAddressEqual(config.token, getAddress(requirements.asset)))
    return { reason: Reason.batchTokenMismatch, message: 'The channel holds another token than the offer asks for.' }
  const authorizer = extra.receiverAuthorizer
  if (typeof authorizer !== 'string' || authorizer.toLowerCase() !== config.receiverAuthorizer.toLowerCase())
    return { reason: Reason.batchReceiverAuthorizerMismatch, message: "The channel's receiver authorizer is not the offer's." }
  const delay = typeof extra.withdrawDelay === 'number' ? extra.withdrawDelay : Channel.minWithdrawDelay
  if (config.withdrawDelay !== delay)
    return { reason: Reason.batchWithdrawDelayMismatch, message: `The channel's withdraw delay is not the offer's ${delay} s.` }
  if (Channel.id(config, options.chainId, options.escrow) !== voucher.channelId)
    return { reason: Reason.batchChannelIdMismatch, message: 'The voucher names another channel than its config has on this chain.' }
  const signer = Channel.recoverVoucherSigner(voucher, options.chainId, options.escrow)
  if (!signer || !isAddressEqual(signer, Channel.voucherSigner(config)))
    return { reason: Reason.batchVoucherSignature, message: "The voucher is not signed by the channel's payer." }
  return undefined
}

/**
 * Checks that a voucher of `maxClaimableAmount` pays `price` on the channel: not lower than the last
 * accepted, covering `charged + price`, within the balance (plus a deposit that comes with it), and the
 * channel not closing.
 */
export function charge(state: ChannelState, maxClaimableAmount: bigint, price: bigint, deposit = 0n): Refusal | undefined {
  if (state.closing) return { reason: Reason.batchChannelClosing, message: 'The payer is withdrawing from this channel.' }
  if (maxClaimableAmount < state.signedMax)
    return {
      reason: Reason.batchCumulativeBelowClaimed,
      message: `The voucher (${maxClaimableAmount}) is lower than the last one accepted (${state.signedMax}).`,
    }
  if (maxClaimableAmount < state.charged + price)
    return {
      reason: Reason.batchCumulativeAmountMismatch,
      message: `The voucher (${maxClaimableAmount}) does not cover ${state.charged} already charged plus the price ${price}.`,
    }
  if (maxClaimableAmount > state.balance + deposit)
    return {
      reason: Reason.batchCumulativeExceedsBalance,
      message: `The voucher (${maxClaimableAmount}) is above what the channel holds (${state.balance + deposit}).`,
    }
  return undefined
}
