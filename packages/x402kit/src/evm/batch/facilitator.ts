/**
 * The facilitator's part of `batch-settlement` on EVM (x402 `specs/schemes/batch-settlement/`), bound
 * into a `SchemeFacilitator`: a deposit is checked and sent to the escrow through the EIP-3009
 * collector (`settle.ts`); a voucher is checked against the channel's state without a chain call
 * (`verify.ts`) and recorded; recorded vouchers are claimed in one `claim` across channels and swept
 * to each receiver (`claim.ts`), on call, on a timer, or once a value threshold is unclaimed.
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
import { claim } from './claim.ts'
import { settle } from './settle.ts'
import { type BatchSettlementEvmFacilitatorConfig, type ClaimResult, createContext } from './state.ts'
import { verify } from './verify.ts'

export type { BatchSettlementEvmFacilitatorConfig, BatchSettlementEvmNetworkConfig, ClaimResult } from './state.ts'

export type BatchSettlementEvmFacilitator = SchemeFacilitator & {
  /** Claims every channel's charged value not yet claimed, in one transaction per network, then sweeps it to the receivers. */
  claim(): Promise<ClaimResult[]>
  /** What the facilitator knows of a channel. */
  channel(channelId: Hex): Readonly<ChannelState> | undefined
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
    verify: (payment) => verify(context, payment),
    settle: (payment) => settle(context, payment),
    settlementKey(payment) {
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
    stop: () => clearInterval(timer),
  }
}
