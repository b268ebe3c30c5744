/**
 * The facilitator's part of `exact` on EVM with EIP-3009 (specs/schemes/exact/scheme_exact_evm.md,
 * "Facilitator verification" and "Settlement"), bound into a `SchemeFacilitator`.
 */
import type { Network } from '../../core/Network.ts'
import type { SchemeFacilitator } from '../../core/Scheme.ts'
import { settle } from './settle.ts'
import { createContext, type ExactEvmFacilitatorConfig } from './state.ts'
import { settlementKey, verify } from './verify.ts'

export type { ExactEvmFacilitatorConfig, ExactEvmNetworkConfig } from './state.ts'
export { settlementKey } from './verify.ts'

/**
 * `exact` on EVM for a facilitator: verifies EIP-3009 authorizations and settles them with
 * `transferWithAuthorization`, sent from a pool of signer keys.
 *
 * @example
 * ```ts
 * import { exactEvmFacilitator } from 'x402kit/evm'
 * const exact = exactEvmFacilitator({
 *   networks: { 'eip155:8453': { rpcUrl: process.env.RPC_URL!, signers: [process.env.SIGNER_KEY as `0x${string}`] } },
 * })
 * const result = await exact.verify({ payload, requirements })
 * ```
 */
export function exactEvmFacilitator(config: ExactEvmFacilitatorConfig): SchemeFacilitator {
  const context = createContext(config)
  return {
    scheme: 'exact',
    networks: [...context.networks.keys()] as Network[],
    verify: (payment) => verify(context, payment),
    settle: (payment) => settle(context, payment),
    settlementKey,
    signers: (network) => context.networks.get(network)?.signers.map((signer) => signer.account.address) ?? [],
  }
}
