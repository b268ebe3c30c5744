/**
 * Verification of a `txproof` payment: the offer, the proof's signature (offline), then the chain —
 * the receipt, who sent it, the transfer it made, its confirmations and its age.
 *
 * That a transaction is presented at most once is not checked here: the facilitator's settlement
 * store holds `settlementKey` for every proof verified or settled, across restarts and instances.
 */
import {
  type Address,
  BlockNotFoundError,
  erc20Abi,
  getAddress,
  type Hash,
  type Hex,
  hashTypedData,
  isAddress,
  isAddressEqual,
  parseEventLogs,
  TransactionNotFoundError,
  type TransactionReceipt,
  TransactionReceiptNotFoundError,
  BaseError as ViemBaseError,
} from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { Payment, VerifyResponse } from '../../core/Facilitator.ts'
import * as PaymentRequirements from '../../core/PaymentRequirements.ts'
import { verifyResponse } from '../Outcome.ts'
import { recoverAddress } from '../recover.ts'
import * as Proof from './Proof.ts'
import { type Context, checkChain, type NetworkState } from './state.ts'

/** How far ahead of this facilitator's clock a block may be stamped: validators' clocks drift a little. */
export const maxClockSkewSeconds = 60

const maxUint256 = 2n ** 256n - 1n

export type Failure = { ok: false; reason: Reason; message?: string; payer?: Address }
export type Verified = { ok: true; payer: Address; transaction: Hash }

type Claim = {
  state: NetworkState
  transaction: Hash
  signer: Address
  asset: Address
  payTo: Address
  amount: bigint
  confirmations: number
  maxAgeSeconds: number
}

/** Verifies a payment; infrastructure failures become `unexpected_verify_error`, never a throw. */
export function verify(context: Context, payment: Payment): Promise<VerifyResponse> {
  return verifyResponse(() => check(context, payment))
}

/** Every check of a payment; throws only when the chain could not be asked. */
export async function check(context: Context, payment: Payment, now = Date.now()): Promise<Failure | Verified> {
  const claim = checkOffline(context, payment)
  if ('ok' in claim) return claim
  return checkOnChain(claim, Math.floor(now / 1000))
}

/**
 * The identity of what a payment spends, `network:txproof:transaction` in lower case: one
 * transaction pays for one request.
 */
export function settlementKey(payment: Payment): string | undefined {
  const parsed = Proof.payload.safeParse(payment?.payload?.payload)
  const network = payment?.requirements?.network
  if (!parsed.success || typeof network !== 'string') return undefined
  return `${network}:${Proof.scheme}:${parsed.data.transaction}`.toLowerCase()
}

function checkOffline(context: Context, payment: Payment): Failure | Claim {
  const payload = payment?.payload
  const requirements = payment?.requirements
  if (payload?.x402Version !== 2 || !requirements) return fail(Reason.invalidX402Version, 'Expected an x402 version 2 payment.')
  const accepted = payload.accepted
  if (requirements.scheme !== Proof.scheme || accepted?.scheme !== Proof.scheme) return fail(Reason.invalidScheme)
  if (accepted.network !== requirements.network)
    return fail(Reason.invalidNetwork, `The payment is for ${accepted.network}, the offer for ${requirements.network}.`)
  const state = context.networks.get(requirements.network)
  if (!state) return fail(Reason.invalidNetwork, `This facilitator does not serve ${requirements.network}.`)
  if (!PaymentRequirements.matches(requirements, accepted))
    return fail(Reason.offerMismatch, 'The accepted offer differs from the requirements in amount, asset or payTo.')
  if (!isAddress(requirements.asset, { strict: false }) || !isAddress(requirements.payTo, { strict: false }))
    return fail(Reason.invalidPaymentRequirements, 'asset and payTo must be addresses.')
  const amount = BigInt(requirements.amount)
  if (amount > maxUint256) return fail(Reason.invalidPaymentRequirements, 'The amount is out of range.')
  const offered = Proof.confirmationsOf(requirements.extra)
  if (offered === undefined) return fail(Reason.invalidPaymentRequirements, 'extra.confirmations must be a whole number.')

  const parsed = Proof.payload.safeParse(payload.payload)
  if (!parsed.success) {
    const onlySignature = parsed.error.issues.every((issue) => issue.path[0] === 'signature')
    return fail(onlySignature ? Reason.txproofSignature : Reason.invalidPayload, parsed.error.issues[0]?.message)
  }
  const transaction = parsed.data.transaction as Hash
  const asset = getAddress(requirements.asset)
  const payTo = getAddress(requirements.payTo)
  // The resource is the server's (the paywall passes its own), so a proof signed for one resource buys no other.
  const resource = payload.resource?.url ?? ''
  const digest = hashTypedData(Proof.typedData(state.chainId, { transaction, asset, payTo, amount, resource }))
  let signer: Address
  try {
    signer = recoverAddress(digest, parsed.data.signature as Hex)
  } catch {
    return fail(Reason.txproofSignature, 'The signature does not recover to an address (malformed or high s).')
  }
  return {
    state,
    transaction,
    signer,
    asset,
    payTo,
    amount,
    confirmations: Math.max(offered, state.confirmations),
    maxAgeSeconds: requirements.maxTimeoutSeconds,
  }
}

async function checkOnChain(claim: Claim, now: number): Promise<Failure | Verified> {
  const { state, transaction: hash, signer, payTo, amount } = claim
  const native = Proof.isNativeCoin(claim.asset)
  await checkChain(state)
  const [receipt, latest, transaction] = await Promise.all([
    absentAs(TransactionReceiptNotFoundError, state.client.getTransactionReceipt({ hash })),
    state.client.getBlock({ blockTag: 'latest' }),
    native ? absentAs(TransactionNotFoundError, state.client.getTransaction({ hash })) : undefined,
  ])
  if (!receipt || (native && !transaction)) return fail(Reason.txproofNotFound, `No mined transaction ${hash} on ${state.network}.`)
  if (receipt.status !== 'success') return fail(Reason.txproofReverted, `Transaction ${hash} reverted.`)
  if (!isAddressEqual(receipt.from, signer))
    return fail(Reason.txproofSignature, 'The proof is not signed by the account that sent the transaction.')
  const payer = signer

  const paid = native
    ? transaction?.to != null && isAddressEqual(transaction.to, payTo) && transaction.value >= amount
    : hasTransfer(receipt, claim)
  if (!paid)
    return fail(
      Reason.txproofTransferMismatch,
      `The transaction does not transfer at least ${amount} of ${claim.asset} from ${signer} to ${payTo}.`,
      payer,
    )
  const confirmations = latest.number - receipt.blockNumber + 1n
  if (confirmations < BigInt(claim.confirmations))
    return fail(
      Reason.txproofConfirmations,
      `The transaction has ${confirmations} confirmations of the ${claim.confirmations} required.`,
      payer,
    )

  const block = await absentAs(BlockNotFoundError, state.client.getBlock({ blockHash: receipt.blockHash }))
  if (!block) return fail(Reason.txproofNotFound, `The block of transaction ${hash} is no longer on the chain.`, payer)
  // "Now" is the later of this clock and the chain's: a chain that has moved on shows the proof old
  // even where the clock here lags. Ahead of this clock, a block can only be a few seconds off.
  const since = Math.max(now, Number(latest.timestamp)) - claim.maxAgeSeconds
  const minedAt = Number(block.timestamp)
  if (minedAt < since || minedAt > now + maxClockSkewSeconds)
    return fail(
      Reason.txproofOutsideWindow,
      `The transaction was mined at ${minedAt}; this offer accepts transactions mined from ${since} to ${now + maxClockSkewSeconds}.`,
      payer,
    )
  return { ok: true, payer, transaction: hash }
}

/** Whether the offered token logged a `Transfer` of at least the amount from the signer to `payTo`. */
function hasTransfer(receipt: TransactionReceipt, claim: Claim): boolean {
  const logs = parseEventLogs({
    abi: erc20Abi,
    eventName: 'Transfer',
    logs: receipt.logs.filter((log) => isAddressEqual(log.address, claim.asset)),
  })
  return logs.some(
    ({ args }) => isAddressEqual(args.from, claim.signer) && isAddressEqual(args.to, claim.payTo) && args.value >= claim.amount,
  )
}

/** The value of a read, or `undefined` when the node says there is no such thing; other errors are thrown. */
async function absentAs<T>(notFound: abstract new (...args: never[]) => Error, read: Promise<T>): Promise<T | undefined> {
  try {
    return await read
  } catch (error) {
    if (error instanceof notFound || (error instanceof ViemBaseError && error.walk((e) => e instanceof notFound))) return undefined
    throw error
  }
}

function fail(reason: Reason, message?: string, payer?: Address): Failure {
  return { ok: false, reason, ...(message !== undefined && { message }), ...(payer !== undefined && { payer }) }
}
