/**
 * The facilitator's part of `batch-settlement` on EVM (x402 `specs/schemes/batch-settlement/`), bound
 * into a `SchemeFacilitator`: a deposit is checked and sent to the escrow through the EIP-3009
 * collector (`settle.ts`); a voucher is checked against the channel's state without a chain call
 * (`verify.ts`) and recorded; recorded vouchers are claimed in one `claim` across channels and swept
 * to each receiver (`claim.ts`), on call, on a timer, or once a value threshold is unclaimed.
 * Resource servers that keep channel state themselves send `claim`, `settle` (sweep) and `refund`
 * payloads to `/settle` (`claim.ts`, `facilitatorRefund.ts`); claims from all of them share claim
 * transactions (`claimBatch.ts`). Channels and transactions are kept in a store (`facilitatorStore.ts`).
 *
 * Each channel's state changes under its own lock, and a payment is checked again under it before
 * it is charged: two requests cannot both spend the same increment.
 */
import type { Hex } from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { Network } from '../../core/Network.ts'
import type { SchemeFacilitator } from '../../core/Scheme.ts'
import * as Channel from './Channel.ts'
import type { ChannelState } from './check.ts'
import { claim, settleClaim, settleSweep, verifyClaim } from './claim.ts'
import { recover } from './facilitatorRecover.ts'
import { settleRefund, verifyRefund } from './facilitatorRefund.ts'
import type { ActionRecord, ChannelQuery, ChannelRecord } from './facilitatorStore.ts'
import { settle } from './settle.ts'
import { type BatchSettlementEvmFacilitatorConfig, type ClaimResult, createContext, larger, readChannel } from './state.ts'
import { verify } from './verify.ts'

export type { ActionRecord, BatchSettlementStore, ChannelQuery, ChannelRecord } from './facilitatorStore.ts'
export type { ActionEvent, BatchSettlementEvmFacilitatorConfig, BatchSettlementEvmNetworkConfig, ClaimResult } from './state.ts'

export type BatchSettlementEvmFacilitator = SchemeFacilitator & {
  /** Claims every channel's charged value not yet claimed, in one transaction per network, then sweeps it to the receivers. */
  claim(): Promise<ClaimResult[]>
  /** What the facilitator knows of a channel. */
  channel(channelId: Hex): Readonly<ChannelState> | undefined
  /** Settles claim, sweep and refund transactions a stop left open against the escrow, and loads the channels with vouchers to claim. Run once at start. */
  recover(): Promise<{ reconciled: number }>
  /** The channels the store holds, newest first. */
  channels(query: ChannelQuery): Promise<{ items: ChannelRecord[]; total: number }>
  /** One channel as the store holds it, and its latest claim, sweep and refund transactions. */
  channelRecord(channelId: Hex): Promise<{ channel: ChannelRecord; actions: ActionRecord[] } | undefined>
  /** Stops the claim timer. */
  stop(): void
}

/**
 * `batch-settlement` on EVM for a facilitator.
 *
 * @example
 * ```ts
 * import { batchSettlementEvmFacilitator } from 'x402kit/evm'
 * import { createFacilitator } from 'x402kit/facilitator'
 * const channels = batchSettlementEvmFacilitator({
 *   networks: { 'eip155:8453': { rpcUrl, signers: [key] } },
 *   claimIntervalMs: 60_000,
 *   claimThreshold: 10_000_000n, // $10 of USDC unclaimed
 * })
 * const facilitator = createFacilitator({ schemes: [channels] })
 * ```
 */
export function batchSettlementEvmFacilitator(config: BatchSettlementEvmFacilitatorConfig): BatchSettlementEvmFacilitator {
  const onError = config.onError ?? ((error: unknown) => console.error(error))
  let claiming: Promise<unknown> = Promise.resolve()
  let thresholdClaim = false
  // Claims run one at a time: a row is never claimed by two transactions at once.
  const claimNow = () => {
    const run = claiming.then(() => claim(context))
    claiming = run.catch(() => undefined)
    return run
  }
  const context = createContext(config, () => {
    if (config.claimThreshold === undefined || thresholdClaim || context.unclaimed < config.claimThreshold) return
    thresholdClaim = true
    claimNow()
      .catch(onError)
      .finally(() => {
        thresholdClaim = false
      })
  })
  const timer = config.claimIntervalMs === undefined ? undefined : setInterval(() => claimNow().catch(onError), config.claimIntervalMs)
  timer?.unref?.()

  return {
    scheme: Channel.scheme,
    networks: [...context.networks.keys()] as Network[],
    async verify(payment) {
      const type = typeOf(payment)
      const refusal = serverAction(type) ? offerRefusal(payment) : undefined
      if (refusal) return { isValid: false, invalidReason: refusal.reason, invalidMessage: refusal.message }
      if (type === 'claim') return verifyClaim(context, payment)
      if (type === 'refund') return verifyRefund(context, payment)
      return verify(context, payment)
    },
    async settle(payment) {
      const type = typeOf(payment)
      const refusal = serverAction(type) ? offerRefusal(payment) : undefined
      if (refusal)
        return {
          success: false,
          errorReason: refusal.reason,
          errorMessage: refusal.message,
          transaction: '',
          network: payment.requirements.network,
        }
      if (type === 'claim') return settleClaim(context, payment)
      if (type === 'settle') return settleSweep(context, payment)
      if (type === 'refund') return settleRefund(context, payment)
      return settle(context, payment)
    },
    settlementKey(payment) {
      // Claims, sweeps and refunds are idempotent on chain (cumulative totals, a refund nonce): no key.
      if (typeOf(payment) !== 'deposit' && typeOf(payment) !== 'voucher') return undefined
      const voucher = (payment.payload.payload as { voucher?: { channelId?: unknown; maxClaimableAmount?: unknown } }).voucher
      if (typeof voucher?.channelId !== 'string' || typeof voucher.maxClaimableAmount !== 'string') return undefined
      return `${Channel.scheme}:${payment.requirements.network}:${voucher.channelId.toLowerCase()}:${voucher.maxClaimableAmount}`
    },
    alreadyUsedReason: Reason.batchVoucherAlreadyUsed,
    signers: (network) => {
      const state = context.networks.get(network)
      return state ? [state.account.address] : []
    },
    extra: (network) => {
      const state = context.networks.get(network)
      return state && { receiverAuthorizer: state.account.address, escrow: state.escrow }
    },
    claim: claimNow,
    channel: (channelId) => context.channels.get(channelId.toLowerCase()),
    recover: () => recover(context),
    channels: (query) => context.store.listChannels(query),
    async channelRecord(channelId) {
      let channel = await context.store.getChannel(channelId.toLowerCase() as Hex)
      if (!channel) return undefined
      const state = context.networks.get(channel.network)
      // The escrow's figures as they are now (a payer may have withdrawn); the stored ones where the chain does not answer.
      if (state)
        try {
          const read = await readChannel(state, channel.id)
          channel = {
            ...channel,
            balance: read.balance,
            claimed: larger(read.claimed, channel.claimed),
            withdrawal: read.withdrawal,
            withdrawRequestedAt: read.withdrawRequestedAt,
            refundNonce: read.refundNonce,
            updatedAt: Date.now(),
          }
          await context.store.putChannel(channel)
        } catch {}
      return { channel, actions: await context.store.actions({ channelId: channel.id, limit: 20 }) }
    },
    stop: () => clearInterval(timer),
  }
}

function typeOf(payment: Parameters<SchemeFacilitator['verify']>[0]): unknown {
  const payload = payment.payload.payload as { type?: unknown } | null
  return typeof payload === 'object' && payload !== null ? payload.type : undefined
}

/** A resource server's own request (claim, sweep, refund) rather than a payment for a request. */
function serverAction(type: unknown): boolean {
  return type === 'claim' || type === 'settle' || type === 'refund'
}

/** The scheme and network a server's request names must be the ones it is sent for. */
function offerRefusal(payment: Parameters<SchemeFacilitator['verify']>[0]): { reason: string; message: string } | undefined {
  const { accepted } = payment.payload
  if (accepted.scheme !== Channel.scheme || payment.requirements.scheme !== Channel.scheme)
    return { reason: Reason.batchScheme, message: 'The request is not for batch-settlement.' }
  if (accepted.network !== payment.requirements.network)
    return {
      reason: Reason.batchNetworkMismatch,
      message: `The request is for ${accepted.network}, sent for ${payment.requirements.network}.`,
    }
  return undefined
}
