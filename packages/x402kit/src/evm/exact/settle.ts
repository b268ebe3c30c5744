/**
 * Settlement of an `exact` EIP-3009 payment (specs/schemes/exact/scheme_exact_evm.md, "Settlement"):
 * re-verify, send `transferWithAuthorization` from a pool key, wait for the receipt.
 *
 * Once a transaction may have reached the node, the only outcomes are its receipt or
 * `settlement_pending` with its hash. A new transaction is never sent for the same payment: if the
 * first is mined late, the second would fail on chain at best, and for any other scheme charge twice.
 */
import {
  type Address,
  Eip1559FeesNotSupportedError,
  getAddress,
  type Hash,
  type Hex,
  isAddressEqual,
  keccak256,
  parseEventLogs,
  TransactionNotFoundError,
  type TransactionReceipt,
} from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { Payment, SettleResponse } from '../../core/Facilitator.ts'
import * as NonceManager from '../NonceManager.ts'
import { eip3009Abi } from './abi.ts'
import { type Context, checkChain, type Fees, type NetworkState, type SignerState } from './state.ts'
import { check, messageOf, payerOf, settlementKey, transferData, type Verified } from './verify.ts'

/** How long one fee estimate serves every settlement of a network. */
const feeTtlMs = 2_000

/** Settles a payment; never throws. */
export async function settle(context: Context, payment: Payment): Promise<SettleResponse> {
  const network = String(payment?.requirements?.network ?? payment?.payload?.accepted?.network ?? '')
  const failure = (errorReason: Reason, errorMessage?: string, payer = payerOf(payment), transaction = ''): SettleResponse => ({
    success: false,
    errorReason,
    ...(errorMessage === undefined ? {} : { errorMessage }),
    ...(payer === undefined ? {} : { payer }),
    transaction,
    network,
  })
  const key = settlementKey(payment)
  // Claimed before the first await: two concurrent settlements of one authorization would both pass
  // verification (the chain has not seen either yet), and both requests would be served.
  if (key && context.settling.has(key)) return failure(Reason.exactNonceAlreadyUsed, 'The authorization is being settled.')
  if (key) context.settling.add(key)
  let pending = false
  try {
    let verified: Awaited<ReturnType<typeof check>>
    try {
      verified = await check(context, payment, { simulate: false, settling: true })
    } catch (error) {
      return failure(Reason.unexpectedSettleError, messageOf(error))
    }
    if (!verified.ok) return failure(verified.reason, verified.message, verified.payer)
    let result: Settled
    try {
      result = await execute(context, verified)
    } catch (error) {
      // execute() reports every failure after a send itself; what reaches here happened before one.
      return failure(Reason.unexpectedSettleError, messageOf(error), verified.payer)
    }
    pending = result.errorReason === Reason.settlementPending
    return { ...result, network }
  } finally {
    // A pending settlement keeps its claim: its transaction may still be mined.
    if (key && !pending) context.settling.delete(key)
  }
}

type Settled = { success: boolean; errorReason?: Reason; errorMessage?: string; payer: string; transaction: string; amount?: string }

async function execute(context: Context, verified: Verified): Promise<Settled> {
  const { state, payer, asset, authorization, signature } = verified
  const failure = (errorReason: Reason, errorMessage: string, transaction = ''): Settled => ({
    success: false,
    errorReason,
    errorMessage,
    payer,
    transaction,
  })
  const signer = pickSigner(state)
  if (!signer) return failure(Reason.unexpectedSettleError, `No signer key is configured for ${state.network}.`)
  signer.inFlight++
  try {
    if (signature.kind === 'counterfactual') {
      const deployment = await sendAndWait(context, state, signer, { to: signature.factory, data: signature.factoryData })
      if (deployment.status !== 'success')
        return deployment.status === 'pending'
          ? failure(Reason.settlementPending, 'The wallet deployment is not confirmed yet.', deployment.hash)
          : failure(Reason.exactTransactionFailed, `The wallet deployment failed: ${deployment.message}`, deployment.hash ?? '')
    }
    const data = transferData(authorization, signature)
    const transfer = await sendAndWait(context, state, signer, {
      to: asset,
      data,
      gas: signature.kind === 'eoa' ? state.gasLimit : undefined,
    })
    if (transfer.status === 'refused') return failure(Reason.exactTransactionFailed, transfer.message)
    if (transfer.status === 'pending') return failure(Reason.settlementPending, transfer.message, transfer.hash)
    if (transfer.status === 'reverted') return failure(Reason.exactTransactionFailed, transfer.message, transfer.hash)
    if (!hasTransfer(transfer.receipt, asset, authorization))
      return failure(Reason.exactTransferEventMismatch, 'The receipt has no matching Transfer event.', transfer.hash)
    return { success: true, payer, transaction: transfer.hash, amount: authorization.value }
  } finally {
    signer.inFlight--
  }
}

function pickSigner(state: NetworkState): SignerState | undefined {
  let best: SignerState | undefined
  for (const signer of state.signers) if (!best || signer.inFlight < best.inFlight) best = signer
  return best
}

type Outcome =
  | { status: 'success'; hash: Hash; receipt: TransactionReceipt }
  | { status: 'reverted'; hash: Hash; message: string }
  | { status: 'pending'; hash: Hash; message: string }
  | { status: 'refused'; hash?: undefined; message: string }

async function sendAndWait(
  context: Context,
  state: NetworkState,
  signer: SignerState,
  request: { to: Address; data: Hex; gas?: bigint },
): Promise<Outcome> {
  let sent: Awaited<ReturnType<typeof send>>
  try {
    sent = await send(state, signer, request)
  } catch (error) {
    return { status: 'refused', message: messageOf(error) }
  }
  try {
    const receipt = await state.client.waitForTransactionReceipt({
      hash: sent.hash,
      confirmations: state.confirmations,
      timeout: context.receiptTimeoutMs,
      pollingInterval: state.pollingIntervalMs,
    })
    return receipt.status === 'success'
      ? { status: 'success', hash: sent.hash, receipt }
      : { status: 'reverted', hash: sent.hash, message: 'The transaction reverted.' }
  } catch (error) {
    return { status: 'pending', hash: sent.hash, message: messageOf(error) }
  }
}

/**
 * Signs and broadcasts a transaction with the signer's next nonce. Throws only when the node
 * provably did not take it; on a nonce conflict it resyncs and tries once more with a fresh nonce.
 */
async function send(state: NetworkState, signer: SignerState, request: { to: Address; data: Hex; gas?: bigint }): Promise<{ hash: Hash }> {
  await checkChain(state)
  const [fees, gas] = await Promise.all([feesOf(state), request.gas ?? estimateGas(state, signer.account.address, request)])
  await signer.nonces.ready()
  for (let attempt = 0; ; attempt++) {
    const nonce = signer.nonces.reserve()
    let raw: Hex
    try {
      raw = await signer.account.signTransaction({ chainId: state.chainId, nonce, gas, to: request.to, data: request.data, ...fees })
    } catch (error) {
      signer.nonces.release(nonce)
      throw error
    }
    const hash = keccak256(raw)
    const result = await broadcast(state, raw, hash)
    if (result.sent) return { hash }
    signer.nonces.release(nonce)
    if (!result.conflict || attempt > 0) throw result.error
    await signer.nonces.resync()
  }
}

/**
 * `sent` unless the node provably refused the transaction. A send with no answer is repeated once
 * with the same bytes — safe, since one signed transaction can be mined at most once — and with no
 * answer again, counts as sent: the receipt (or its absence) decides.
 */
async function broadcast(
  state: NetworkState,
  raw: Hex,
  hash: Hash,
): Promise<{ sent: true } | { sent: false; conflict: boolean; error: unknown }> {
  let unanswered = false
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await state.sender.sendRawTransaction({ serializedTransaction: raw })
      return { sent: true }
    } catch (error) {
      const kind = NonceManager.classifySendError(error)
      if (kind === 'known') return { sent: true }
      if (kind === 'conflict') {
        // "nonce too low" also follows our own earlier send of these bytes being mined.
        const known = await isKnown(state, hash)
        if (known !== false || unanswered) return { sent: true }
        return { sent: false, conflict: true, error }
      }
      if (kind === 'refused') return unanswered ? { sent: true } : { sent: false, conflict: false, error }
      unanswered = true
    }
  }
  return { sent: true }
}

/** Whether the node knows a transaction; `undefined` when it could not be asked. */
async function isKnown(state: NetworkState, hash: Hash): Promise<boolean | undefined> {
  try {
    await state.sender.getTransaction({ hash })
    return true
  } catch (error) {
    return error instanceof TransactionNotFoundError ? false : undefined
  }
}

function feesOf(state: NetworkState): Promise<Fees> {
  const now = Date.now()
  if (state.fees && now - state.fees.at < feeTtlMs) return state.fees.value
  const value = estimateFees(state)
  const entry = { at: now, value }
  state.fees = entry
  value.catch(() => {
    if (state.fees === entry) state.fees = undefined
  })
  return value
}

async function estimateFees(state: NetworkState): Promise<Fees> {
  try {
    const { maxFeePerGas, maxPriorityFeePerGas } = await state.client.estimateFeesPerGas({ type: 'eip1559' })
    return { type: 'eip1559', maxFeePerGas, maxPriorityFeePerGas }
  } catch (error) {
    if (!(error instanceof Eip1559FeesNotSupportedError)) throw error
    const gasPrice = await state.client.getGasPrice()
    return { type: 'legacy', gasPrice: (gasPrice * 12n) / 10n }
  }
}

// Smart-wallet signatures cost what the wallet's `isValidSignature` costs, so they are estimated.
async function estimateGas(state: NetworkState, from: Address, request: { to: Address; data: Hex }): Promise<bigint> {
  const gas = await state.client.estimateGas({ account: from, to: request.to, data: request.data })
  return (gas * 13n) / 10n
}

function hasTransfer(receipt: TransactionReceipt, asset: Address, authorization: { from: string; to: string; value: string }): boolean {
  const logs = parseEventLogs({
    abi: eip3009Abi,
    eventName: 'Transfer',
    logs: receipt.logs.filter((log) => isAddressEqual(log.address, asset)),
  })
  const from = getAddress(authorization.from)
  const to = getAddress(authorization.to)
  const value = BigInt(authorization.value)
  return logs.some((log) => isAddressEqual(log.args.from, from) && isAddressEqual(log.args.to, to) && log.args.value === value)
}
