/**
 * The settlement pipeline of `exact` on EVM (DESIGN §5): one worker per signer key takes queued
 * EIP-3009 payments in batches and settles each batch with one `SettlementBatcher.settle`
 * transaction, so a payment costs a share of one transaction rather than a transaction.
 *
 * Exactly once, across crashes and instances:
 * - a worker sends only from a key whose lease it holds (`leaseSigner`), so two instances never
 *   share a nonce sequence, and a batch is opened only under that lease;
 * - every signed transaction is written to its batch before it is broadcast, so after a crash the
 *   worker knows each transaction that may be on its way, and follows those before anything new;
 * - a payment's outcome is what the chain says about its authorization nonce (`outcomes.ts`), which
 *   EIP-3009 lets move money once at most, whatever transaction carries it;
 * - a batch that never lands (refused, dropped by a reorganisation) puts its payments back in the queue.
 */
import { randomUUID } from 'node:crypto'
import { type Address, getAddress, type Hash, type Hex, keccak256, parseSignature, TransactionReceiptNotFoundError } from 'viem'
import { Reason } from '../../../core/Errors.ts'
import type { Payment } from '../../../core/Facilitator.ts'
import * as Money from '../../../core/Money.ts'
import type { PipelineHooks, PipelineWorkers, SchemePipeline } from '../../../core/Scheme.ts'
import type { Batch, BatchTransaction, PaymentOutcome, QueuedPayment, SettlementQueue } from '../../../facilitator/Queue.ts'
import { messageOf } from '../../Outcome.ts'
import { admissionOf, ended } from '../admission.ts'
import * as Eip3009 from '../Eip3009.ts'
import { type Context, checkChain, type Fees, type NetworkState, type SignerState } from '../state.ts'
import { broadcast, feesOf } from '../transactions.ts'
import { type BatchAuthorization, settleBatchData } from './abi.ts'
import { answerOf, type Item, lookUp, type Verdict, verdictsOf } from './outcomes.ts'

export type BatchConfig = {
  /** Most payments in one transaction; default 300 (chains cap a transaction near 16.7 M gas, ~390 payments). */
  maxItems?: number
  /** How long a signer lease lasts without renewal; default 30 s. */
  leaseMs?: number
  /** How often queue depth and signer balances are reported; default 5 s. */
  reportMs?: number
  /** A signer with less native balance than this, in wei, is reported low; default 0.005 ETH. */
  lowBalanceWei?: bigint
  /** How many batches may carry a payment whose transaction reverted as a whole before it fails; default 3. */
  maxAttempts?: number
}

/** Per-item gas of an estimate-free batch (the batcher forwards 200,000 to each item; most use ~45,000). */
const fallbackGasPerItem = 90_000n
const maxReplacements = 3
const rebroadcastMs = 10_000

/** Whether a payment is an EIP-3009 authorization with a 65-byte signature on a network with a batcher. */
export function accepts(context: Context, payment: Payment): boolean {
  const network = payment?.requirements?.network
  if (typeof network !== 'string' || !context.networks.get(network)?.batcher) return false
  const parsed = Eip3009.payload.safeParse(payment?.payload?.payload)
  return parsed.success && /^0x[0-9a-fA-F]{130}$/.test(parsed.data.signature)
}

export function exactPipeline(context: Context, config: BatchConfig = {}): SchemePipeline {
  return { accepts: (payment) => accepts(context, payment), start: (queue, hooks) => start(context, config, queue, hooks) }
}

type Worker = {
  context: Context
  queue: SettlementQueue
  hooks: PipelineHooks
  maxItems: number
  leaseMs: number
  maxAttempts: number
  stopped: boolean
  /** Resolvers of workers idle on a network, called when a payment is queued there. */
  idle: Map<string, Set<() => void>>
  /** Signers refused for want of gas, or whose batches the node refuses, and when they may try again. */
  resting: Map<string, number>
  /** How many batches in a row the node refused from each signer. */
  refusals: Map<string, number>
  /**
   * Gas per payment of the batches mined so far, by network and asset: later batches are sized from
   * it instead of an `eth_estimateGas` that makes the node run the whole batch once more.
   */
  gasPerItem: Map<string, { items: number; gas: bigint }>
}

function start(context: Context, config: BatchConfig, queue: SettlementQueue, hooks: PipelineHooks): PipelineWorkers {
  const worker: Worker = {
    context,
    queue,
    hooks,
    maxItems: Math.max(1, config.maxItems ?? 300),
    leaseMs: config.leaseMs ?? 30_000,
    maxAttempts: config.maxAttempts ?? 3,
    stopped: false,
    idle: new Map(),
    resting: new Map(),
    refusals: new Map(),
    gasPerItem: new Map(),
  }
  const running: Promise<void>[] = []
  const timers: NodeJS.Timeout[] = []
  const low = new Set<string>()
  for (const state of context.networks.values()) {
    if (!state.batcher) continue
    for (const signer of state.signers) running.push(runSigner(worker, state, signer))
    const report = setInterval(
      () => void reportState(worker, state, config.lowBalanceWei ?? 5_000_000_000_000_000n, low),
      config.reportMs ?? 5_000,
    )
    report.unref()
    timers.push(report)
  }
  return {
    wake(network) {
      const waiting = worker.idle.get(network)
      if (!waiting) return
      worker.idle.delete(network)
      for (const resolve of waiting) resolve()
    },
    async stop({ graceMs = 10_000 } = {}) {
      worker.stopped = true
      for (const timer of timers) clearInterval(timer)
      for (const waiting of worker.idle.values()) for (const resolve of waiting) resolve()
      worker.idle.clear()
      let timeout: NodeJS.Timeout | undefined
      await Promise.race([Promise.allSettled(running), new Promise((resolve) => (timeout = setTimeout(resolve, graceMs)))])
      clearTimeout(timeout)
    },
  }
}

/** Waits until a payment is queued on the network, or `ms` pass. */
function idle(worker: Worker, network: string, ms: number): Promise<void> {
  if (worker.stopped) return Promise.resolve()
  return new Promise((resolve) => {
    const waiting = worker.idle.get(network) ?? new Set()
    worker.idle.set(network, waiting)
    const done = () => {
      clearTimeout(timer)
      waiting.delete(done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    waiting.add(done)
  })
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** One signer's loop: hold its lease, finish what it left unfinished, then batch what is queued. */
async function runSigner(worker: Worker, state: NetworkState, signer: SignerState): Promise<void> {
  const { queue, hooks } = worker
  const network = state.network
  const address = signer.account.address
  let reconciled = false
  let failures = 0
  const lease = leaseKeeper(worker, network, address)
  try {
    while (!worker.stopped) {
      try {
        if (!(await lease.renew())) {
          reconciled = false
          await idle(worker, `lease ${network}`, worker.leaseMs / 3)
          continue
        }
        if (!reconciled) {
          await checkChain(state)
          for (const open of await queue.unfinishedBatches(network, address)) {
            hooks.log('info', 'resuming an unfinished batch', {
              network,
              signer: address,
              batch: open.batch.id,
              payments: open.payments.length,
            })
            await follow(worker, state, signer, open.batch, itemsOf(open.batch, open.payments), lease)
          }
          await signer.nonces.resync()
          reconciled = true
        }
        const resting = worker.resting.get(address)
        if (resting !== undefined && resting > Date.now()) {
          await sleep(Math.min(1_000, resting - Date.now()))
          continue
        }
        const opened = await queue.openBatch({
          id: randomUUID(),
          network,
          signer: address,
          owner: hooks.owner,
          limit: worker.maxItems,
          now: Date.now(),
        })
        if (!opened) {
          await idle(worker, network, 1_000)
          continue
        }
        await send(worker, state, signer, opened.batch, opened.payments, lease)
        failures = 0
      } catch (error) {
        // The store or the node failed: whatever was opened stays in the store and is resumed.
        reconciled = false
        failures++
        hooks.log('error', 'settlement worker fault; retrying', { network, signer: address, error: messageOf(error) })
        await sleep(Math.min(10_000, 250 * 2 ** Math.min(failures, 6)))
      }
    }
  } finally {
    await queue.releaseSigner(network, address, hooks.owner).catch(() => {})
  }
}

type Lease = { renew(): Promise<boolean> }

/** Renews a signer lease at most every third of its term. */
function leaseKeeper(worker: Worker, network: string, address: string): Lease {
  let until = 0
  return {
    async renew() {
      if (Date.now() < until - (worker.leaseMs * 2) / 3) return true
      const held = await worker.queue.leaseSigner(network, address, worker.hooks.owner, worker.leaseMs)
      until = held ? Date.now() + worker.leaseMs : 0
      return held
    },
  }
}

/** The items of a batch's payments, in the batch's order, and outcomes for any that cannot be carried. */
function itemsOf(batch: Batch, payments: readonly QueuedPayment[]): { items: Item[]; rejected: PaymentOutcome[] } {
  const byKey = new Map(payments.map((payment) => [payment.key, payment]))
  const items: Item[] = []
  const rejected: PaymentOutcome[] = []
  for (const key of batch.keys) {
    const payment = byKey.get(key)
    if (!payment) continue
    const authorization = authorizationOf(payment)
    if (authorization) items.push({ payment, authorization })
    else
      rejected.push({
        key,
        status: 'failed',
        errorReason: Reason.exactFailedToParseSignature,
        result: {
          success: false,
          errorReason: Reason.exactFailedToParseSignature,
          errorMessage: 'The queued payment carries no EIP-3009 authorization with a 65-byte signature.',
          transaction: '',
          network: batch.network,
        },
      })
  }
  return { items, rejected }
}

function authorizationOf(payment: QueuedPayment): BatchAuthorization | undefined {
  const parsed = Eip3009.payload.safeParse(payment.payment.payload?.payload)
  if (!parsed.success) return undefined
  const { authorization, signature } = parsed.data
  try {
    const { r, s, v, yParity } = parseSignature(signature as Hex)
    return {
      from: getAddress(authorization.from),
      to: getAddress(authorization.to),
      value: BigInt(authorization.value),
      validAfter: BigInt(authorization.validAfter),
      validBefore: BigInt(authorization.validBefore),
      nonce: authorization.nonce as Hex,
      v: Number(v ?? BigInt(yParity + 27)),
      r,
      s,
    }
  } catch {
    return undefined
  }
}

/** Signs a batch's transaction, writes it to the batch, broadcasts it, and follows it to its outcome. */
async function send(worker: Worker, state: NetworkState, signer: SignerState, batch: Batch, payments: QueuedPayment[], lease: Lease) {
  const { items, rejected } = itemsOf(batch, payments)
  if (items.length === 0) return close(worker, state, batch, rejected, undefined)
  const batcher = state.batcher!
  const data = settleBatchData(
    getAddress(batch.asset),
    items.map((item) => item.authorization),
  )
  const learned = worker.gasPerItem.get(`${state.network} ${batch.asset.toLowerCase()}`)
  const [fees, gas] = await Promise.all([
    feesOf(state),
    // Estimated while no batch at least a quarter this size has been mined; then a quarter more than its
    // mean per payment, with room for the batcher's last-item gas check.
    learned === undefined || learned.items * 4 < items.length
      ? batchGas(state, signer.account.address, batcher, data, items.length)
      : (learned.gas * BigInt(items.length) * 5n) / 4n + 250_000n,
  ])
  await signer.nonces.ready()
  const nonce = signer.nonces.reserve()
  let transaction: BatchTransaction
  try {
    transaction = await sign(state, signer, { nonce, gas, to: batcher, data, fees })
    await worker.queue.addTransaction(batch.id, transaction)
  } catch (error) {
    signer.nonces.release(nonce)
    throw error
  }
  const result = await broadcast(state, transaction.raw as Hex, transaction.hash as Hash)
  if (!result.sent) {
    // Provably not taken: nothing of the batch can be mined, so its payments go back to the queue.
    signer.nonces.release(nonce)
    const message = messageOf(result.error)
    if (/insufficient funds/i.test(message)) {
      worker.resting.set(signer.account.address, Date.now() + 30_000)
      worker.hooks.log('warn', 'signer has too little gas to send a batch; resting it', {
        network: state.network,
        signer: signer.account.address,
      })
    } else {
      // A node that refuses every batch would otherwise be asked again at once, in a loop: back off.
      const refusals = (worker.refusals.get(signer.account.address) ?? 0) + 1
      worker.refusals.set(signer.account.address, refusals)
      const restMs = Math.min(30_000, 250 * 2 ** Math.min(refusals - 1, 7))
      worker.resting.set(signer.account.address, Date.now() + restMs)
      worker.hooks.log('warn', 'the node refused a batch transaction', {
        network: state.network,
        signer: signer.account.address,
        error: message,
        retryInMs: restMs,
      })
    }
    if (result.conflict) await signer.nonces.resync()
    await close(worker, state, batch, [...rejected, ...items.map((item) => requeue(item))], undefined, 'dropped')
    return
  }
  worker.refusals.delete(signer.account.address)
  await follow(worker, state, signer, { ...batch, transactions: [transaction] }, { items, rejected }, lease)
}

const requeue = (item: Item): PaymentOutcome => ({ key: item.payment.key, status: 'queued' })

type Unsigned = { nonce: number; gas: bigint; to: Address; data: Hex; fees: Fees }

async function sign(state: NetworkState, signer: SignerState, tx: Unsigned): Promise<BatchTransaction> {
  const raw = await signer.account.signTransaction({
    chainId: state.chainId,
    nonce: tx.nonce,
    gas: tx.gas,
    to: tx.to,
    data: tx.data,
    ...tx.fees,
  })
  return { hash: keccak256(raw), raw, nonce: tx.nonce }
}

/** The gas of a batch: the node's estimate with a quarter more, or a bound per item when the estimate fails. */
async function batchGas(state: NetworkState, from: Address, to: Address, data: Hex, items: number): Promise<bigint> {
  try {
    const estimate = await state.client.estimateGas({ account: from, to, data })
    return (estimate * 5n) / 4n + 250_000n
  } catch {
    return 300_000n + fallbackGasPerItem * BigInt(items)
  }
}

/**
 * Follows a batch's transactions until one is mined and confirmed, then records every payment's
 * outcome. A transaction that does not come is replaced (same call, same nonce, higher fees) and
 * rebroadcast; a receipt that vanishes before its confirmations (a reorganisation) puts the payments
 * back in the queue. Used both for a batch just sent and for one found unfinished at start.
 */
async function follow(
  worker: Worker,
  state: NetworkState,
  signer: SignerState,
  batch: Batch,
  { items, rejected }: ReturnType<typeof itemsOf>,
  lease: Lease,
) {
  const transactions = [...batch.transactions]
  const latest = transactions.at(-1)
  // Never sent (the worker stopped between opening and signing): nothing can be mined.
  if (!latest || items.length === 0)
    return close(worker, state, batch, [...rejected, ...items.map((item) => requeue(item))], undefined, 'dropped')
  const started = Date.now()
  let lastSent = started
  let lastBroadcast = 0
  let delay = Math.min(20, state.pollingIntervalMs)
  for (;;) {
    if (Date.now() - lastBroadcast >= rebroadcastMs && lastBroadcast !== 0) {
      // Harmless when the node has it; brings it back when the node lost it (a restart, a full pool).
      await broadcast(state, transactions.at(-1)!.raw as Hex, transactions.at(-1)!.hash as Hash)
      lastBroadcast = Date.now()
    }
    if (lastBroadcast === 0) lastBroadcast = Date.now()
    await lease.renew()
    let receipt: Awaited<ReturnType<typeof receiptOf>>
    for (const transaction of transactions) {
      receipt = await receiptOf(state, transaction.hash as Hash)
      if (receipt) break
    }
    if (receipt) {
      const confirmed = await confirm(worker, state, receipt)
      if (confirmed === 'reorganised') {
        worker.hooks.event({ type: 'reorg', network: state.network, payments: items.length })
        worker.hooks.log('warn', 'a batch transaction left the chain; its payments are queued again', {
          network: state.network,
          batch: batch.id,
          transaction: receipt.transactionHash,
        })
        await rewind(signer)
        return close(worker, state, batch, [...rejected, ...items.map((item) => requeue(item))], undefined, 'dropped')
      }
      if (confirmed === 'stopped') return
      const gasKey = `${state.network} ${batch.asset.toLowerCase()}`
      if (receipt.status === 'success') {
        const gas = (receipt.gasUsed + BigInt(items.length) - 1n) / BigInt(items.length)
        const known = worker.gasPerItem.get(gasKey)
        // The mean of the largest batch: small batches cost more per payment, and would size large ones far too high.
        if (!known || items.length > known.items || (items.length === known.items && gas > known.gas))
          worker.gasPerItem.set(gasKey, { items: items.length, gas })
      } else worker.gasPerItem.delete(gasKey)
      const verdicts =
        receipt.status === 'success'
          ? await verdictsOf(state, receipt, state.batcher!, items)
          : await Promise.all(items.map((item) => reverted(worker, state, item)))
      return close(worker, state, batch, [...rejected, ...(await finish(worker, state, verdicts, receipt))], receipt)
    }
    if (worker.stopped) return
    const nonce = latest.nonce
    if (Date.now() - started > worker.context.receiptTimeoutMs) {
      // None of our transactions is mined after a long wait. If the nonce is used, something else took it
      // (only a transaction of ours can, unless the key is shared): each payment is then looked up on chain.
      const mined = await state.client.getTransactionCount({ address: signer.account.address, blockTag: 'latest' })
      if (mined > nonce) {
        const verdicts = await Promise.all(items.map((item) => lookUp(state, item)))
        return close(worker, state, batch, [...rejected, ...(await finish(worker, state, verdicts, undefined))], undefined)
      }
    }
    if (transactions.length <= maxReplacements && Date.now() - lastSent >= worker.context.replaceAfterMs) {
      const replacement = await replace(worker, state, signer, batch, transactions.at(-1)!, nonce)
      if (replacement) transactions.push(replacement)
      lastSent = Date.now()
    }
    await sleep(delay)
    delay = Math.min(delay * 2, state.pollingIntervalMs)
  }
}

/** A payment of a transaction that reverted as a whole: queued again, or failed after `maxAttempts`. */
async function reverted(worker: Worker, state: NetworkState, item: Item): Promise<Verdict> {
  const verdict = await lookUp(state, item)
  if (verdict.status !== 'queued' || item.payment.attempts + 1 < worker.maxAttempts) return verdict
  return {
    key: item.payment.key,
    status: 'failed',
    item,
    reason: Reason.exactTransactionFailed,
    message: `The batch transaction reverted ${worker.maxAttempts} times.`,
  }
}

async function receiptOf(state: NetworkState, hash: Hash) {
  try {
    return await state.client.getTransactionReceipt({ hash })
  } catch (error) {
    if (error instanceof TransactionReceiptNotFoundError) return undefined
    throw error
  }
}

/**
 * Waits until a receipt has the network's confirmations, looking each time that it is still there in
 * the same block; `reorganised` when it is not.
 */
async function confirm(
  worker: Worker,
  state: NetworkState,
  receipt: { transactionHash: Hash; blockHash: Hash; blockNumber: bigint },
): Promise<'confirmed' | 'reorganised' | 'stopped'> {
  const target = receipt.blockNumber + BigInt(state.confirmations - 1)
  for (;;) {
    const head = await state.client.getBlockNumber({ cacheTime: 0 })
    if (state.confirmations > 1 || head < receipt.blockNumber) {
      const again = await receiptOf(state, receipt.transactionHash)
      if (!again || again.blockHash !== receipt.blockHash) return 'reorganised'
    }
    if (head >= target) return 'confirmed'
    if (worker.stopped) return 'stopped'
    await sleep(state.pollingIntervalMs)
  }
}

/** After a reorganisation the chain's nonce of the signer may be lower than ours: start again from the chain's. */
async function rewind(signer: SignerState) {
  signer.nonces.rewind?.()
  await signer.nonces.resync()
}

/** Signs the batch's call again at its nonce with fees a fifth higher, writes it, broadcasts it. */
async function replace(worker: Worker, state: NetworkState, signer: SignerState, batch: Batch, last: BatchTransaction, nonce: number) {
  const previous = await state.client.getTransaction({ hash: last.hash as Hash }).catch(() => undefined)
  if (!previous) return undefined
  const fees: Fees =
    previous.maxFeePerGas !== undefined && previous.maxPriorityFeePerGas !== undefined
      ? { type: 'eip1559', maxFeePerGas: bump(previous.maxFeePerGas), maxPriorityFeePerGas: bump(previous.maxPriorityFeePerGas) }
      : { type: 'legacy', gasPrice: bump(previous.gasPrice ?? 0n) }
  const transaction = await sign(state, signer, { nonce, gas: previous.gas, to: previous.to as Address, data: previous.input, fees })
  await worker.queue.addTransaction(batch.id, transaction)
  const result = await broadcast(state, transaction.raw as Hex, transaction.hash as Hash)
  if (!result.sent) return undefined
  worker.hooks.event({ type: 'replaced', network: state.network, signer: signer.account.address })
  return transaction
}

const bump = (fee: bigint) => (fee * 6n) / 5n + 1n

/** Turns verdicts into recorded outcomes: settled answers finished by the facilitator, gas shared among them. */
async function finish(
  worker: Worker,
  state: NetworkState,
  verdicts: Verdict[],
  receipt: { gasUsed: bigint; effectiveGasPrice: bigint } | undefined,
): Promise<PaymentOutcome[]> {
  const ours = verdicts.filter((verdict) => verdict.status === 'settled' && verdict.ours).length
  const gas = receipt && ours > 0 ? Money.apportion(receipt.gasUsed, ours) : []
  let share = 0
  return Promise.all(
    verdicts.map(async (verdict): Promise<PaymentOutcome> => {
      if (verdict.status === 'queued') return verdict
      const answer = answerOf(verdict, state.network)
      if (verdict.status === 'failed')
        return {
          key: verdict.key,
          status: 'failed',
          result: answer,
          errorReason: verdict.reason,
          ...(verdict.transaction && { transaction: verdict.transaction }),
        }
      const gasUsed = verdict.ours ? (gas[share++] ?? 0n) : 0n
      let result = answer
      try {
        result = await worker.hooks.finish(verdict.item.payment.payment, answer)
      } catch (error) {
        worker.hooks.log('error', 'finishing a settled payment failed; recorded without it', { key: verdict.key, error: messageOf(error) })
      }
      return {
        key: verdict.key,
        status: 'settled',
        result,
        transaction: verdict.transaction,
        gasUsed,
        gasCost: gasUsed * (receipt?.effectiveGasPrice ?? 0n),
      }
    }),
  )
}

/** Closes a batch in the store, then tells waiting requests and the metrics. */
async function close(
  worker: Worker,
  state: NetworkState,
  batch: Batch,
  outcomes: PaymentOutcome[],
  receipt: { gasUsed: bigint; effectiveGasPrice: bigint; status: string } | undefined,
  outcome: 'mined' | 'reverted' | 'dropped' = receipt?.status === 'reverted' ? 'reverted' : 'mined',
) {
  await worker.queue.closeBatch(batch.id, outcomes, Date.now())
  const admission = admissionOf(state, worker.context.admission)
  if (admission) for (const item of outcomes) if (item.status !== 'queued') ended(admission, item.key)
  worker.hooks.recorded(outcomes.filter((item) => item.status !== 'queued').map((item) => item.key))
  for (const item of outcomes)
    worker.hooks.event({ type: 'item', network: state.network, outcome: item.status === 'failed' ? item.errorReason : item.status })
  worker.hooks.event({
    type: 'batch',
    network: state.network,
    signer: batch.signer,
    size: outcomes.length,
    outcome,
    gasUsed: receipt?.gasUsed ?? 0n,
    gasCostWei: receipt ? receipt.gasUsed * receipt.effectiveGasPrice : 0n,
    seconds: (Date.now() - batch.createdAt) / 1000,
  })
  if (outcome !== 'dropped')
    worker.hooks.log('info', 'batch settled', {
      network: state.network,
      batch: batch.id,
      payments: outcomes.length,
      settled: outcomes.filter((item) => item.status === 'settled').length,
      gasUsed: String(receipt?.gasUsed ?? 0n),
    })
}

/** Reports the queue's depth and age and each signer's balance and nonce. */
async function reportState(worker: Worker, state: NetworkState, lowBalanceWei: bigint, low: Set<string>) {
  try {
    const stats = await worker.queue.stats(state.network)
    worker.hooks.event({
      type: 'queue',
      network: state.network,
      depth: stats.depth,
      oldestAgeSeconds: stats.oldestQueuedAt === undefined ? 0 : Math.max(0, (Date.now() - stats.oldestQueuedAt) / 1000),
    })
    for (const signer of state.signers) {
      const address = signer.account.address
      const [balance, nonce] = await Promise.all([
        state.client.getBalance({ address }),
        state.client.getTransactionCount({ address, blockTag: 'latest' }),
      ])
      const isLow = balance < lowBalanceWei
      worker.hooks.event({ type: 'signer', network: state.network, address, balanceWei: balance, nonce, low: isLow })
      if (isLow && !low.has(address)) {
        low.add(address)
        worker.hooks.log('warn', 'signer balance is low; top it up to keep settling', {
          network: state.network,
          signer: address,
          balanceWei: String(balance),
        })
      } else if (!isLow && low.delete(address)) {
        worker.resting.delete(address)
        worker.hooks.log('info', 'signer balance is back above the threshold', { network: state.network, signer: address })
      }
    }
  } catch (error) {
    worker.hooks.log('warn', 'could not read queue or signer state', { network: state.network, error: messageOf(error) })
  }
}
