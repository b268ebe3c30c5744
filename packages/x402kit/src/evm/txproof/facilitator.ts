/**
 * The facilitator's part of `txproof` on EVM, bound into a `SchemeFacilitator`: verification reads
 * the chain, settlement sends nothing, and the facilitator's settlement store keeps each transaction
 * to one use (verify reserves `settlementKey`, settle records it).
 */
import { Reason } from '../../core/Errors.ts'
import type { Network } from '../../core/Network.ts'
import type { SchemeFacilitator } from '../../core/Scheme.ts'
import * as Proof from './Proof.ts'
import { settle } from './settle.ts'
import { createContext, type TxproofEvmFacilitatorConfig } from './state.ts'
import { settlementKey, verify } from './verify.ts'

export type { TxproofEvmFacilitatorConfig, TxproofEvmNetworkConfig } from './state.ts'

/**
 * `txproof` on EVM for a facilitator: accepts a transfer the payer sent itself, proven by the
 * transaction hash and the sender's signature over it and the offer.
 *
 * @example
 * ```ts
 * import { exactEvmFacilitator, txproofEvmFacilitator } from 'x402kit/evm'
 * import { createFacilitator } from 'x402kit/facilitator'
 * const facilitator = createFacilitator({
 *   schemes: [exactEvmFacilitator({ networks }), txproofEvmFacilitator({ networks: { 'eip155:8453': { rpcUrl, confirmations: 2 } } })],
 *   store, // a shared, durable store keeps each transaction to one use across restarts and instances
 * })
 * ```
 */
export function txproofEvmFacilitator(config: TxproofEvmFacilitatorConfig): SchemeFacilitator {
  const context = createContext(config)
  return {
    scheme: Proof.scheme,
    networks: [...context.networks.keys()] as Network[],
    verify: (payment) => verify(context, payment),
    settle: (payment) => settle(context, payment),
    settlementKey,
    alreadyUsedReason: Reason.txproofAlreadyUsed,
    signers: () => [],
    extra: (network) => {
      const state = context.networks.get(network)
      return state && { confirmations: state.confirmations }
    },
  }
}
