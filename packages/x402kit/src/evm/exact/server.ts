/**
 * The seller's part of `exact` on EVM: a price on a network becomes an offer naming the token, its
 * EIP-712 domain and the amount in atomic units.
 */
import { getAddress } from 'viem'
import { BaseError } from '../../core/Errors.ts'
import * as Money from '../../core/Money.ts'
import * as Network from '../../core/Network.ts'
import type { SchemeServer } from '../../core/Scheme.ts'

/** Default time a payer's authorization stays valid for: enough for a slow chain to settle. */
export const defaultMaxTimeoutSeconds = 300

/**
 * `exact` on EVM for a resource server.
 *
 * @example
 * ```ts
 * import { exactEvmServer } from 'x402kit/evm'
 * exactEvmServer().requirements({ price: '$0.001', network: 'eip155:8453', payTo })
 * ```
 */
export function exactEvmServer(): SchemeServer {
  return {
    scheme: 'exact',
    requirements({ price, network, payTo, asset, maxTimeoutSeconds, extra }) {
      const token = asset ?? Network.asset(network)
      if (!token)
        throw new BaseError(`No default asset is known for ${network}.`, {
          code: 'invalid_payment_requirements',
          hint: 'Give the route an asset: { address, name, version, decimals }.',
        })
      return {
        scheme: 'exact',
        network: Network.toCaip2(network),
        amount: Money.parse(price, token.decimals).toString(),
        asset: getAddress(token.address),
        payTo: getAddress(payTo),
        maxTimeoutSeconds: maxTimeoutSeconds ?? defaultMaxTimeoutSeconds,
        extra: { name: token.name, version: token.version, ...extra },
      }
    },
  }
}
