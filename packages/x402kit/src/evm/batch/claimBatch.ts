/**
 * Claim transactions: claims from any number of resource servers (and the facilitator's own) that
 * arrive within `claimWindowMs` go out in one transaction — one `claim` of every row whose channel has
 * this facilitator's signer as receiver authorizer, and one `claimWithSignature` per batch a resource
 * server signed itself, together in the escrow's `multicall`. A row or signed batch that would revert
 * is left out (and reported) instead of sinking the others. The transaction is recorded before it is
 * sent and settled against the escrow at the next start if the process stops in between.
 */
import { encodeFunctionData, type Hex, isAddressEqual } from 'viem'
import { Reason } from '../../core/Errors.ts'
import { escrowAbi } from './abi.ts'
import type * as Channel from './Channel.ts'
import { type ActionEvent, type Context, type NetworkState, openAction, persist, readChannel, readClaimed, sendAction } from './state.ts'

/** What became of one claim row. */
export type RowOutcome = { channelId: Hex; totalClaimed: string; status: 'claimed' | 'refused'; reason?: string; message?: string }

export type GroupOutcome = { transaction: Hex | ''; rows: RowOutcome[]; gasUsed: bigint }

/** Claim rows that go into a transaction together or not at all (a signed batch), or one by one (`signature` undefined). */
export type ClaimGroup = {
  rows: { claim: Channel.VoucherClaim; channelId: Hex }[]
  signature: Hex | undefined
  resolve(outcome: GroupOutcome): void
  reject(error: unknown): void
}

/** Queues claim rows for the network's next claim transaction and answers with their outcome. */
export function enqueueClaims(context: Context, state: NetworkState, rows: ClaimGroup['rows'], signature?: Hex): Promise<GroupOutcome> {
  return new Promise<GroupOutcome>((resolve, reject) => {
    state.pending.push({ rows, signature, resolve, reject })
    const queued = state.pending.reduce((sum, group) => sum + group.rows.length, 0)
    if (queued >= context.maxClaimsPerTransaction) {
      clearTimeout(state.flushTimer)
      state.flushTimer = undefined
      next(context, state)
    } else schedule(context, state, context.claimWindowMs)
  })
}

function schedule(context: Context, state: NetworkState, delay: number) {
  if (state.flushTimer) return
  state.flushTimer = setTimeout(() => {
    state.flushTimer = undefined
    next(context, state)
  }, delay)
}

function next(context: Context, state: NetworkState) {
  state.flushing = state.flushing.then(() => flush(context, state)).catch(() => undefined)
}

type Call = { data: Hex; groups: ClaimGroup[]; rows: ClaimGroup['rows'] }

async function flush(context: Context, state: NetworkState): Promise<void> {
  const groups: ClaimGroup[] = []
  let count = 0
  while (state.pending.length > 0 && (count === 0 || count + state.pending[0]!.rows.length <= context.maxClaimsPerTransaction)) {
    const group = state.pending.shift()!
    groups.push(group)
    count += group.rows.length
  }
  if (state.pending.length > 0) schedule(context, state, 0)
  if (groups.length === 0) return
  const refused = new Map<ClaimGroup, RowOutcome[]>()
  const refuse = (group: ClaimGroup, row: ClaimGroup['rows'][number], reason: string, message: string) => {
    const list = refused.get(group) ?? []
    list.push({ channelId: row.channelId, totalClaimed: row.claim.totalClaimed.toString(), status: 'refused', reason, message })
    refused.set(group, list)
  }
  try {
    // The facilitator's own rows: one per channel (the highest total wins; a lower one is a no-op on chain).
    const own = groups.filter((group) => group.signature === undefined)
    const byChannel = new Map<string, { row: ClaimGroup['rows'][number]; group: ClaimGroup }>()
    for (const group of own)
      for (const row of group.rows) {
        const best = byChannel.get(row.channelId)
        if (!best || row.claim.totalClaimed > best.row.claim.totalClaimed) byChannel.set(row.channelId, { row, group })
      }
    let ownRows = [...byChannel.values()]
    const signed = groups.filter((group) => group.signature !== undefined)
    const calls = (): Call[] => [
      ...(ownRows.length > 0
        ? [{ data: claimCall(ownRows.map(({ row }) => row.claim)), groups: own, rows: ownRows.map(({ row }) => row) }]
        : []),
      ...signed
        .filter((group) => !refused.has(group))
        .map((group) => ({
          data: claimCall(
            group.rows.map((row) => row.claim),
            group.signature,
          ),
          groups: [group],
          rows: group.rows,
        })),
    ]
    let planned = calls()
    if (planned.length > 0 && !(await simulates(state, transactionData(planned)))) {
      // Something in the batch would revert: each signed batch and each own row is tried alone.
      for (const group of signed)
        if (
          !(await simulates(
            state,
            claimCall(
              group.rows.map((row) => row.claim),
              group.signature,
            ),
          ))
        )
          for (const row of group.rows) refuse(group, row, Reason.batchClaimSimulationFailed, 'The signed claim batch would revert.')
      const alone = await Promise.all(ownRows.map(({ row }) => simulates(state, claimCall([row.claim]))))
      for (const [index, entry] of ownRows.entries())
        if (!alone[index]) refuse(entry.group, entry.row, Reason.batchClaimSimulationFailed, 'The claim would revert.')
      ownRows = ownRows.filter((_, index) => alone[index])
      planned = calls()
    }
    let transaction: Hex | '' = ''
    let gasUsed = 0n
    const sentRows = new Set(planned.flatMap((call) => call.rows))
    if (planned.length > 0) {
      const action = await openAction(context, {
        network: state.network,
        kind: 'claim',
        channels: [...sentRows].map((row) => ({ channelId: row.channelId, amount: row.claim.totalClaimed })),
        count: sentRows.size,
        amount: 0n,
        receiver: undefined,
        token: undefined,
      })
      const before = new Map<string, bigint>()
      await Promise.all([...sentRows].map(async (row) => before.set(row.channelId, await readClaimed(state, row.channelId))))
      const { sent, error } = await sendAction(context, state, action.id, transactionData(planned), Reason.batchClaimTransactionFailed)
      const message = `The claim ${error}`
      for (const group of error === undefined ? [] : groups)
        for (const row of group.rows) if (sentRows.has(row)) refuse(group, row, Reason.batchClaimTransactionFailed, message)
      if (!sent) return finish(groups, refused, '', 0n)
      transaction = sent.hash
      gasUsed = sent.gasUsed
      if (error !== undefined) {
        context.onAction({
          network: state.network,
          kind: 'claim',
          success: false,
          vouchers: sentRows.size,
          amount: 0n,
          gasUsed,
          gasPrice: sent.gasPrice,
          transaction,
          claims: [],
        })
        return finish(groups, refused, transaction, gasUsed)
      }
      const claims = await recordClaimed(context, state, [...sentRows], before)
      const value = claims.reduce((sum, claim) => sum + claim.amount, 0n)
      await context.store.updateAction(action.id, { status: 'confirmed', amount: value, gasUsed, updatedAt: Date.now() })
      context.onAction({
        network: state.network,
        kind: 'claim',
        success: true,
        vouchers: sentRows.size,
        amount: value,
        gasUsed,
        gasPrice: sent.gasPrice,
        transaction,
        claims,
      })
    }
    finish(groups, refused, transaction, gasUsed)
  } catch (error) {
    for (const group of groups) group.reject(error)
  }
}

function finish(groups: ClaimGroup[], refused: Map<ClaimGroup, RowOutcome[]>, transaction: Hex | '', gasUsed: bigint) {
  for (const group of groups) {
    const refusals = refused.get(group) ?? []
    const rows = group.rows.map(
      (row) =>
        refusals.find((entry) => entry.channelId === row.channelId && entry.totalClaimed === row.claim.totalClaimed.toString()) ?? {
          channelId: row.channelId,
          totalClaimed: row.claim.totalClaimed.toString(),
          status: 'claimed' as const,
        },
    )
    group.resolve({ transaction: rows.some((row) => row.status === 'claimed') ? transaction : '', rows, gasUsed })
  }
}

/** After a confirmed claim: each channel's claimed total as the escrow has it now, and the value each claimed. */
async function recordClaimed(
  context: Context,
  state: NetworkState,
  rows: ClaimGroup['rows'],
  before: Map<string, bigint>,
): Promise<ActionEvent['claims']> {
  const claims: ActionEvent['claims'] = []
  const seen = new Set<string>()
  for (const row of rows) {
    if (seen.has(row.channelId)) continue
    seen.add(row.channelId)
    const read = await readChannel(state, row.channelId)
    const { payer, receiver, token } = row.claim.voucher.channel
    const amount = read.claimed - (before.get(row.channelId) ?? read.claimed)
    if (amount > 0n) claims.push({ channelId: row.channelId, payer, receiver, token, amount })
    await learn(context, state, row.claim, row.channelId, read)
  }
  return claims
}

/** Takes what a claim row and a fresh read tell of a channel into memory and the store. */
export async function learn(
  context: Context,
  state: NetworkState,
  claim: Channel.VoucherClaim,
  channelId: Hex,
  read: Awaited<ReturnType<typeof readChannel>>,
) {
  const known = context.channels.get(channelId)
  const channel = known ?? {
    id: channelId,
    config: claim.voucher.channel,
    network: state.network,
    balance: read.balance,
    claimed: read.claimed,
    charged: read.claimed,
    signedMax: claim.voucher.maxClaimableAmount,
    signature: claim.signature,
    closing: read.closing,
  }
  const unclaimedBefore = channel.charged > channel.claimed ? channel.charged - channel.claimed : 0n
  channel.balance = read.balance
  channel.claimed = read.claimed
  channel.closing = read.closing
  if (claim.voucher.maxClaimableAmount > channel.signedMax) {
    channel.signedMax = claim.voucher.maxClaimableAmount
    channel.signature = claim.signature
  }
  if (channel.charged < channel.claimed) channel.charged = channel.claimed
  const unclaimedAfter = channel.charged - channel.claimed
  context.unclaimed -= unclaimedBefore - unclaimedAfter
  if (known || channel.balance > 0n) context.channels.set(channelId, channel)
  await persist(context, channel, read)
}

export function claimCall(claims: readonly Channel.VoucherClaim[], signature?: Hex): Hex {
  const args = claims.map((claim) => ({
    voucher: { channel: claim.voucher.channel, maxClaimableAmount: claim.voucher.maxClaimableAmount },
    signature: claim.signature,
    totalClaimed: claim.totalClaimed,
  }))
  return signature === undefined
    ? encodeFunctionData({ abi: escrowAbi, functionName: 'claim', args: [args] })
    : encodeFunctionData({ abi: escrowAbi, functionName: 'claimWithSignature', args: [args, signature] })
}

/** One call as it is, several through the escrow's `multicall`. */
export function transactionData(calls: readonly { data: Hex }[]): Hex {
  if (calls.length === 1) return calls[0]!.data
  return encodeFunctionData({ abi: escrowAbi, functionName: 'multicall', args: [calls.map((call) => call.data)] })
}

export async function simulates(state: NetworkState, data: Hex): Promise<boolean> {
  try {
    await state.client.call({ account: state.account, to: state.escrow, data })
    return true
  } catch {
    return false
  }
}

/** Whether the facilitator's signer may claim and refund for the channel without a signature. */
export function authorizes(state: NetworkState, config: Channel.ChannelConfig): boolean {
  return isAddressEqual(config.receiverAuthorizer, state.account.address)
}
