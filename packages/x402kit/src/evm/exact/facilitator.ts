/**
 * The facilitator's part of `exact` on EVM (specs/schemes/exact/scheme_exact_evm.md, "Facilitator
 * verification" and "Settlement"), bound into a `SchemeFacilitator`: EIP-3009 authorizations, and
 * EIP-2612 permits for tokens without EIP-3009 (`permit/`), told apart by the payload's shape.
 */
import type { Payment } from '../../core/Facilitator.ts'
import type { Network } from '../../core/Network.ts'
import type { SchemeFacilitator } from '../../core/Scheme.ts'
import { type BatchConfig, exactPipeline } from './batch/pipeline.ts'
import * as Eip2612 from './Eip2612.ts'
import * as PermitSettle from './permit/settle.ts'
import * as PermitVerify from './permit/verify.ts'
import { reconcile } from './reconcile.ts'
import { settle } from './settle.ts'
import { createContext, type ExactEvmFacilitatorConfig } from './state.ts'
import { settlementKey as authorizationKey, verify } from './verify.ts'

export type { BatchConfig } from './batch/pipeline.ts'
export type { ExactEvmFacilitatorConfig, ExactEvmNetworkConfig } from './state.ts'

/** The settlement key of an `exact` payment of either kind. */
export function settlementKey(payment: Payment): string | undefined {
  return isPermit(payment) ? PermitVerify.settlementKey(payment) : authorizationKey(payment)
}

/**
 * `exact` on EVM for a facilitator: verifies EIP-3009 authorizations and EIP-2612 permits, and
 * settles them with `transferWithAuthorization`, or `permit` then `transferFrom` from the signer the
 * permit names as spender, sent from a pool of signer keys.
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
export function exactEvmFacilitator(config: ExactEvmFacilitatorConfig & { batch?: BatchConfig }): SchemeFacilitator {
  const context = createContext(config)
  const batched = [...context.networks.values()].some((state) => state.batcher)
  return {
    ...(batched && { pipeline: exactPipeline(context, config.batch) }),
    scheme: 'exact',
    networks: [...context.networks.keys()] as Network[],
    verify: (payment) => (isPermit(payment) ? PermitVerify.verify(context, payment) : verify(context, payment)),
    settle: (payment) => (isPermit(payment) ? PermitSettle.settle(context, payment) : settle(context, payment)),
    settlementKey,
    reconcile: (record) => reconcile(context, record),
    signers: (network) => context.networks.get(network)?.signers.map((signer) => signer.account.address) ?? [],
  }
}

function isPermit(payment: Payment): boolean {
  return Eip2612.isPayload(payment?.payload?.payload)
}
