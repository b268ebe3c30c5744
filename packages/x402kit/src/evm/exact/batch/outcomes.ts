/**
 * What became of each payment of a batch, read from the chain: the token's `AuthorizationUsed` log
 * in the batch's receipt means settled; the batcher's `Failed` log carries the token's refusal; and a
 * payment the receipt does not explain is looked up by its authorization (`authorizationState`, then
 * the log of the transaction that used it). The authorization nonce is the chain's own proof that a
 * payment moved at most once, whichever transaction moved it.
 */
import {
  type Address,
  decodeErrorResult,
  getAddress,
  type Hash,
  type Hex,
  isAddressEqual,
  parseEventLogs,
  type TransactionReceipt,
} from 'viem'
import { Reason } from '../../../core/Errors.ts'
import type { SettleResponse } from '../../../core/Facilitator.ts'
import type { PaymentOutcome, QueuedPayment } from '../../../facilitator/Queue.ts'
import { eip3009Abi } from '../abi.ts'
import type { NetworkState } from '../state.ts'
import { hasTransfer } from '../transactions.ts'
import { type BatchAuthorization, failedEvent } from './abi.ts'

export const authorizationUsedEvent = {
  type: 'event',
  name: 'AuthorizationUsed',
  inputs: [
    { name: 'authorizer', type: 'address', indexed: true },
    { name: 'nonce', type: 'bytes32', indexed: true },
  ],
} as const

/** A payment of a batch with the authorization it carries into the transaction. */
export type Item = { payment: QueuedPayment; authorization: BatchAuthorization }

/** What a payment's outcome is looked up by: its key and asset, and the authorization it carries. */
export type Lookup = { payment: { key: string; asset: string }; authorization: Pick<BatchAuthorization, 'from' | 'to' | 'value' | 'nonce'> }

/** An outcome, before the settled answer is finished (an access credential added) by the facilitator. */
export type Verdict<item extends Lookup = Item> =
  | { key: string; status: 'settled'; item: item; transaction: Hash; ours: boolean }
  | { key: string; status: 'failed'; item: item; reason: string; message: string; transaction?: Hash }
  | { key: string; status: 'queued' }

/** How many blocks back a payment's authorization is looked for when its batch's receipt does not explain it. */
const lookbackBlocks = 100_000n

/** The verdict on every item of a mined batch transaction. */
export async function verdictsOf(
  state: NetworkState,
  receipt: TransactionReceipt,
  batcher: Address,
  items: readonly Item[],
): Promise<Verdict[]> {
  const asset = items[0] ? getAddress(items[0].payment.asset) : undefined
  const used = new Set<string>()
  if (asset)
    for (const log of parseEventLogs({
      abi: [authorizationUsedEvent],
      logs: receipt.logs.filter((log) => isAddressEqual(log.address, asset)),
    }))
      used.add(`${log.args.authorizer.toLowerCase()} ${log.args.nonce.toLowerCase()}`)
  const refusals = new Map<number, Hex>()
  for (const log of parseEventLogs({ abi: [failedEvent], logs: receipt.logs.filter((log) => isAddressEqual(log.address, batcher)) }))
    refusals.set(Number(log.args.index), log.args.reason)

  return Promise.all(
    items.map(async (item, index): Promise<Verdict> => {
      const { from, nonce } = item.authorization
      if (receipt.status === 'success' && used.has(`${from.toLowerCase()} ${nonce.toLowerCase()}`))
        return { key: item.payment.key, status: 'settled', item, transaction: receipt.transactionHash, ours: true }
      const refusal = refusals.get(index)
      if (receipt.status === 'success' && refusal !== undefined) {
        const message = revertMessage(refusal)
        const reason = reasonOf(message)
        // Used or cancelled: by whom, and for this payment or another, only the chain can say.
        if (reason !== undefined)
          return { key: item.payment.key, status: 'failed', item, reason, message, transaction: receipt.transactionHash }
      }
      return lookUp(state, item)
    }),
  )
}

/**
 * A payment no receipt of ours explains: back to the queue while its authorization is unused;
 * settled when the transaction that used it made this very transfer (anyone may submit an EIP-3009
 * authorization); otherwise failed, as the payer spent or cancelled the authorization elsewhere.
 */
export async function lookUp<item extends Lookup>(state: NetworkState, item: item): Promise<Verdict<item>> {
  const { from, nonce } = item.authorization
  const asset = getAddress(item.payment.asset)
  const usedOnChain = await state.client.readContract({
    address: asset,
    abi: eip3009Abi,
    functionName: 'authorizationState',
    args: [getAddress(from), nonce],
  })
  if (!usedOnChain) return { key: item.payment.key, status: 'queued' }
  // Not a cached block number: the authorization may have been used in the block just mined.
  const latest = await state.client.getBlockNumber({ cacheTime: 0 })
  const logs = await state.client.getLogs({
    address: asset,
    event: authorizationUsedEvent,
    args: { authorizer: getAddress(from), nonce },
    fromBlock: latest > lookbackBlocks ? latest - lookbackBlocks : 0n,
    toBlock: 'latest',
  })
  const transaction = logs[0]?.transactionHash
  if (transaction) {
    const receipt = await state.client.getTransactionReceipt({ hash: transaction })
    const { to, value } = item.authorization
    if (hasTransfer(receipt, asset, { from, to, value: String(value) }))
      return { key: item.payment.key, status: 'settled', item, transaction, ours: false }
  }
  return {
    key: item.payment.key,
    status: 'failed',
    item,
    reason: Reason.authorizationUsedElsewhere,
    message: 'The authorization was used or cancelled on chain by a transaction that did not make this transfer.',
    ...(transaction && { transaction }),
  }
}

/** The message of a token's revert data: `Error(string)`, a custom error's name, or the raw bytes. */
export function revertMessage(data: Hex): string {
  if (data === '0x') return 'The token reverted without a reason.'
  try {
    const decoded = decodeErrorResult({ abi: [], data })
    return decoded.errorName === 'Error' ? String(decoded.args?.[0]) : decoded.errorName
  } catch {
    return `The token reverted with ${data.slice(0, 74)}.`
  }
}

/**
 * The reason code of a token's refusal, `undefined` for "used or cancelled" (which the chain must
 * explain). FiatToken's messages; any other refusal is a failed transfer with its message.
 */
export function reasonOf(message: string): string | undefined {
  if (/used or canceled|used or cancelled/i.test(message)) return undefined
  if (/invalid signature/i.test(message)) return Reason.exactSignature
  if (/authorization is expired/i.test(message)) return Reason.exactValidBefore
  if (/not yet valid/i.test(message)) return Reason.exactValidAfter
  if (/exceeds balance/i.test(message)) return Reason.exactInsufficientBalance
  return Reason.exactTransactionFailed
}

/** The settle answer of a verdict, before the facilitator finishes it. */
export function answerOf(verdict: Exclude<Verdict<Lookup>, { status: 'queued' }>, network: string): SettleResponse {
  const payer = getAddress(verdict.item.authorization.from)
  if (verdict.status === 'settled')
    return { success: true, payer, transaction: verdict.transaction, network, amount: String(verdict.item.authorization.value) }
  return {
    success: false,
    errorReason: verdict.reason,
    errorMessage: verdict.message,
    payer,
    transaction: verdict.transaction ?? '',
    network,
  }
}

export type { PaymentOutcome }
