/**
 * The payer's part of `exact` on EVM: sign an EIP-3009 authorization for the offer.
 */
import { getAddress, type Hex, toHex } from 'viem'
import { BaseError } from '../../core/Errors.ts'
import * as Network from '../../core/Network.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import type { SchemeClient } from '../../core/Scheme.ts'
import type { EvmSigner } from '../Signer.ts'
import * as Eip3009 from './Eip3009.ts'

/** How far back `validAfter` is set, so a payer's clock running ahead of the chain does not matter. */
const clockSkewSeconds = 600

/**
 * `exact` on EVM for a payer.
 *
 * @example
 * ```ts
 * import { exactEvmClient, toEvmSigner } from 'x402kit/evm'
 * const scheme = exactEvmClient(await toEvmSigner(account))
 * ```
 */
export function exactEvmClient(signer: EvmSigner): SchemeClient {
  return {
    scheme: 'exact',
    canPay(offer) {
      if (offer.scheme !== 'exact' || !offer.network.startsWith('eip155:')) return false
      const extra = offer.extra ?? {}
      // Offers settled by other methods (permit, Permit2) carry their own marker; EIP-3009 is the default.
      const method = extra.assetTransferMethod
      return typeof extra.name === 'string' && typeof extra.version === 'string' && (method === undefined || method === 'eip3009')
    },
    async createPayload(offer) {
      const auth = authorizationFor(signer.address, offer)
      const signature = await signer.signTypedData(Eip3009.typedData(domainOf(offer), auth) as never)
      return { signature, authorization: auth }
    },
  }
}

export function authorizationFor(from: string, offer: PaymentRequirements, now = Math.floor(Date.now() / 1000)): Eip3009.Authorization {
  return {
    from: getAddress(from),
    to: getAddress(offer.payTo),
    value: offer.amount,
    validAfter: String(now - clockSkewSeconds),
    validBefore: String(now + offer.maxTimeoutSeconds),
    nonce: randomNonce(),
  }
}

export function domainOf(offer: PaymentRequirements): Eip3009.Domain {
  const name = offer.extra?.name
  const version = offer.extra?.version
  if (typeof name !== 'string' || typeof version !== 'string')
    throw new BaseError('The offer has no EIP-712 domain (extra.name, extra.version).', { code: 'invalid_exact_evm_missing_eip712_domain' })
  return { name, version, chainId: Network.chainId(offer.network), verifyingContract: getAddress(offer.asset) }
}

function randomNonce(): Hex {
  return toHex(crypto.getRandomValues(new Uint8Array(32)))
}
