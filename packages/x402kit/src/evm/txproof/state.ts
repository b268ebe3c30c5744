/**
 * The state of a `txproof` EVM facilitator: its configuration and, per network, a read-only RPC
 * client. Nothing is sent, so there are no signer keys.
 */
import { type Chain, createPublicClient, type HttpTransport, http, type PublicClient } from 'viem'
import { BaseError } from '../../core/Errors.ts'
import type { Network } from '../../core/Network.ts'
import { chainOf, checkChain as checkChainOnce } from '../Chain.ts'
import * as Proof from './Proof.ts'

export type TxproofEvmNetworkConfig = {
  rpcUrl: string
  /** Confirmations this facilitator requires whatever the offer asks; default 1. */
  confirmations?: number
}

export type TxproofEvmFacilitatorConfig = {
  networks: Record<string, TxproofEvmNetworkConfig>
  /** Deadline of each RPC request, in milliseconds; default 10 s. */
  rpcTimeoutMs?: number
}

export type NetworkState = {
  network: Network
  chainId: number
  client: PublicClient<HttpTransport, Chain>
  confirmations: number
  chainChecked: Promise<void> | undefined
}

export type Context = { networks: Map<string, NetworkState> }

export function createContext(config: TxproofEvmFacilitatorConfig): Context {
  const networks = new Map<string, NetworkState>()
  for (const [network, entry] of Object.entries(config.networks ?? {})) {
    const { chainId, chain } = chainOf(network, entry?.rpcUrl, (message) => new ConfigError(message))
    const confirmations = entry.confirmations ?? Proof.defaultConfirmations
    // 0 would accept nothing less than 1 anyway: a receipt exists only once the transaction is mined.
    if (!Number.isInteger(confirmations) || confirmations < 0 || confirmations > Proof.maxConfirmations)
      throw new ConfigError(`The confirmations of ${network} must be a whole number from 0 to ${Proof.maxConfirmations}.`)
    networks.set(network, {
      network: network as Network,
      chainId,
      client: createPublicClient({ chain, transport: http(entry.rpcUrl, { timeout: config.rpcTimeoutMs ?? 10_000, batch: true }) }),
      confirmations: Math.max(1, confirmations),
      chainChecked: undefined,
    })
  }
  if (networks.size === 0) throw new ConfigError('No network is configured.')
  return { networks }
}

/** Resolves once the RPC endpoint has been seen to serve the configured chain (checked once). */
export function checkChain(state: NetworkState): Promise<void> {
  return checkChainOnce(state, (message) => new ConfigError(message, 'Point rpcUrl at a node of that chain.'))
}

export class ConfigError extends BaseError {
  override name = 'TxproofEvmConfigError'
  constructor(shortMessage: string, hint = 'Check the txproofEvmFacilitator configuration.') {
    super(shortMessage, { code: 'invalid_config', hint })
  }
}
