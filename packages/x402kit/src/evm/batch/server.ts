/**
 * The seller's part of `batch-settlement` on EVM: a price on a network becomes an offer the reference
 * client opens a channel for — the token's EIP-712 domain (for the EIP-3009 deposit), the receiver
 * authorizer that claims the vouchers, and the channel's withdraw delay.
 */
import { getAddress, isAddress, zeroAddress } from 'viem'
import { BaseError } from '../../core/Errors.ts'
import * as Money from '../../core/Money.ts'
import * as Network from '../../core/Network.ts'
import type { SchemeServer } from '../../core/Scheme.ts'
import * as Channel from './Channel.ts'
import { type BatchSettlementEvmSeller, type BatchSettlementEvmSellerOptions, createSeller } from './seller.ts'

export type { BatchSettlementEvmSeller, BatchSettlementEvmSellerOptions, SellerClaimResult } from './seller.ts'
export type { AuthorizerSigner } from './sellerClaims.ts'
export {
  memorySellerChannelStore,
  type SellerChannelRecord,
  type SellerChannelStore,
  type SqlQueryable,
  sqlSellerChannelStore,
} from './sellerStore.ts'

export type BatchSettlementEvmServerOptions = {
  /** The address that claims the channel's vouchers: a signer of the facilitator that settles them. */
  receiverAuthorizer: string
  /** Seconds a payer waits between starting and finishing a withdrawal; default 900 (the escrow's minimum). */
  withdrawDelay?: number
  /** The deposit the seller asks a new channel to make, in atomic units (`extra.minDeposit`). */
  minDeposit?: bigint
}

/**
 * `batch-settlement` on EVM for a resource server. Given a `facilitator`, the server keeps the channels
 * and checks each voucher itself (`seller.ts`): no facilitator call per paid request, deposits and
 * claims through the facilitator. Without one, it only makes offers and the paywall's facilitator
 * judges every payment.
 *
 * @example
 * ```ts
 * import { batchSettlementEvmServer, sqlSellerChannelStore } from 'x402kit/evm'
 * import { httpFacilitator } from 'x402kit/facilitator'
 * const channels = batchSettlementEvmServer({
 *   receiverAuthorizer: facilitatorSigner,
 *   facilitator: httpFacilitator('http://localhost:4020'),
 *   store: sqlSellerChannelStore(db),
 *   claims: { intervalMs: 60_000, threshold: 10_000_000n },
 * })
 * ```
 */
export function batchSettlementEvmServer(
  options: BatchSettlementEvmServerOptions & BatchSettlementEvmSellerOptions,
): BatchSettlementEvmSeller
export function batchSettlementEvmServer(options: BatchSettlementEvmServerOptions): SchemeServer
export function batchSettlementEvmServer(
  options: BatchSettlementEvmServerOptions & Partial<BatchSettlementEvmSellerOptions>,
): SchemeServer | BatchSettlementEvmSeller {
  const offers = offerMaker(options)
  return options.facilitator ? createSeller(offers, { ...options, facilitator: options.facilitator }) : offers
}

function offerMaker(options: BatchSettlementEvmServerOptions): SchemeServer {
  if (!isAddress(options.receiverAuthorizer, { strict: false }) || getAddress(options.receiverAuthorizer) === zeroAddress)
    throw new BaseError('batch-settlement needs a receiver authorizer address.', {
      code: 'invalid_config',
      hint: "Pass a signer of the facilitator that settles the channels (its /supported signers['eip155:*']).",
    })
  const withdrawDelay = options.withdrawDelay ?? Channel.minWithdrawDelay
  if (!Number.isInteger(withdrawDelay) || withdrawDelay < Channel.minWithdrawDelay || withdrawDelay > Channel.maxWithdrawDelay)
    throw new BaseError(`A withdraw delay is ${Channel.minWithdrawDelay} to ${Channel.maxWithdrawDelay} seconds.`, {
      code: 'invalid_config',
    })
  const receiverAuthorizer = getAddress(options.receiverAuthorizer)
  return {
    scheme: Channel.scheme,
    requirements({ price, network, payTo, asset, maxTimeoutSeconds, extra }) {
      const token = asset ?? Network.asset(network)
      if (!token)
        throw new BaseError(`No default asset is known for ${network}.`, {
          code: 'invalid_payment_requirements',
          hint: 'Give the route an asset: { address, name, version, decimals }.',
        })
      return {
        scheme: Channel.scheme,
        network: Network.toCaip2(network),
        amount: Money.parse(price, token.decimals).toString(),
        asset: getAddress(token.address),
        payTo: getAddress(payTo),
        maxTimeoutSeconds: maxTimeoutSeconds ?? 300,
        extra: {
          name: token.name,
          version: token.version,
          assetTransferMethod: 'eip3009',
          receiverAuthorizer,
          withdrawDelay,
          ...(options.minDeposit !== undefined && { minDeposit: options.minDeposit.toString() }),
          ...extra,
        },
      }
    },
  }
}
