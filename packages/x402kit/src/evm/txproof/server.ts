/**
 * The seller's part of `txproof` on EVM: a price on a network becomes an offer to be paid by a
 * transfer the payer sends itself, in a token or in the chain's native coin.
 */
import { getAddress } from 'viem'
import { BaseError } from '../../core/Errors.ts'
import * as Money from '../../core/Money.ts'
import * as Network from '../../core/Network.ts'
import type { SchemeServer } from '../../core/Scheme.ts'
import * as Proof from './Proof.ts'

/** How long after its transaction a proof is accepted, unless the route says otherwise. */
export const defaultMaxTimeoutSeconds = 300

/**
 * The chain's native coin as a route's `asset`, for offers paid in ETH (or the chain's equivalent).
 * `name`, `version` and `transfer` do not apply: a native coin is paid by transaction only.
 */
export const nativeCoin: Network.Asset = {
  address: Proof.nativeCoinAddress,
  name: 'Native coin',
  version: '1',
  decimals: Proof.nativeCoinDecimals,
  symbol: 'ETH',
  transfer: 'eip3009',
}

export type TxproofServerOptions = {
  /** Confirmations an offer asks for unless a route's `extra.confirmations` says otherwise; default 1. */
  confirmations?: number
}

/**
 * `txproof` on EVM for a resource server. A route picks it with `scheme: 'txproof'`; its `asset` is a
 * token (default: the network's stablecoin) or `nativeCoin`.
 *
 * @example
 * ```ts
 * import { exactEvmServer, txproofServer } from 'x402kit/evm'
 * import { paywall } from 'x402kit/hono'
 * app.use(paywall({
 *   facilitator, payTo, network: 'eip155:8453', schemes: [exactEvmServer(), txproofServer({ confirmations: 2 })],
 *   routes: { 'GET /report': { price: '$0.50', scheme: 'txproof' } },
 * }))
 * ```
 */
export function txproofServer(options: TxproofServerOptions = {}): SchemeServer {
  const confirmations = options.confirmations ?? Proof.defaultConfirmations
  if (Proof.confirmationsOf({ confirmations }) === undefined)
    throw invalid(`confirmations must be a whole number from 1 to ${Proof.maxConfirmations}.`)
  return {
    scheme: Proof.scheme,
    requirements({ price, network, payTo, asset, maxTimeoutSeconds, extra }) {
      const info = Network.get(network)
      if (!info.network.startsWith('eip155:')) throw invalid(`${info.network} is not an EVM network.`)
      const token = asset ?? Network.asset(info.network)
      if (!token) throw invalid(`No default asset is known for ${info.network}.`, 'Give the route an asset, or `nativeCoin`.')
      const decimals = Proof.isNativeCoin(token.address) ? Proof.nativeCoinDecimals : token.decimals
      const merged = { confirmations, ...extra, ...Proof.domain }
      if (Proof.confirmationsOf(merged) === undefined)
        throw invalid(`extra.confirmations must be a whole number from 1 to ${Proof.maxConfirmations}.`)
      return {
        scheme: Proof.scheme,
        network: info.network,
        amount: Money.parse(price, decimals).toString(),
        asset: getAddress(token.address),
        payTo: getAddress(payTo),
        maxTimeoutSeconds: maxTimeoutSeconds ?? defaultMaxTimeoutSeconds,
        extra: merged,
      }
    },
  }
}

function invalid(shortMessage: string, hint?: string): BaseError {
  return new BaseError(shortMessage, { code: 'invalid_payment_requirements', ...(hint && { hint }) })
}
