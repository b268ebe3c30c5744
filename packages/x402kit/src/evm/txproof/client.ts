/**
 * The payer's part of `txproof` on EVM: send the transfer the offer asks for, wait until it has the
 * confirmations the offer asks for, then sign the proof that binds it to this offer and resource.
 */
import {
  type Account,
  type Chain,
  erc20Abi,
  getAddress,
  type Hash,
  isAddress,
  type PublicClient,
  publicActions,
  type Transport,
  type WalletClient,
} from 'viem'
import { BaseError } from '../../core/Errors.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import type { SchemeClient } from '../../core/Scheme.ts'
import * as Proof from './Proof.ts'

export type TxproofClientConfig = {
  /** Sends the transfer (and pays its gas) from its account, and signs the proof with it. */
  wallet: WalletClient<Transport, Chain, Account>
  /** Where receipts are read; default the wallet's own transport. */
  publicClient?: PublicClient
  /** Confirmations to wait for at least, even where an offer asks for fewer; default 1. */
  confirmations?: number
  /** How often the receipt is polled; default the client's polling interval. */
  pollingIntervalMs?: number
}

export class TxproofPaymentError extends BaseError {
  override name = 'TxproofPaymentError'
  /** The payment transaction, once sent: it can still be proven with `signTransactionProof` when it confirms. */
  readonly transaction: Hash | undefined
  constructor(shortMessage: string, options: { transaction?: Hash; cause?: unknown; hint?: string } = {}) {
    super(shortMessage, { code: 'txproof_payment_failed', cause: options.cause, hint: options.hint })
    this.transaction = options.transaction
  }
}

/**
 * `txproof` on EVM for a payer: pays an offer by sending the transfer itself. Give it to `wrapFetch`
 * with `schemes`; offers in the chain's native coin need a budget in atomic units (`perRequestAtomic`).
 *
 * @example
 * ```ts
 * import { createWalletClient, http } from 'viem'
 * import { privateKeyToAccount } from 'viem/accounts'
 * import { base } from 'viem/chains'
 * import { wrapFetch } from 'x402kit/client'
 * import { txproofClient } from 'x402kit/evm'
 * const wallet = createWalletClient({ account: privateKeyToAccount(key), chain: base, transport: http() })
 * const pay = wrapFetch(fetch, { schemes: [txproofClient({ wallet })], budget: { perRequest: '$0.50' } })
 * ```
 */
export function txproofClient(config: TxproofClientConfig): SchemeClient {
  const { wallet } = config
  const network = `eip155:${wallet.chain.id}`
  const reader = config.publicClient ?? wallet.extend(publicActions)
  return {
    scheme: Proof.scheme,
    canPay(offer) {
      const extra = offer.extra ?? {}
      return (
        offer.scheme === Proof.scheme &&
        offer.network === network &&
        isAddress(offer.asset, { strict: false }) &&
        isAddress(offer.payTo, { strict: false }) &&
        extra.name === Proof.domain.name &&
        extra.version === Proof.domain.version &&
        Proof.confirmationsOf(extra) !== undefined
      )
    },
    async createPayload(offer, { resource }) {
      const confirmations = Math.max(Proof.confirmationsOf(offer.extra) ?? Proof.defaultConfirmations, config.confirmations ?? 1)
      const transaction = await send(wallet, offer)
      let status: 'success' | 'reverted'
      try {
        ;({ status } = await reader.waitForTransactionReceipt({
          hash: transaction,
          confirmations,
          // A proof is accepted only this long after its transaction, so waiting longer is pointless.
          timeout: offer.maxTimeoutSeconds * 1000,
          ...(config.pollingIntervalMs !== undefined && { pollingInterval: config.pollingIntervalMs }),
        }))
      } catch (cause) {
        throw new TxproofPaymentError(`Payment transaction ${transaction} did not reach ${confirmations} confirmations.`, {
          transaction,
          cause,
          hint: 'Once it confirms, prove it with signTransactionProof, or check it on a block explorer.',
        })
      }
      if (status !== 'success') throw new TxproofPaymentError(`Payment transaction ${transaction} reverted.`, { transaction })
      return signTransactionProof(wallet, { transaction, offer, resource })
    },
  }
}

/**
 * The `txproof` payload for a transfer already sent from the wallet's account: the hash and the
 * account's signature binding it to `offer` and `resource`.
 *
 * @example
 * ```ts
 * import { signTransactionProof } from 'x402kit/evm'
 * const payload = await signTransactionProof(wallet, { transaction: hash, offer, resource: 'https://api.example.com/report' })
 * ```
 */
export async function signTransactionProof(
  wallet: WalletClient<Transport, Chain | undefined, Account>,
  input: { transaction: Hash; offer: PaymentRequirements; resource: string },
): Promise<Proof.Payload> {
  const { transaction, offer, resource } = input
  const chainId = Number(offer.network.split(':')[1])
  const typedData = Proof.typedData(chainId, { transaction, asset: offer.asset, payTo: offer.payTo, amount: offer.amount, resource })
  const signature = await wallet.signTypedData({ account: wallet.account, ...typedData })
  return { transaction, signature }
}

/** Sends the transfer an offer asks for: the amount in the native coin, or an ERC-20 `transfer`. */
function send(wallet: WalletClient<Transport, Chain, Account>, offer: PaymentRequirements): Promise<Hash> {
  const to = getAddress(offer.payTo)
  const amount = BigInt(offer.amount)
  if (Proof.isNativeCoin(offer.asset)) return wallet.sendTransaction({ account: wallet.account, chain: wallet.chain, to, value: amount })
  return wallet.writeContract({
    account: wallet.account,
    chain: wallet.chain,
    address: getAddress(offer.asset),
    abi: erc20Abi,
    functionName: 'transfer',
    args: [to, amount],
  })
}
