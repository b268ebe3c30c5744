/**
 * Settlement of a paid request on a channel, under the channel's lock: the payment is checked again
 * against the state as it is now, a deposit is sent to the escrow through the EIP-3009 collector, and
 * the price is charged. Vouchers move nothing on chain here; `claim.ts` claims them in batches.
 */
import type { Hex } from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { Payment, SettleResponse } from '../../core/Facilitator.ts'
import * as Channel from './Channel.ts'
import { type Context, locked, messageOf, persist, send } from './state.ts'
import { check, depositCall } from './verify.ts'

export async function settle(context: Context, payment: Payment): Promise<SettleResponse> {
  const { network } = payment.requirements
  const fail = (reason: string, message: string, transaction?: string) => Channel.failure(network, reason, message, transaction)
  const id = (payment.payload.payload as { voucher?: { channelId?: unknown } }).voucher?.channelId
  if (typeof id !== 'string') return fail(Reason.invalidPayload, 'The payload names no channel.')
  return locked(context, id.toLowerCase(), async () => {
    const checked = await check(context, payment, true)
    if (!checked.ok) return fail(checked.refusal.reason, checked.refusal.message)
    const { state, payload, channel, price } = checked
    let transaction = ''
    if (payload.type === 'deposit') {
      let sent: { hash: Hex; success: boolean }
      try {
        sent = await send(state, depositCall(state, payload), state.escrow)
      } catch (error) {
        return fail(Reason.batchDepositTransactionFailed, `The deposit was not sent: ${messageOf(error)}`)
      }
      if (!sent.success) return fail(Reason.batchDepositTransactionFailed, 'The deposit reverted.', sent.hash)
      channel.balance += payload.deposit.amount
      context.channels.set(channel.id, channel)
      transaction = sent.hash
    }
    const next = { charged: channel.charged + price, signedMax: payload.voucher.maxClaimableAmount, signature: payload.voucher.signature }
    // Recorded before the request is served: a restart still holds the voucher that pays for it.
    try {
      await persist(context, { ...channel, ...next })
    } catch (error) {
      return fail(Reason.unexpectedSettleError, `The charge could not be recorded: ${messageOf(error)}`, transaction)
    }
    Object.assign(channel, next)
    context.unclaimed += price
    context.charged()
    return {
      success: true,
      transaction,
      network,
      payer: payload.channelConfig.payer,
      amount: price.toString(),
      extra: {
        chargedAmount: price.toString(),
        channelState: {
          channelId: channel.id,
          balance: channel.balance.toString(),
          totalClaimed: channel.claimed.toString(),
          withdrawRequestedAt: channel.withdrawRequestedAt ?? 0,
          refundNonce: (channel.refundNonce ?? 0n).toString(),
        },
      },
    }
  })
}
