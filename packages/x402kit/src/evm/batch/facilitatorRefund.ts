/**
 * Cooperative refunds: a channel's unclaimed balance goes back to its payer, after its vouchers are
 * claimed, in one transaction. The escrow takes a refund from the receiver authorizer (this
 * facilitator's signer calls `refund`) or with its `Refund` signature at the channel's refund nonce
 * (`refundWithSignature`, the signature checked here first). Where the facilitator authorizes the
 * refund itself, the best voucher it holds for the channel is claimed in the same transaction, so a
 * refund never leaves a voucher it accepted unclaimed.
 */
import { encodeFunctionData, type Hex, isAddressEqual, parseEventLogs } from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { Payment, SettleResponse, VerifyResponse } from '../../core/Facilitator.ts'
import { recoverAddress } from '../recover.ts'
import { escrowAbi } from './abi.ts'
import * as Channel from './Channel.ts'
import { authorizes, claimCall, learn, simulates, transactionData } from './claimBatch.ts'
import { type Context, channelStateExtra, locked, messageOf, openAction, persist, readChannel, sendAction, smaller } from './state.ts'

type Refused = { reason: string; message: string }

/** `/verify` of a refund request (the payer's last voucher): it names this channel, is signed by the payer, and the channel holds it. */
export async function verifyRefund(context: Context, payment: Payment): Promise<VerifyResponse> {
  const checked = await checkVoucher(context, payment)
  if ('refusal' in checked) return { isValid: false, invalidReason: checked.refusal.reason, invalidMessage: checked.refusal.message }
  return {
    isValid: true,
    payer: checked.payload.channelConfig.payer,
    extra: channelStateExtra(checked.channelId, checked.read),
  } as VerifyResponse
}

async function checkVoucher(context: Context, payment: Payment) {
  const refuse = (reason: string, message: string) => ({ refusal: { reason, message } as Refused })
  const parsed = Channel.refundPayload.safeParse(payment.payload.payload)
  if (!parsed.success) return refuse(Reason.invalidPayload, parsed.error.issues[0]?.message ?? 'The refund is malformed.')
  const state = context.networks.get(payment.requirements.network)
  if (!state) return refuse(Reason.invalidNetwork, `This facilitator does not serve ${payment.requirements.network}.`)
  const payload = parsed.data
  const channelId = Channel.id(payload.channelConfig, state.chainId, state.escrow)
  if (channelId !== payload.voucher.channelId)
    return refuse(Reason.batchChannelIdMismatch, 'The voucher names another channel than its config has on this chain.')
  const signer = Channel.recoverVoucherSigner(payload.voucher, state.chainId, state.escrow)
  if (!signer || !isAddressEqual(signer, Channel.voucherSigner(payload.channelConfig)))
    return refuse(Reason.batchVoucherSignature, "The voucher is not signed by the channel's payer.")
  let read: Awaited<ReturnType<typeof readChannel>>
  try {
    read = await readChannel(state, channelId)
  } catch (error) {
    return refuse(Reason.batchRpcReadFailed, `The channel could not be read: ${messageOf(error)}`)
  }
  if (read.balance === 0n) return refuse(Reason.batchChannelNotFound, 'The channel holds nothing.')
  if (payload.voucher.maxClaimableAmount > read.balance)
    return refuse(Reason.batchCumulativeExceedsBalance, 'The voucher is above what the channel holds.')
  if (payload.voucher.maxClaimableAmount < read.claimed)
    return refuse(Reason.batchCumulativeBelowClaimed, 'The voucher is below what is claimed already.')
  return { state, payload, channelId, read }
}

/** `/settle` of a refund: claims, then refunds the rest of the channel's balance (up to `amount`) to the payer. */
export async function settleRefund(context: Context, payment: Payment): Promise<SettleResponse> {
  const { network } = payment.requirements
  const fail = (reason: string, message: string, transaction?: string) => Channel.failure(network, reason, message, transaction)
  const checked = await checkVoucher(context, payment)
  if ('refusal' in checked) return fail(checked.refusal.reason, checked.refusal.message)
  const { state, payload, channelId } = checked
  return locked(context, channelId, async () => {
    const read = await readChannel(state, channelId)
    const nonce = payload.refundNonce ?? read.refundNonce
    if (nonce !== read.refundNonce)
      return fail(Reason.batchRefundPayload, `The refund is for refund nonce ${nonce}; the channel is at ${read.refundNonce}.`)
    const ours = authorizes(state, payload.channelConfig)
    const signature = payload.refundAuthorizerSignature
    if (signature === undefined && !ours)
      return fail(
        Reason.batchAuthorizerAddressMismatch,
        "The channel's receiver authorizer is not this facilitator's signer; sign the refund.",
      )

    // The claims that come first: the payload's, and, where this facilitator authorizes, the best voucher it holds.
    const claims = [...(payload.claims ?? [])]
    for (const claim of claims) {
      if (Channel.id(claim.voucher.channel, state.chainId, state.escrow) !== channelId)
        return fail(Reason.batchChannelIdMismatch, 'A claim of the refund is for another channel.')
      const signer = Channel.recoverVoucherSigner(
        { channelId, maxClaimableAmount: claim.voucher.maxClaimableAmount, signature: claim.signature },
        state.chainId,
        state.escrow,
      )
      if (!signer || !isAddressEqual(signer, Channel.voucherSigner(claim.voucher.channel)))
        return fail(Reason.batchVoucherSignature, "A claim's voucher is not signed by the channel's payer.")
      if (claim.totalClaimed > claim.voucher.maxClaimableAmount)
        return fail(Reason.batchClaimExceedsVoucher, 'A claim is above its voucher.')
      if (claim.totalClaimed > read.balance) return fail(Reason.batchCumulativeExceedsBalance, 'A claim is above what the channel holds.')
    }
    const held = context.channels.get(channelId) ?? (await context.store.getChannel(channelId))
    if (ours && held?.signature && held.signedMax > read.claimed) {
      const charged = held.charged !== undefined && held.charged > read.claimed ? held.charged : held.signedMax
      const total = smaller(charged, held.signedMax)
      if (!claims.some((claim) => claim.totalClaimed >= total))
        claims.push({
          voucher: { channel: held.config, maxClaimableAmount: held.signedMax },
          signature: held.signature,
          totalClaimed: total,
        })
    }
    const pending = claims.filter((claim) => claim.totalClaimed > read.claimed)
    let claimedAfter = read.claimed
    for (const claim of pending) if (claim.totalClaimed > claimedAfter) claimedAfter = claim.totalClaimed
    const available = read.balance - claimedAfter
    const requested = payload.amount ?? available
    const amount = smaller(requested, available)
    if (amount <= 0n) return fail(Reason.batchRefundNoBalance, 'Nothing is left to refund.')

    if (signature !== undefined) {
      let signer: string | undefined
      try {
        signer = recoverAddress(Channel.refundDigest(channelId, nonce, requested, state.chainId, state.escrow), signature)
      } catch {
        signer = undefined
      }
      if (!signer || !isAddressEqual(signer as Hex, payload.channelConfig.receiverAuthorizer))
        return fail(Reason.batchRefundAuthorizerSignature, "The refund is not signed by the channel's receiver authorizer.")
    }
    const calls: { data: Hex }[] = []
    if (pending.length > 0) {
      const claimSignature = payload.claimAuthorizerSignature
      if (claimSignature === undefined && !ours)
        return fail(Reason.batchAuthorizerAddressMismatch, "The refund's claims need the receiver authorizer's signature.")
      // Rows this facilitator added are claimed by its own signer, apart from a batch the server signed.
      const signedRows = claimSignature === undefined ? [] : (payload.claims ?? [])
      const ownRows = claimSignature === undefined ? pending : pending.filter((claim) => !signedRows.includes(claim))
      if (signedRows.length > 0) calls.push({ data: claimCall(signedRows, claimSignature) })
      if (ownRows.length > 0) calls.push({ data: claimCall(ownRows) })
    }
    calls.push({
      data:
        signature === undefined
          ? encodeFunctionData({ abi: escrowAbi, functionName: 'refund', args: [payload.channelConfig, requested] })
          : encodeFunctionData({
              abi: escrowAbi,
              functionName: 'refundWithSignature',
              args: [payload.channelConfig, requested, nonce, signature],
            }),
    })
    const data = transactionData(calls)
    if (!(await simulates(state, data))) return fail(Reason.batchRefundSimulationFailed, 'The refund would revert.')

    const action = await openAction(context, {
      network,
      kind: 'refund',
      channels: [{ channelId, amount }],
      count: 1,
      amount,
      receiver: payload.channelConfig.receiver,
      token: payload.channelConfig.token,
    })
    const { sent, error } = await sendAction(context, state, action.id, data, Reason.batchRefundTransactionFailed)
    if (error !== undefined) return fail(Reason.batchRefundTransactionFailed, `The refund ${error}`, sent?.hash)
    const refunded =
      parseEventLogs({ abi: escrowAbi, eventName: 'Refunded', logs: sent.logs }).find((log) => log.args.channelId === channelId)?.args
        .amount ?? 0n
    const after = await readChannel(state, channelId)
    await context.store.updateAction(action.id, { status: 'confirmed', amount: refunded, gasUsed: sent.gasUsed, updatedAt: Date.now() })
    const claimedValue = after.claimed - read.claimed
    context.onAction({
      network,
      kind: 'refund',
      success: true,
      vouchers: pending.length,
      amount: refunded,
      gasUsed: sent.gasUsed,
      gasPrice: sent.gasPrice,
      transaction: sent.hash,
      claims:
        claimedValue > 0n
          ? [
              {
                channelId,
                payer: payload.channelConfig.payer,
                receiver: payload.channelConfig.receiver,
                token: payload.channelConfig.token,
                amount: claimedValue,
              },
            ]
          : [],
    })
    const best = pending.reduce<Channel.VoucherClaim | undefined>(
      (top, claim) => (!top || claim.totalClaimed > top.totalClaimed ? claim : top),
      undefined,
    )
    if (best) await learn(context, state, best, channelId, after)
    else {
      const channel = context.channels.get(channelId)
      if (channel) {
        channel.balance = after.balance
        channel.claimed = after.claimed
        await persist(context, channel, after)
      }
    }
    return {
      success: true,
      transaction: sent.hash,
      network,
      payer: payload.channelConfig.payer,
      amount: refunded.toString(),
      extra: { channelState: channelStateExtra(channelId, after), claimed: claimedValue.toString() },
    }
  })
}
