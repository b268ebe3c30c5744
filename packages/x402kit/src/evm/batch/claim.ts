/**
 * Claims: every channel's charged value not yet claimed, in one `claim` per network (the facilitator's
 * signer is the channels' receiver authorizer), then one `settle` per receiver and token to sweep it.
 */
import { encodeFunctionData, type Hex } from 'viem'
import { BaseError } from '../../core/Errors.ts'
import { escrowAbi } from './abi.ts'
import type { ChannelState } from './check.ts'
import { type ClaimResult, type Context, locked, type NetworkState, readChannel, send } from './state.ts'

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

export async function claim(context: Context): Promise<ClaimResult[]> {
  const results: ClaimResult[] = []
  for (const state of context.networks.values()) {
    await refresh(context, state)
    // A consistent snapshot: each row's voucher covers its total, taken in one synchronous pass.
    const due = [...context.channels.values()]
      .filter((channel) => channel.network === state.network && channel.charged > channel.claimed && channel.signature)
      .map((channel) => ({ channel, total: channel.charged, max: channel.signedMax, signature: channel.signature as Hex }))
    if (due.length === 0) continue
    // One row that cannot be claimed (a channel emptied by a withdrawal) would revert the whole batch:
    // when the batch does not simulate, only the rows that simulate alone go in.
    let rows = due
    if (!(await simulates(state, claimData(rows)))) {
      const alone = await Promise.all(due.map((row) => simulates(state, claimData([row]))))
      rows = due.filter((_, index) => alone[index])
      if (rows.length === 0) continue
    }
    const data = claimData(rows)
    const claimed = await send(state, data, state.escrow)
    if (!claimed.success) throw new BaseError('The claim reverted.', { code: 'claim_reverted', details: claimed.hash })
    let value = 0n
    for (const { channel, total } of rows) {
      if (total > channel.claimed) {
        value += total - channel.claimed
        channel.claimed = total
      }
    }
    context.unclaimed -= value
    const transactions = [claimed.hash]
    const receivers = new Map(rows.map(({ channel }) => [`${channel.config.receiver}:${channel.config.token}`, channel.config]))
    for (const { receiver, token } of receivers.values()) {
      const swept = await send(state, encodeFunctionData({ abi: escrowAbi, functionName: 'settle', args: [receiver, token] }), state.escrow)
      if (!swept.success) throw new BaseError('The sweep reverted.', { code: 'settle_reverted', details: swept.hash })
      transactions.push(swept.hash)
    }
    results.push({ network: state.network, channels: rows.length, claimed: value, transactions })
  }
  return results
}

type Row = { channel: ChannelState; total: bigint; max: bigint; signature: Hex }

function claimData(rows: readonly Row[]): Hex {
  return encodeFunctionData({
    abi: escrowAbi,
    functionName: 'claim',
    args: [
      rows.map(({ channel, total, max, signature }) => ({
        voucher: { channel: channel.config, maxClaimableAmount: max },
        signature,
        totalClaimed: total,
      })),
    ],
  })
}

async function simulates(state: NetworkState, data: Hex): Promise<boolean> {
  try {
    await state.client.call({ account: state.account, to: state.escrow, data })
    return true
  } catch {
    return false
  }
}
