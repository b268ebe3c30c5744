/**
 * Settlement of a `txproof` payment: nothing is sent, since the payer already moved the money. The
 * checks run again (the chain may have reorganised since verification), and the answer names the
 * payer's transaction. That it is now spent is recorded by the facilitator's settlement store.
 */
import { Reason } from '../../core/Errors.ts'
import type { Payment, SettleResponse } from '../../core/Facilitator.ts'
import { messageOf } from '../Outcome.ts'
import type { Context } from './state.ts'
import { check } from './verify.ts'

/** Settles a payment; never throws. */
export async function settle(context: Context, payment: Payment): Promise<SettleResponse> {
  const network = String(payment?.requirements?.network ?? '')
  try {
    const result = await check(context, payment)
    if (result.ok)
      return { success: true, payer: result.payer, transaction: result.transaction, network, amount: payment.requirements.amount }
    return {
      success: false,
      errorReason: result.reason,
      ...(result.message !== undefined && { errorMessage: result.message }),
      ...(result.payer !== undefined && { payer: result.payer }),
      transaction: '',
      network,
    }
  } catch (error) {
    return { success: false, errorReason: Reason.unexpectedSettleError, errorMessage: messageOf(error), transaction: '', network }
  }
}
