/**
 * The start of a `batch-settlement` facilitator: transactions a stop left `open` are settled against
 * the chain — a claim by the escrow's `channels(id)` claimed totals (it landed where they reach the
 * totals it was for; cumulative totals make a resend harmless either way), a sweep or refund by its
 * receipt — and channels holding charged, unclaimed vouchers are loaded so the next claim takes them.
 */
import type { Hex } from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { ChannelState } from './check.ts'
import type { ActionRecord } from './facilitatorStore.ts'
import { type Context, larger, type NetworkState, persist, readChannel } from './state.ts'

export async function recover(context: Context): Promise<{ reconciled: number }> {
  let reconciled = 0
  for (const state of context.networks.values()) {
    for (const action of await context.store.openActions(state.network)) {
      await settleAction(context, state, action)
      reconciled++
    }
    await loadCharged(context, state)
  }
  return { reconciled }
}

async function settleAction(context: Context, state: NetworkState, action: ActionRecord): Promise<void> {
  const now = Date.now()
  if (action.kind === 'claim') {
    let landed = true
    let value = 0n
    for (const { channelId, amount } of action.channels) {
      const read = await readChannel(state, channelId)
      if (read.claimed < amount) landed = false
      const stored = await context.store.getChannel(channelId)
      if (stored) {
        if (read.claimed > stored.claimed) value += read.claimed - stored.claimed
        await context.store.putChannel({
          ...stored,
          balance: read.balance,
          claimed: read.claimed,
          withdrawal: read.withdrawal,
          withdrawRequestedAt: read.withdrawRequestedAt,
          refundNonce: read.refundNonce,
          updatedAt: now,
        })
      }
    }
    await context.store.updateAction(action.id, {
      status: landed ? 'confirmed' : 'failed',
      amount: value,
      updatedAt: now,
      ...(!landed && { errorReason: Reason.batchClaimTransactionFailed }),
    })
    return
  }
  const receipt = action.transaction ? await receiptOf(state, action.transaction) : undefined
  // No transaction hash: it was never sent. A hash without a receipt was dropped, or is still pending and is left for the next start.
  if (action.transaction && receipt === undefined && (await pending(state, action.transaction))) return
  const success = receipt?.status === 'success'
  await context.store.updateAction(action.id, {
    status: success ? 'confirmed' : 'failed',
    updatedAt: now,
    ...(receipt && { gasUsed: receipt.gasUsed }),
    ...(!success && { errorReason: action.kind === 'refund' ? Reason.batchRefundTransactionFailed : Reason.batchSettleTransactionFailed }),
  })
  for (const { channelId } of action.channels) {
    const stored = await context.store.getChannel(channelId)
    if (!stored) continue
    const read = await readChannel(state, channelId)
    await context.store.putChannel({
      ...stored,
      balance: read.balance,
      claimed: read.claimed,
      refundNonce: read.refundNonce,
      updatedAt: now,
    })
  }
}

async function receiptOf(state: NetworkState, hash: Hex) {
  try {
    return await state.client.getTransactionReceipt({ hash })
  } catch {
    return undefined
  }
}

async function pending(state: NetworkState, hash: Hex): Promise<boolean> {
  try {
    await state.client.getTransaction({ hash })
    return true
  } catch {
    return false
  }
}

/** Channels whose charged value is above their claimed total, from the store into memory, checked against the chain. */
async function loadCharged(context: Context, state: NetworkState): Promise<void> {
  const limit = 500
  for (let offset = 0; ; offset += limit) {
    const page = await context.store.listChannels({ network: state.network, limit, offset })
    for (const record of page.items) {
      if (record.charged === undefined || record.charged <= record.claimed || !record.signature) continue
      if (context.channels.has(record.id)) continue
      const read = await readChannel(state, record.id)
      const channel: ChannelState = {
        id: record.id,
        config: record.config,
        network: state.network,
        balance: read.balance,
        claimed: read.claimed,
        charged: larger(record.charged, read.claimed),
        signedMax: record.signedMax,
        signature: record.signature,
        closing: read.closing,
        withdrawRequestedAt: read.withdrawRequestedAt,
        refundNonce: read.refundNonce,
      }
      context.channels.set(record.id, channel)
      context.unclaimed += channel.charged - channel.claimed
      await persist(context, channel, read)
    }
    if (offset + limit >= page.total) break
  }
}
