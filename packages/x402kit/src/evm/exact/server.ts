/**
 * The seller's part of `exact` on EVM: a price on a network becomes an offer naming the token, its
 * EIP-712 domain and the amount in atomic units. For a token settled by EIP-2612 permit, the offer
 * also names how (`assetTransferMethod: 'eip2612'`) and whom the payer authorises (`spender`).
 */
import { getAddress, isAddress } from 'viem'
import { BaseError } from '../../core/Errors.ts'
import * as Money from '../../core/Money.ts'
import * as Network from '../../core/Network.ts'
import type { SchemeServer } from '../../core/Scheme.ts'
import * as Eip2612 from './Eip2612.ts'

/** Default time a payer's authorization stays valid for: enough for a slow chain to settle. */
export const defaultMaxTimeoutSeconds = 300

export type ExactEvmServerOptions = {
  /**
   * The spender of permit offers (assets with `transfer: 'eip2612'`) that do not name one in
   * `extra.spender`: a signer of the facilitator that settles them (its `/supported` `signers`).
   */
  spender?: string
}

/**
 * `exact` on EVM for a resource server.
 *
 * @example
 * ```ts
 * import { exactEvmServer } from 'x402kit/evm'
 * exactEvmServer().requirements({ price: '$0.001', network: 'eip155:8453', payTo })
 * // a permit-only token: the facilitator's signer is the spender
 * exactEvmServer({ spender: facilitatorSigner }).requirements({ price: '$0.001', network, payTo, asset: permitToken })
 * ```
 */
export function exactEvmServer(options: ExactEvmServerOptions = {}): SchemeServer {
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
        extra: {
          name: token.name,
          version: token.version,
          ...extra,
          ...(token.transfer === 'eip2612' && permitExtra(extra?.spender ?? options.spender, token.symbol)),
        },
      }
    },
  }
}

function permitExtra(spender: unknown, symbol: string): { assetTransferMethod: typeof Eip2612.assetTransferMethod; spender: string } {
  if (typeof spender !== 'string' || !isAddress(spender, { strict: false }))
    throw new BaseError(`An offer in ${symbol} (EIP-2612 permit) needs a spender address.`, {
      code: 'invalid_payment_requirements',
      hint: "Give the route extra: { spender }, or exactEvmServer({ spender }): a signer of the facilitator (its /supported signers['eip155:*']).",
    })
  return { assetTransferMethod: Eip2612.assetTransferMethod, spender: getAddress(spender) }
}
