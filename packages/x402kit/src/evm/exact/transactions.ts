/**
 * The settlement transactions of `exact` on EVM: signed by a pool key with nonces from its
 * `NonceManager`, broadcast so that a send with no answer is never taken for a refusal, and followed
 * to their receipts.
 *
 * Once a transaction may have reached the node, the only outcomes are its receipt or "pending" with
 * its hash: a payment is never settled by a second transaction while the first may still be mined.
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
  TransactionReceiptNotFoundError,
} from 'viem'
import * as NonceManager from '../NonceManager.ts'
import { messageOf } from '../Outcome.ts'
import { eip3009Abi } from './abi.ts'
import { type Context, checkChain, type Fees, type NetworkState, type Signed, type SignerState } from './state.ts'

/** How long one fee estimate serves every settlement of a network. */
const feeTtlMs = 2_000

export type Request = { to: Address; data: Hex; gas?: bigint }

export type Outcome =
  | { status: 'success'; hash: Hash; receipt: TransactionReceipt }
  | { status: 'reverted'; hash: Hash; message: string }
  | { status: 'pending'; hash: Hash; message: string }
  | { status: 'refused'; hash?: undefined; message: string }

/** The pool key with the fewest settlements in flight. */
export function pickSigner(state: NetworkState): SignerState | undefined {
  let best: SignerState | undefined
  for (const signer of state.signers) if (!best || signer.inFlight < best.inFlight) best = signer
  return best
}

/** Sends one transaction and follows it to its receipt. */
export async function sendAndWait(context: Context, state: NetworkState, signer: SignerState, request: Request): Promise<Outcome> {
  let sent: Awaited<ReturnType<typeof send>>
  try {
    sent = await send(state, signer, request)
  } catch (error) {
    return { status: 'refused', message: messageOf(error) }
  }
  return waitFor(context, state, sent.hash)
}

/**
 * The receipt of a sent transaction: `success`, `reverted`, or `pending` when none came in time.
 *
 * A transaction with no receipt after `replaceAfterMs` is replaced: the same call, signed again at the
 * same nonce with fees a fifth higher, up to three times. Only one transaction per nonce can ever be
 * mined, so this never settles twice; it frees a settlement (and every later one of its key) from a
 * transaction the node keeps but does not mine — underpriced, or parked by the node.
 */
export async function waitFor(context: Context, state: NetworkState, hash: Hash): Promise<Exclude<Outcome, { status: 'refused' }>> {
  const hashes = [hash]
  let signed = state.unmined.get(hash)
  const started = Date.now()
  let lastSent = started
  // Quick looks first (a chain that mines at once answers within milliseconds), then every polling interval.
  let delay = Math.min(20, state.pollingIntervalMs)
  try {
    while (Date.now() - started < context.receiptTimeoutMs) {
      for (const candidate of hashes) {
        const receipt = await receiptOf(state, candidate)
        if (receipt) return await confirmed(context, state, receipt, started)
      }
      if (signed && hashes.length <= maxReplacements && Date.now() - lastSent >= context.replaceAfterMs) {
        const replacement = await replace(state, signed)
        if (replacement) {
          hashes.push(replacement.hash)
          signed = replacement.signed
        }
        lastSent = Date.now()
      }
      await sleep(delay)
      delay = Math.min(delay * 2, state.pollingIntervalMs)
    }
    return { status: 'pending', hash: hashes.at(-1)!, message: `No receipt within ${context.receiptTimeoutMs} ms.` }
  } catch (error) {
    return { status: 'pending', hash: hashes.at(-1)!, message: messageOf(error) }
  } finally {
    for (const sent of hashes) state.unmined.delete(sent)
  }
}

const maxReplacements = 3

async function receiptOf(state: NetworkState, hash: Hash): Promise<TransactionReceipt | undefined> {
  try {
    return await state.client.getTransactionReceipt({ hash })
  } catch (error) {
    if (error instanceof TransactionReceiptNotFoundError) return undefined
    throw error
  }
}

/** A mined receipt, once it has the confirmations the network asks for. */
async function confirmed(context: Context, state: NetworkState, receipt: TransactionReceipt, started: number) {
  if (state.confirmations > 1)
    await state.client.waitForTransactionReceipt({
      hash: receipt.transactionHash,
      confirmations: state.confirmations,
      timeout: Math.max(1, context.receiptTimeoutMs - (Date.now() - started)),
      pollingInterval: state.pollingIntervalMs,
    })
  const hash = receipt.transactionHash
  return receipt.status === 'success'
    ? ({ status: 'success', hash, receipt } as const)
    : ({ status: 'reverted', hash, message: 'The transaction reverted.' } as const)
}

/** Signs `signed` again at its nonce with higher fees and broadcasts it; `undefined` if the node refuses. */
async function replace(state: NetworkState, signed: Signed): Promise<{ hash: Hash; signed: Signed } | undefined> {
  const fees: Fees =
    signed.fees.type === 'eip1559'
      ? { type: 'eip1559', maxFeePerGas: bump(signed.fees.maxFeePerGas), maxPriorityFeePerGas: bump(signed.fees.maxPriorityFeePerGas) }
      : { type: 'legacy', gasPrice: bump(signed.fees.gasPrice) }
  const next = { ...signed, fees }
  const raw = await signed.signer.account.signTransaction({
    chainId: state.chainId,
    nonce: signed.nonce,
    gas: signed.gas,
    to: signed.to,
    data: signed.data,
    ...fees,
  })
  const hash = keccak256(raw)
  // A refusal ("nonce too low": an earlier one was mined meanwhile) leaves the receipts to decide.
  const result = await broadcast(state, raw, hash)
  if (!result.sent) return undefined
  state.unmined.set(hash, next)
  return { hash, signed: next }
}

// Nodes take a replacement only with every fee at least a tenth higher.
const bump = (fee: bigint) => (fee * 6n) / 5n + 1n

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Signs and broadcasts a transaction with the signer's next nonce. Throws only when the node
 * provably did not take it; on a nonce conflict it resyncs and tries once more with a fresh nonce.
 */
export async function send(state: NetworkState, signer: SignerState, request: Request): Promise<{ hash: Hash }> {
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
    if (result.sent) {
      state.unmined.set(hash, { signer, nonce, gas, to: request.to, data: request.data, fees })
      return { hash }
    }
    signer.nonces.release(nonce)
    if (!result.conflict || attempt > 0) throw result.error
    await signer.nonces.resync()
  }
}

/**
 * Signs `requests` with consecutive nonces of one signer and broadcasts them in order, without
 * waiting for a receipt in between: a later one may rely on an earlier one being mined first (a
 * `transferFrom` on the allowance a `permit` sets). Gas limits must be given, since a later request
 * cannot be estimated before the earlier is mined.
 *
 * Throws when the node provably refused the first (after one resync on a nonce conflict); otherwise
 * resolves with the hashes of those it took, in order, and the refusal that stopped the rest.
 */
export async function sendInOrder(
  state: NetworkState,
  signer: SignerState,
  requests: ReadonlyArray<Request & { gas: bigint }>,
): Promise<{ hashes: Hash[]; refused?: unknown }> {
  await checkChain(state)
  const fees = await feesOf(state)
  await signer.nonces.ready()
  for (let attempt = 0; ; attempt++) {
    // Reserved together and synchronously, so no other settlement of this key slips in between.
    const nonces = requests.map(() => signer.nonces.reserve())
    const release = (from: number) => {
      for (const nonce of nonces.slice(from).reverse()) signer.nonces.release(nonce)
    }
    let raws: Hex[]
    try {
      raws = await Promise.all(
        requests.map((request, index) =>
          signer.account.signTransaction({
            chainId: state.chainId,
            nonce: nonces[index]!,
            gas: request.gas,
            to: request.to,
            data: request.data,
            ...fees,
          }),
        ),
      )
    } catch (error) {
      release(0)
      throw error
    }
    const hashes: Hash[] = []
    let conflict: unknown
    for (const [index, raw] of raws.entries()) {
      const hash = keccak256(raw)
      const result = await broadcast(state, raw, hash)
      if (result.sent) {
        const request = requests[index]!
        state.unmined.set(hash, { signer, nonce: nonces[index]!, gas: request.gas, to: request.to, data: request.data, fees })
        hashes.push(hash)
        continue
      }
      release(index)
      if (index > 0) return { hashes, refused: result.error }
      if (!result.conflict || attempt > 0) throw result.error
      conflict = result.error
      break
    }
    if (conflict === undefined) return { hashes }
    await signer.nonces.resync()
  }
}

/**
 * `sent` unless the node provably refused the transaction. A send with no answer is repeated once
 * with the same bytes — safe, since one signed transaction can be mined at most once — and with no
 * answer again, counts as sent: the receipt (or its absence) decides.
 */
export async function broadcast(
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

export function feesOf(state: NetworkState): Promise<Fees> {
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

/** Whether a receipt has the ERC-20 `Transfer` of `value` from `from` to `to` by `asset`. */
export function hasTransfer(receipt: TransactionReceipt, asset: Address, transfer: { from: string; to: string; value: string }): boolean {
  const logs = parseEventLogs({
    abi: eip3009Abi,
    eventName: 'Transfer',
    logs: receipt.logs.filter((log) => isAddressEqual(log.address, asset)),
  })
  const from = getAddress(transfer.from)
  const to = getAddress(transfer.to)
  const value = BigInt(transfer.value)
  return logs.some((log) => isAddressEqual(log.args.from, from) && isAddressEqual(log.args.to, to) && log.args.value === value)
}
