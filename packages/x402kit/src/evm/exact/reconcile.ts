/**
 * Reconciliation of an EIP-3009 settlement left `settling` (sent one by one, outside the pipeline):
 * the chain's record of the authorization decides. Used: settled when the transaction that used it
 * made this very transfer, else failed. Unused: back to `verified` only once nothing of ours that
 * could still use it is pending, so a settlement sent again can never race the first.
 */
import { getAddress, type Hash, type Hex, TransactionNotFoundError, TransactionReceiptNotFoundError } from 'viem'
import type { Reconciled } from '../../core/Scheme.ts'
import type { SettlementRecord } from '../../facilitator/Store.ts'
import { answerOf, lookUp } from './batch/outcomes.ts'
import type { Context, NetworkState } from './state.ts'

/** `network:asset:payer:nonce`, the key of an EIP-3009 payment (`verify.ts`). */
const eip3009Key = /^(eip155:\d+):(0x[0-9a-f]{40}):(0x[0-9a-f]{40}):(0x[0-9a-f]{64})$/

export async function reconcile(context: Context, record: SettlementRecord): Promise<Reconciled | undefined> {
  const match = eip3009Key.exec(record.key)
  const state = match && context.networks.get(match[1]!)
  if (!match || !state) return undefined
  const [, network, asset, payer, nonce] = match as unknown as [string, string, Hex, Hex, Hex]
  const item = {
    payment: { key: record.key, asset },
    authorization: { from: getAddress(payer), to: getAddress(record.payTo), value: BigInt(record.amount), nonce },
  }
  const verdict = await lookUp(state, item)
  if (verdict.status !== 'queued') return { status: verdict.status, result: answerOf(verdict, network) }
  // Unused on chain. A transaction of ours the node still holds could use it yet: wait for it.
  if (record.transaction && (await pending(state.client, record.transaction as Hash))) return undefined
  return { status: 'verified' }
}

async function pending(client: NetworkState['client'], hash: Hash): Promise<boolean> {
  try {
    await client.getTransactionReceipt({ hash })
    return false
  } catch (error) {
    if (!(error instanceof TransactionReceiptNotFoundError)) throw error
  }
  try {
    await client.getTransaction({ hash })
    return true
  } catch (error) {
    if (error instanceof TransactionNotFoundError) return false
    throw error
  }
}
