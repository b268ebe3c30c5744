/**
 * Claims and sweeps. A resource server that keeps its channels' state sends `claim` payloads (many
 * vouchers across channels, each with its signature and the total to claim) and `settle` payloads
 * (sweep a receiver's claimed funds); every row is checked before anything is sent — the voucher's
 * signature on this chain and escrow, the total within the voucher and the channel's balance, above
 * what is claimed already — and the rows that pass go into the next claim transaction (`claimBatch.ts`).
 * The facilitator's own vouchers (requests it charged) are claimed the same way by `claim(context)`.
 */
import { encodeFunctionData, type Hex, isAddressEqual, parseEventLogs } from 'viem'
import { BaseError, Reason } from '../../core/Errors.ts'
import type { Payment, SettleResponse, VerifyResponse } from '../../core/Facilitator.ts'
import { recoverAddress } from '../recover.ts'
import { escrowAbi } from './abi.ts'
import * as Channel from './Channel.ts'
import { authorizes, type ClaimGroup, enqueueClaims, type GroupOutcome, type RowOutcome, simulates } from './claimBatch.ts'
import {
  type ClaimResult,
  type Context,
  locked,
  messageOf,
  type NetworkState,
  openAction,
  readChannel,
  readClaimed,
  sendAction,
} from './state.ts'

/**
 * Reads each channel's balance and pending withdrawal again: a payer who started to withdraw is
 * refused from here on, and the claim comes before the withdrawal delay ends.
 */
async function refresh(context: Context, state: NetworkState): Promise<void> {
  const known = [...context.channels.values()].filter((channel) => channel.network === state.network)
  await Promise.all(
    // Under the channel's lock, so a deposit settling meanwhile is not overwritten by an older read.
    known.map((channel) =>
      locked(context, channel.id, async () => {
        const { balance, closing } = await readChannel(state, channel.id)
        channel.balance = balance
        channel.closing = closing
      }),
    ),
  )
}

/** Claims every channel's charged value not yet claimed, in one transaction per network, then sweeps it to the receivers. */
export async function claim(context: Context): Promise<ClaimResult[]> {
  const results: ClaimResult[] = []
  for (const state of context.networks.values()) {
    await refresh(context, state)
    // A consistent snapshot: each row's voucher covers its total, taken in one synchronous pass.
    const due = [...context.channels.values()]
      .filter(
        (channel) =>
          channel.network === state.network && channel.charged > channel.claimed && channel.signature && authorizes(state, channel.config),
      )
      .map((channel) => ({
        channelId: channel.id,
        claim: {
          voucher: { channel: channel.config, maxClaimableAmount: channel.signedMax },
          signature: channel.signature as Hex,
          totalClaimed: channel.charged,
        },
      }))
    if (due.length === 0) continue
    const claimedBefore = new Map(due.map((row) => [row.channelId, context.channels.get(row.channelId)?.claimed ?? 0n]))
    const outcome = await enqueueClaims(context, state, due)
    const claimed = outcome.rows.filter((row) => row.status === 'claimed')
    if (claimed.length === 0) continue
    if (outcome.transaction === '') throw new BaseError('The claim reverted.', { code: 'claim_reverted' })
    let value = 0n
    for (const row of claimed) value += (context.channels.get(row.channelId)?.claimed ?? 0n) - (claimedBefore.get(row.channelId) ?? 0n)
    const transactions: Hex[] = [outcome.transaction]
    const receivers = new Map(
      due
        .filter((row) => claimed.some((entry) => entry.channelId === row.channelId))
        .map(({ claim }) => [`${claim.voucher.channel.receiver}:${claim.voucher.channel.token}`, claim.voucher.channel]),
    )
    for (const { receiver, token } of receivers.values()) {
      const swept = await sweep(context, state, receiver, token)
      if (!swept.success && swept.errorReason !== Reason.batchNothingToSettle)
        throw new BaseError('The sweep failed.', { code: 'settle_reverted', details: swept.errorMessage ?? swept.errorReason ?? '' })
      if (swept.transaction) transactions.push(swept.transaction as Hex)
    }
    results.push({ network: state.network, channels: claimed.length, claimed: value, transactions })
  }
  return results
}

type Refused = { reason: string; message: string }

/** The checks of one claim row that need no transaction; `undefined` when it may be sent. */
async function checkRow(state: NetworkState, claim: Channel.VoucherClaim, channelId: Hex): Promise<Refused | undefined> {
  const signer = Channel.recoverVoucherSigner(
    { channelId, maxClaimableAmount: claim.voucher.maxClaimableAmount, signature: claim.signature },
    state.chainId,
    state.escrow,
  )
  if (!signer || !isAddressEqual(signer, Channel.voucherSigner(claim.voucher.channel)))
    return {
      reason: Reason.batchVoucherSignature,
      message: "The voucher is not signed by the channel's payer for this channel on this chain.",
    }
  if (claim.totalClaimed > claim.voucher.maxClaimableAmount)
    return {
      reason: Reason.batchClaimExceedsVoucher,
      message: `The claim (${claim.totalClaimed}) is above its voucher (${claim.voucher.maxClaimableAmount}).`,
    }
  let read: Awaited<ReturnType<typeof readChannel>>
  try {
    read = await readChannel(state, channelId)
  } catch (error) {
    return { reason: Reason.batchRpcReadFailed, message: `The channel could not be read: ${messageOf(error)}` }
  }
  if (read.balance === 0n) return { reason: Reason.batchChannelNotFound, message: 'The channel holds nothing.' }
  if (claim.totalClaimed > read.balance)
    return {
      reason: Reason.batchCumulativeExceedsBalance,
      message: `The claim (${claim.totalClaimed}) is above what the channel holds (${read.balance}).`,
    }
  if (claim.totalClaimed <= read.claimed)
    return {
      reason: Reason.batchCumulativeBelowClaimed,
      message: `The claim (${claim.totalClaimed}) is not above what is claimed already (${read.claimed}).`,
    }
  return undefined
}

/** Checks a `claim` payload without sending anything. */
export async function verifyClaim(context: Context, payment: Payment): Promise<VerifyResponse> {
  const checked = await checkClaim(context, payment)
  if ('refusal' in checked) return { isValid: false, invalidReason: checked.refusal.reason, invalidMessage: checked.refusal.message }
  const refused = checked.outcomes.filter((row) => row.status === 'refused')
  if (refused.length === checked.outcomes.length)
    return { isValid: false, invalidReason: refused[0]!.reason ?? Reason.invalidPayload, invalidMessage: refused[0]!.message ?? null }
  return { isValid: true, extra: { claims: checked.outcomes } } as VerifyResponse
}

type CheckedClaim =
  | { refusal: Refused }
  | { state: NetworkState; payload: Channel.ClaimPayload; rows: ClaimGroup['rows']; outcomes: RowOutcome[] }

async function checkClaim(context: Context, payment: Payment): Promise<CheckedClaim> {
  const parsed = Channel.claimPayload.safeParse(payment.payload.payload)
  if (!parsed.success)
    return { refusal: { reason: Reason.invalidPayload, message: parsed.error.issues[0]?.message ?? 'The claim is malformed.' } }
  const state = context.networks.get(payment.requirements.network)
  if (!state)
    return { refusal: { reason: Reason.invalidNetwork, message: `This facilitator does not serve ${payment.requirements.network}.` } }
  const payload = parsed.data
  const rows = payload.claims.map((claim) => ({ claim, channelId: Channel.id(claim.voucher.channel, state.chainId, state.escrow) }))
  const signature = payload.claimAuthorizerSignature
  if (signature !== undefined) {
    // A signed batch goes in whole or not at all: it is one signature over every row.
    const authorizer = payload.claims[0]!.voucher.channel.receiverAuthorizer
    if (payload.claims.some((claim) => !isAddressEqual(claim.voucher.channel.receiverAuthorizer, authorizer)))
      return {
        refusal: { reason: Reason.batchReceiverAuthorizerMismatch, message: 'A signed claim batch is for one receiver authorizer.' },
      }
    let signer: string | undefined
    try {
      signer = recoverAddress(Channel.claimBatchDigest(payload.claims, state.chainId, state.escrow), signature)
    } catch {
      signer = undefined
    }
    if (!signer || !isAddressEqual(signer as Hex, authorizer))
      return {
        refusal: {
          reason: Reason.batchClaimAuthorizerSignature,
          message: "The claim batch is not signed by the channels' receiver authorizer.",
        },
      }
  } else {
    const foreign = payload.claims.find((claim) => !authorizes(state, claim.voucher.channel))
    if (foreign)
      return {
        refusal: {
          reason: Reason.batchAuthorizerAddressMismatch,
          message: "A channel's receiver authorizer is not this facilitator's signer; sign the batch (claimAuthorizerSignature).",
        },
      }
  }
  const refusals = await Promise.all(rows.map((row) => checkRow(state, row.claim, row.channelId)))
  const outcomes: RowOutcome[] = rows.map((row, index) => {
    const refusal = refusals[index]
    return {
      channelId: row.channelId,
      totalClaimed: row.claim.totalClaimed.toString(),
      status: refusal ? 'refused' : 'claimed',
      ...(refusal && { reason: refusal.reason, message: refusal.message }),
    }
  })
  if (signature !== undefined) {
    const first = refusals.find(Boolean)
    if (first) return { refusal: first }
  }
  return { state, payload, rows: rows.filter((_, index) => !refusals[index]), outcomes }
}

/** Sends a `claim` payload's rows that pass their checks in the network's next claim transaction. */
export async function settleClaim(context: Context, payment: Payment): Promise<SettleResponse> {
  const { network } = payment.requirements
  const checked = await checkClaim(context, payment)
  if ('refusal' in checked)
    return { success: false, errorReason: checked.refusal.reason, errorMessage: checked.refusal.message, transaction: '', network }
  const early = checked.outcomes.filter((row) => row.status === 'refused')
  if (checked.rows.length === 0) return { ...failed(early, network), extra: { claims: checked.outcomes } }
  const before = new Map<string, bigint>()
  await Promise.all(checked.rows.map(async (row) => before.set(row.channelId, await readClaimed(checked.state, row.channelId))))
  let outcome: GroupOutcome
  try {
    outcome = await enqueueClaims(context, checked.state, checked.rows, checked.payload.claimAuthorizerSignature)
  } catch (error) {
    return { success: false, errorReason: Reason.batchClaimTransactionFailed, errorMessage: messageOf(error), transaction: '', network }
  }
  const rows = checked.outcomes.map((row) =>
    row.status === 'refused'
      ? row
      : (outcome.rows.find((sent) => sent.channelId === row.channelId && sent.totalClaimed === row.totalClaimed) ?? row),
  )
  const claimed = rows.filter((row) => row.status === 'claimed')
  if (claimed.length === 0) return { ...failed(rows, network, outcome.transaction), extra: { claims: rows } }
  let amount = 0n
  for (const row of claimed) {
    const total = BigInt(row.totalClaimed)
    const was = before.get(row.channelId) ?? total
    if (total > was) amount += total - was
  }
  return {
    success: true,
    transaction: outcome.transaction,
    network,
    amount: amount.toString(),
    extra: { claims: rows, vouchers: claimed.length },
  }
}

function failed(rows: RowOutcome[], network: string, transaction = ''): SettleResponse {
  const first = rows.find((row) => row.status === 'refused')
  return {
    success: false,
    errorReason: first?.reason ?? Reason.batchClaimTransactionFailed,
    errorMessage: first?.message ?? 'No voucher was claimed.',
    transaction,
    network,
  }
}

/** A `settle` payload: sweeps what is claimed for the receiver in the token to it. */
export async function settleSweep(context: Context, payment: Payment): Promise<SettleResponse> {
  const { network } = payment.requirements
  const parsed = Channel.settlePayload.safeParse(payment.payload.payload)
  if (!parsed.success)
    return {
      success: false,
      errorReason: Reason.invalidPayload,
      errorMessage: parsed.error.issues[0]?.message ?? null,
      transaction: '',
      network,
    }
  const state = context.networks.get(network)
  if (!state) return { success: false, errorReason: Reason.invalidNetwork, transaction: '', network }
  return sweep(context, state, parsed.data.receiver, parsed.data.token)
}

export async function sweep(context: Context, state: NetworkState, receiver: Hex, token: Hex): Promise<SettleResponse> {
  const network = state.network
  const fail = (reason: string, message: string, transaction?: string) => Channel.failure(network, reason, message, transaction)
  let due: bigint
  try {
    const [claimed, settled] = await state.client.readContract({
      address: state.escrow,
      abi: escrowAbi,
      functionName: 'receivers',
      args: [receiver, token],
    })
    due = claimed - settled
  } catch (error) {
    return fail(Reason.batchRpcReadFailed, messageOf(error))
  }
  if (due <= 0n) return fail(Reason.batchNothingToSettle, 'Nothing is claimed and unswept for this receiver and token.')
  const data = encodeFunctionData({ abi: escrowAbi, functionName: 'settle', args: [receiver, token] })
  if (!(await simulates(state, data))) return fail(Reason.batchSettleSimulationFailed, 'The sweep would revert.')

  const action = await openAction(context, {
    network,
    kind: 'settle',
    channels: [],
    count: 1,
    amount: due,
    receiver,
    token,
  })
  const { sent, error } = await sendAction(context, state, action.id, data, Reason.batchSettleTransactionFailed)
  if (error !== undefined) return fail(Reason.batchSettleTransactionFailed, `The sweep ${error}`, sent?.hash)
  const swept = parseEventLogs({ abi: escrowAbi, eventName: 'Settled', logs: sent.logs }).find(
    (log) => isAddressEqual(log.args.receiver, receiver) && isAddressEqual(log.args.token, token),
  )
  const amount = swept?.args.amount ?? 0n
  await context.store.updateAction(action.id, { status: 'confirmed', amount, gasUsed: sent.gasUsed, updatedAt: Date.now() })
  context.onAction({
    network,
    kind: 'settle',
    success: true,
    vouchers: 0,
    amount,
    gasUsed: sent.gasUsed,
    gasPrice: sent.gasPrice,
    transaction: sent.hash,
    claims: [],
  })
  return { success: true, transaction: sent.hash, network, amount: amount.toString() }
}
