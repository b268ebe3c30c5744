/**
 * Closing a payer's channel (x402 `specs/schemes/batch-settlement/`, refund and withdrawal): a
 * cooperative refund, where the payer signs a voucher for what it was charged and the server has its
 * facilitator refund the rest at once; or a unilateral withdrawal, which the payer starts on chain and
 * finishes after the channel's withdraw delay, the receiver claiming its vouchers meanwhile.
 */
import { type Address, getAddress, type Hex, isAddressEqual, type PublicClient, parseAbi, type WalletClient } from 'viem'
import * as Base64Json from '../../core/Base64Json.ts'
import { BaseError } from '../../core/Errors.ts'
import { settleResponse } from '../../core/Facilitator.ts'
import { HttpHeader } from '../../core/HttpHeader.ts'
import * as Network from '../../core/Network.ts'
import * as PaymentPayload from '../../core/PaymentPayload.ts'
import * as PaymentRequired from '../../core/PaymentRequired.ts'
import type { EvmSigner } from '../Signer.ts'
import * as Channel from './Channel.ts'
import type { PayerChannelRecord } from './clientStore.ts'

/** The escrow functions a payer calls and reads (`contracts/BatchSettlement.md`). */
export const payerEscrowAbi = parseAbi([
  'struct ChannelConfig { address payer; address payerAuthorizer; address receiver; address receiverAuthorizer; address token; uint40 withdrawDelay; bytes32 salt; }',
  'function channels(bytes32 channelId) view returns (uint128 balance, uint128 totalClaimed)',
  'function pendingWithdrawals(bytes32 channelId) view returns (uint128 amount, uint40 initiatedAt)',
  'function initiateWithdraw(ChannelConfig config, uint128 amount)',
  'function finalizeWithdraw(ChannelConfig config)',
])

export type CloseContext = {
  signer: EvmSigner
  escrow: Address
  publicClient: PublicClient | undefined
  walletClient: WalletClient | undefined
  sign(channelId: Hex, maxClaimableAmount: bigint, chainId: number): Promise<Hex>
  reconcile(record: PayerChannelRecord): Promise<void>
}

/** What closing one channel did. */
export type CloseResult = {
  id: Hex
  how: 'refund' | 'withdraw'
  ok: boolean
  /** Refunded at once, or to be withdrawn once the delay has passed. */
  amount?: bigint
  transaction?: string
  /** For a withdrawal: when it may be finished (seconds since the epoch). */
  finalizeAfter?: number
  /** Why a refund was refused: the server's reason code or message. */
  reason?: string
}

/** The channel as the escrow has it. */
export async function readEscrow(client: PublicClient, escrow: Address, id: Hex) {
  const at = { address: escrow, abi: payerEscrowAbi } as const
  const [[balance, totalClaimed], [amount, initiatedAt]] = await Promise.all([
    client.readContract({ ...at, functionName: 'channels', args: [id] }),
    client.readContract({ ...at, functionName: 'pendingWithdrawals', args: [id] }),
  ])
  return { balance, totalClaimed, withdrawal: amount > 0n ? { amount, finalizeAfter: Number(initiatedAt) } : undefined }
}

/**
 * A cooperative refund: the resource is asked for its current offer, then sent a `refund` payload with
 * a voucher for what was charged. Refunds `amount`, or everything not charged.
 */
export async function refundChannel(
  context: CloseContext,
  record: PayerChannelRecord,
  options: { amount?: bigint; fetch?: typeof fetch } = {},
): Promise<CloseResult> {
  const fetcher = options.fetch ?? fetch
  const refuse = (reason: string): CloseResult => ({ id: record.id, how: 'refund', ok: false, reason })
  const probe = await fetcher(record.resource)
  await probe.body?.cancel().catch(() => {})
  const header = probe.headers.get(HttpHeader.paymentRequired)
  if (probe.status !== 402 || header === null) return refuse(`The resource answered ${probe.status} without an offer.`)
  const asked = PaymentRequired.decode(header)
  const offer = asked.accepts.find(
    (candidate) =>
      candidate.scheme === Channel.scheme &&
      candidate.network === record.network &&
      isAddressEqual(getAddress(candidate.payTo), record.config.receiver) &&
      isAddressEqual(getAddress(candidate.asset), record.config.token),
  )
  if (!offer) return refuse('The resource no longer offers this channel.')
  const chainId = Network.chainId(record.network)
  const signature = await context.sign(record.id, record.charged, chainId)
  const payload = {
    type: 'refund',
    channelConfig: record.config,
    voucher: { channelId: record.id, maxClaimableAmount: record.charged.toString(), signature },
    ...(options.amount !== undefined && { amount: options.amount.toString() }),
  }
  const paid = PaymentPayload.encode({
    x402Version: 2,
    resource: asked.resource,
    accepted: offer,
    payload,
    ...(asked.extensions && { extensions: asked.extensions }),
  })
  const answer = await fetcher(record.resource, { headers: { [HttpHeader.paymentSignature]: paid } })
  await answer.body?.cancel().catch(() => {})
  const receipt = answer.headers.get(HttpHeader.paymentResponse)
  const settlement = receipt === null ? undefined : Base64Json.decode(receipt, settleResponse, { what: 'PAYMENT-RESPONSE header' })
  if (answer.status >= 400 || !settlement?.success) {
    const required = answer.headers.get(HttpHeader.paymentRequired)
    const reason = settlement?.errorReason ?? (required ? PaymentRequired.decode(required).error : undefined)
    return refuse(reason ?? `The server answered ${answer.status}.`)
  }
  const before = record.balance
  if (context.publicClient) await context.reconcile(record)
  else record.balance = options.amount === undefined ? record.charged : record.balance - options.amount
  if (record.balance <= record.charged) record.closed = true
  return { id: record.id, how: 'refund', ok: true, amount: before - record.balance, transaction: settlement.transaction }
}

/** Starts a withdrawal of everything the receiver has not claimed; the receiver may still claim its vouchers during the delay. */
export async function startWithdrawal(context: CloseContext, record: PayerChannelRecord) {
  const { publicClient, walletClient } = needChain(context)
  const chain = await readEscrow(publicClient, context.escrow, record.id)
  const amount = chain.balance - chain.totalClaimed
  if (amount <= 0n) throw new BaseError('The channel holds nothing to withdraw.', { code: 'channel_empty' })
  const hash = await walletClient.writeContract({
    account: walletClient.account ?? context.signer.address,
    chain: walletClient.chain,
    address: context.escrow,
    abi: payerEscrowAbi,
    functionName: 'initiateWithdraw',
    args: [record.config, amount],
  })
  const receipt = await publicClient.waitForTransactionReceipt({ hash })
  if (receipt.status !== 'success') throw new BaseError('The withdrawal reverted.', { code: 'withdraw_reverted', details: hash })
  const block = await publicClient.getBlock({ blockNumber: receipt.blockNumber })
  const finalizeAfter = Number(block.timestamp) + record.config.withdrawDelay
  record.withdrawal = { amount, finalizeAfter }
  return { hash, amount, finalizeAfter }
}

/** Finishes a withdrawal after the delay: the escrow pays the payer what is still unclaimed, up to the amount started. */
export async function finishWithdrawal(context: CloseContext, record: PayerChannelRecord) {
  const { publicClient, walletClient } = needChain(context)
  const before = (await readEscrow(publicClient, context.escrow, record.id)).balance
  const hash = await walletClient.writeContract({
    account: walletClient.account ?? context.signer.address,
    chain: walletClient.chain,
    address: context.escrow,
    abi: payerEscrowAbi,
    functionName: 'finalizeWithdraw',
    args: [record.config],
  })
  const receipt = await publicClient.waitForTransactionReceipt({ hash })
  if (receipt.status !== 'success')
    throw new BaseError('Finishing the withdrawal reverted.', {
      code: 'withdraw_reverted',
      details: hash,
      hint: record.withdrawal ? `It may be finished after ${new Date(record.withdrawal.finalizeAfter * 1000).toISOString()}.` : undefined,
    })
  await context.reconcile(record)
  record.withdrawal = undefined
  record.closed = true
  return { hash, amount: before - record.balance }
}

/** Closes channels one by one: a cooperative refund first, else a withdrawal where a wallet is given. */
export async function closeChannels(
  open: readonly PayerChannelRecord[],
  locked: <result>(record: PayerChannelRecord, task: (record: PayerChannelRecord) => Promise<result>) => Promise<result>,
  context: CloseContext,
  options: { fetch?: typeof fetch } = {},
): Promise<CloseResult[]> {
  const results: CloseResult[] = []
  for (const record of open) {
    const refunded = await locked(record, (current) => refundChannel(context, current, options).catch((error) => failed(current, error)))
    if (refunded.ok || !context.walletClient || !context.publicClient) {
      results.push(refunded)
      continue
    }
    const started = await locked(record, (current) => startWithdrawal(context, current))
    results.push({
      id: record.id,
      how: 'withdraw',
      ok: true,
      amount: started.amount,
      transaction: started.hash,
      finalizeAfter: started.finalizeAfter,
      reason: refunded.reason,
    })
  }
  return results
}

function failed(record: PayerChannelRecord, error: unknown): CloseResult {
  return { id: record.id, how: 'refund', ok: false, reason: error instanceof BaseError ? error.shortMessage : String(error) }
}

function needChain(context: CloseContext): { publicClient: PublicClient; walletClient: WalletClient } {
  if (!context.publicClient || !context.walletClient)
    throw new BaseError('A withdrawal needs the chain.', {
      code: 'invalid_config',
      hint: 'Give the client a publicClient and a walletClient.',
    })
  return { publicClient: context.publicClient, walletClient: context.walletClient }
}
