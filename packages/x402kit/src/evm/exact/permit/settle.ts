/**
 * Settlement of an `exact` payment by EIP-2612 permit (PROTOCOL.md "EIP-2612 permit"): re-verify,
 * then from the signer the permit names as spender send `permit(...)` and `transferFrom(owner, payTo,
 * value)` with consecutive nonces, the second without waiting for the first, and follow both to
 * their receipts.
 *
 * The `transferFrom` receipt decides. A reverted `permit` before a successful `transferFrom` means
 * someone else submitted the same signed permit first (anyone can): the allowance it set paid, once.
 * A settlement cut short after its `permit` (a crash, a refused send) leaves the permit's nonce used
 * and the allowance at exactly the value; settling again sends only `transferFrom`. Once that has
 * run the allowance is spent, so no retry can move the money twice.
 */
import type { Hash } from 'viem'
import { Reason } from '../../../core/Errors.ts'
import type { Payment, SettleResponse } from '../../../core/Facilitator.ts'
import { messageOf } from '../../Outcome.ts'
import { type Settled, settleWith } from '../settle.ts'
import type { Context } from '../state.ts'
import { hasTransfer, send, sendInOrder, waitFor } from '../transactions.ts'
import { check, type PermitVerified, payerOf, permitData, settlementKey, transferFromData } from './verify.ts'

/** Settles a permit payment; never throws. */
export function settle(context: Context, payment: Payment): Promise<SettleResponse> {
  return settleWith(context, payment, {
    key: settlementKey(payment),
    busy: { reason: Reason.permitNonce, message: 'The permit is being settled.' },
    payer: payerOf(payment),
    check: () => check(context, payment, { simulate: false, settling: true }),
    execute: (verified) => execute(context, verified),
  })
}

async function execute(context: Context, verified: PermitVerified): Promise<Settled> {
  const { state, signer, asset, payer, permit, payTo } = verified
  const failure = (errorReason: Reason, errorMessage: string, transaction = ''): Settled => ({
    success: false,
    errorReason,
    errorMessage,
    payer,
    transaction,
  })
  // Fixed gas: transferFrom cannot be estimated before the permit that allows it is mined.
  const transfer = { to: asset, data: transferFromData(verified), gas: state.gasLimit }
  signer.inFlight++
  try {
    let permitHash: Hash | undefined
    let transferHash: Hash
    if (verified.stage === 'permit') {
      let sent: Awaited<ReturnType<typeof sendInOrder>>
      try {
        sent = await sendInOrder(state, signer, [{ to: asset, data: permitData(verified), gas: state.gasLimit }, transfer])
      } catch (error) {
        return failure(Reason.exactTransactionFailed, `The permit was refused: ${messageOf(error)}`)
      }
      permitHash = sent.hashes[0]!
      if (sent.hashes[1]) transferHash = sent.hashes[1]
      else {
        // The permit is out and its transferFrom was refused: send that once more, with a fresh nonce.
        try {
          transferHash = (await send(state, signer, transfer)).hash
        } catch (error) {
          return failure(
            Reason.exactTransactionFailed,
            `transferFrom was refused after the permit (${permitHash}); settling again sends it alone: ${messageOf(error)}`,
            permitHash,
          )
        }
      }
    } else {
      try {
        transferHash = (await send(state, signer, transfer)).hash
      } catch (error) {
        return failure(Reason.exactTransactionFailed, `transferFrom was refused: ${messageOf(error)}`)
      }
    }

    const [permitOutcome, outcome] = await Promise.all([
      permitHash && waitFor(context, state, permitHash),
      waitFor(context, state, transferHash),
    ])
    if (outcome.status === 'pending') return failure(Reason.settlementPending, outcome.message, transferHash)
    if (outcome.status === 'reverted') {
      const after = permitOutcome ? ` after a permit that ${permitOutcome.status === 'success' ? 'succeeded' : permitOutcome.status}` : ''
      return failure(Reason.exactTransactionFailed, `transferFrom reverted${after}.`, transferHash)
    }
    if (!hasTransfer(outcome.receipt, asset, { from: payer, to: payTo, value: permit.value }))
      return failure(Reason.exactTransferEventMismatch, 'The receipt has no matching Transfer event.', transferHash)
    return { success: true, payer, transaction: transferHash, amount: permit.value }
  } finally {
    signer.inFlight--
  }
}
