/**
 * Settlement of an `exact` EIP-3009 payment (specs/schemes/exact/scheme_exact_evm.md, "Settlement"):
 * re-verify, send `transferWithAuthorization` from a pool key, wait for the receipt.
 *
 * Once a transaction may have reached the node, the only outcomes are its receipt or
 * `settlement_pending` with its hash. A new transaction is never sent for the same payment: if the
 * first is mined late, the second would fail on chain at best, and for any other scheme charge twice.
 * (The transactions themselves: `transactions.ts`.)
 */
import { Reason } from '../../core/Errors.ts'
import type { Payment, SettleResponse } from '../../core/Facilitator.ts'
import { type Failure, messageOf } from '../Outcome.ts'
import { admissionOf, ended } from './admission.ts'
import type { Context } from './state.ts'
import { hasTransfer, pickSigner, sendAndWait } from './transactions.ts'
import { check, payerOf, settlementKey, transferData, type Verified } from './verify.ts'

/** Settles a payment; never throws. */
export async function settle(context: Context, payment: Payment): Promise<SettleResponse> {
  const key = settlementKey(payment)
  const result = await settleWith(context, payment, {
    key,
    busy: { reason: Reason.exactNonceAlreadyUsed, message: 'The authorization is being settled.' },
    payer: payerOf(payment),
    check: () => check(context, payment, { simulate: false, settling: true }),
    execute: (verified) => execute(context, verified),
  })
  // The payment no longer counts against its payer's cached balance, unless it may still be mined.
  const state = context.networks.get(payment.requirements?.network)
  const admission = state && admissionOf(state, context.admission)
  if (admission && key && result.errorReason !== Reason.settlementPending) ended(admission, key)
  return result
}

/** What a settlement's transactions came to, before the network is added to make a `SettleResponse`. */
export type Settled = { success: boolean; errorReason?: Reason; errorMessage?: string; payer: string; transaction: string; amount?: string }

/**
 * The steps every `exact` settlement takes, whatever its transfer method: claim the payment's key in
 * this process, check it again, send, and answer; a settlement left pending keeps its claim.
 */
export async function settleWith<Verified extends { ok: true; payer: string }>(
  context: Context,
  payment: Payment,
  steps: {
    key: string | undefined
    /** The answer while another settlement of the same key runs here. */
    busy: { reason: Reason; message: string }
    payer: string | undefined
    check(): Promise<Failure | Verified>
    execute(verified: Verified): Promise<Settled>
  },
): Promise<SettleResponse> {
  const network = String(payment?.requirements?.network ?? payment?.payload?.accepted?.network ?? '')
  const failure = (errorReason: Reason, errorMessage?: string, payer = steps.payer): SettleResponse => ({
    success: false,
    errorReason,
    ...(errorMessage === undefined ? {} : { errorMessage }),
    ...(payer === undefined ? {} : { payer }),
    transaction: '',
    network,
  })
  const { key } = steps
  // Claimed before the first await: two concurrent settlements of one payment would both pass
  // verification (the chain has not seen either yet), and both requests would be served.
  if (key && context.settling.has(key)) return failure(steps.busy.reason, steps.busy.message)
  if (key) context.settling.add(key)
  let pending = false
  try {
    let verified: Failure | Verified
    try {
      verified = await steps.check()
    } catch (error) {
      return failure(Reason.unexpectedSettleError, messageOf(error))
    }
    if (!verified.ok) return failure(verified.reason, verified.message, verified.payer)
    let result: Settled
    try {
      result = await steps.execute(verified)
    } catch (error) {
      // execute() reports every failure after a send itself; what reaches here happened before one.
      return failure(Reason.unexpectedSettleError, messageOf(error), verified.payer)
    }
    pending = result.errorReason === Reason.settlementPending
    return { ...result, network }
  } finally {
    // A pending settlement keeps its claim: its transactions may still be mined.
    if (key && !pending) context.settling.delete(key)
  }
}

async function execute(context: Context, verified: Verified): Promise<Settled> {
  const { state, payer, asset, authorization, signature } = verified
  const failure = (errorReason: Reason, errorMessage: string, transaction = ''): Settled => ({
    success: false,
    errorReason,
    errorMessage,
    payer,
    transaction,
  })
  const signer = pickSigner(state)
  if (!signer) return failure(Reason.unexpectedSettleError, `No signer key is configured for ${state.network}.`)
  signer.inFlight++
  try {
    if (signature.kind === 'counterfactual') {
      const deployment = await sendAndWait(context, state, signer, { to: signature.factory, data: signature.factoryData })
      if (deployment.status !== 'success')
        return deployment.status === 'pending'
          ? failure(Reason.settlementPending, 'The wallet deployment is not confirmed yet.', deployment.hash)
          : failure(Reason.exactTransactionFailed, `The wallet deployment failed: ${deployment.message}`, deployment.hash ?? '')
    }
    const data = transferData(authorization, signature)
    const transfer = await sendAndWait(context, state, signer, {
      to: asset,
      data,
      gas: signature.kind === 'eoa' ? state.gasLimit : undefined,
    })
    if (transfer.status === 'refused') return failure(Reason.exactTransactionFailed, transfer.message)
    if (transfer.status === 'pending') return failure(Reason.settlementPending, transfer.message, transfer.hash)
    if (transfer.status === 'reverted') return failure(Reason.exactTransactionFailed, transfer.message, transfer.hash)
    if (!hasTransfer(transfer.receipt, asset, authorization))
      return failure(Reason.exactTransferEventMismatch, 'The receipt has no matching Transfer event.', transfer.hash)
    return { success: true, payer, transaction: transfer.hash, amount: authorization.value }
  } finally {
    signer.inFlight--
  }
}
