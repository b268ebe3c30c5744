/**
 * The payer's part of `exact` on EVM: sign an EIP-3009 authorization for the offer, or, where the
 * offer asks for it (`assetTransferMethod: 'eip2612'`), an EIP-2612 permit (`permit/client.ts`).
 */
import { type Client, getAddress, type Hex, toHex } from 'viem'
import { BaseError } from '../../core/Errors.ts'
import * as Network from '../../core/Network.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import type { SchemeClient } from '../../core/Scheme.ts'
import type { EvmSigner } from '../Signer.ts'
import * as Eip2612 from './Eip2612.ts'
import * as Eip3009 from './Eip3009.ts'
import { canPayPermit, permitPayload } from './permit/client.ts'

/** How far back `validAfter` is set, so a payer's clock running ahead of the chain does not matter. */
const clockSkewSeconds = 600

export type ExactEvmClientOptions = {
  /**
   * Reads the chain where a payment needs it: a permit is signed over the token's current
   * `nonces(owner)`. Without it, permit offers are not paid (`canPay` is false for them). One client
   * serves the network of its chain.
   */
  publicClient?: Client
}

/**
 * `exact` on EVM for a payer.
 *
 * @example
 * ```ts
 * import { createPublicClient, http } from 'viem'
 * import { exactEvmClient, toEvmSigner } from 'x402kit/evm'
 * const scheme = exactEvmClient(await toEvmSigner(account))
 * // permit offers too: the token's nonce is read through publicClient
 * const both = exactEvmClient(await toEvmSigner(account), { publicClient: createPublicClient({ chain, transport: http() }) })
 * ```
 */
export function exactEvmClient(signer: EvmSigner, options: ExactEvmClientOptions = {}): SchemeClient {
  return {
    scheme: 'exact',
    canPay(offer) {
      if (offer.scheme !== 'exact' || !offer.network.startsWith('eip155:')) return false
      const extra = offer.extra ?? {}
      if (typeof extra.name !== 'string' || typeof extra.version !== 'string') return false
      // Offers settled by other methods (permit, Permit2) carry their own marker; EIP-3009 is the default.
      const method = extra.assetTransferMethod
      if (method === undefined || method === 'eip3009') return true
      return method === Eip2612.assetTransferMethod && canPayPermit(offer, options.publicClient)
    },
    async createPayload(offer) {
      if (offer.extra?.assetTransferMethod === Eip2612.assetTransferMethod)
        return permitPayload(signer, offer, domainOf(offer), options.publicClient)
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
