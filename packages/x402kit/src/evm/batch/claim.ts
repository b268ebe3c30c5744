/**
 * Claims: every channel's charged value not yet claimed, in one `claim` per network (the facilitator's
 * signer is the channels' receiver authorizer), then one `settle` per receiver and token to sweep it.
 */
import { encodeFunctionData, type Hex } from 'viem'
import { BaseError } from '../../core/Errors.ts'
import { escrowAbi } from './abi.ts'
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
    const rows = [...context.channels.values()]
      .filter((channel) => channel.network === state.network && channel.charged > channel.claimed && channel.signature)
      .map((channel) => ({ channel, total: channel.charged, max: channel.signedMax, signature: channel.signature as Hex }))
    if (rows.length === 0) continue
    const data = encodeFunctionData({
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
