/**
 * Settle (x402 v2 §7.2 `/settle`), idempotent per settlement key (DESIGN §7.1: a payment settles at
 * most once, across retries, concurrent duplicates, restarts and instances):
 *
 * - duplicates in this process join the one settlement in flight;
 * - the store record is claimed as `settling` (from `verified`, or fresh when nobody verified first)
 *   before the scheme sends anything, and holds the outcome before anyone is answered;
 * - a settled or failed key answers its stored result without touching the chain, and a key another
 *   instance is settling is watched for a while, then answered `settlement_pending`.
 *
 * A payment the scheme's pipeline accepts is not settled here but queued (`Queue.ts`): `settle`
 * then waits for the outcome the pipeline records, and `enqueue` answers as soon as it is queued.
 */
import { Reason } from '../core/Errors.ts'
import { type Payment, queuedExtension, type SettleResponse, type VerifyResponse } from '../core/Facilitator.ts'
import type { SchemeFacilitator } from '../core/Scheme.ts'
import { accepted, alreadyUsed, type Context, failure, newRecord, payloadHash, samePayment, screen } from './internal/context.ts'
import type { SettlementQueue } from './Queue.ts'
import type { SettlementPatch, SettlementRecord } from './Store.ts'

/** `wait`: answer with the settlement's outcome (`/settle`); `queue`: answer once durably queued (`/enqueue`). */
export type SettleMode = { kind: 'wait' } | { kind: 'queue'; cap?: bigint | undefined }

export async function settle(context: Context, payment: Payment, mode: SettleMode = { kind: 'wait' }): Promise<SettleResponse> {
  const { network } = payment.requirements
  const scheme = context.route(payment.requirements)
  if (typeof scheme === 'string') return failure(scheme, network, `No scheme "${payment.requirements.scheme}" on ${network}.`)
  const grantRefusal = context.credentials.refusal(payment.requirements)
  if (grantRefusal) return failure(Reason.invalidPaymentRequirements, network, grantRefusal)

  let key: string | undefined
  try {
    key = scheme.settlementKey(payment)
  } catch (error) {
    context.onError(error, { operation: 'settle' })
    return failure(Reason.unexpectedSettleError, network)
  }
  // Nothing identifies the money movement, so there is nothing to deduplicate on: the scheme decides.
  if (key === undefined) return send(context, scheme, payment)

  const queue = context.queue && scheme.pipeline?.accepts(payment) ? context.queue : undefined
  // Requests that want the outcome and requests that want the queueing join their own kind only.
  const flight = `${queue ? mode.kind : 'wait'} ${key}`
  const running = context.inflight.get(flight)
  if (running)
    return samePayment({ ...running.requirements, payloadHash: running.payloadHash }, payment)
      ? running.result
      : failure(scheme.alreadyUsedReason ?? alreadyUsed.reason, network, alreadyUsed.message)
  const result = (queue ? settleQueued(context, queue, scheme, key, payment, mode) : settleOnce(context, scheme, key, payment)).finally(
    () => context.inflight.delete(flight),
  )
  context.inflight.set(flight, { requirements: payment.requirements, payloadHash: payloadHash(payment), result })
  return result
}

/**
 * Settlement through the pipeline: the payment is queued (from `verified`, or checked and queued in
 * one go), then the outcome the pipeline records is awaited, or, for `enqueue`, the queueing answered.
 */
async function settleQueued(
  context: Context,
  queue: SettlementQueue,
  scheme: SchemeFacilitator,
  key: string,
  payment: Payment,
  mode: SettleMode,
): Promise<SettleResponse> {
  const { network } = payment.requirements
  const taken = () => failure(scheme.alreadyUsedReason ?? alreadyUsed.reason, network, alreadyUsed.message)
  const cap = mode.kind === 'queue' && mode.cap !== undefined ? { cap: mode.cap } : {}
  // A payment verified here a moment ago moves to the queue in one transaction, unread.
  if (context.verified.delete(key))
    try {
      const fast = await queue.enqueue(newRecord(key, payment, 'queued', undefined, context.now()), payment, { ...cap, only: 'verified' })
      if (fast.queued) {
        context.wake(scheme, network)
        return mode.kind === 'wait'
          ? awaitOutcome(context, key, network)
          : queuedAnswer({ ...newRecord(key, payment, 'queued', fast.payer, context.now()) }, network)
      }
      if ('cap' in fast) return capped(network, undefined)
    } catch (error) {
      context.onError(error, { operation: 'settle', key })
      return failure(Reason.unexpectedSettleError, network, 'The payment could not be queued; nothing was charged.')
    }
  for (let round = 0; round < 3; round++) {
    const existing = await context.store.get(key)
    if (existing && !samePayment(existing, payment)) return taken()
    switch (existing?.status) {
      case 'settled':
      case 'failed':
        return stored(existing, network)
      case 'settling':
        return awaitSettlement(context, key, existing, network)
      case 'queued':
      case 'submitted':
        return mode.kind === 'wait' ? awaitOutcome(context, key, network) : queuedAnswer(existing, network)
    }
    let payer = existing?.payer
    if (!existing) {
      const checked = await checkValid(context, scheme, key, payment)
      if ('refusal' in checked) return checked.refusal
      payer = checked.payer
    }
    const record = newRecord(key, payment, 'queued', payer, context.now())
    let result: Awaited<ReturnType<SettlementQueue['enqueue']>>
    try {
      result = await queue.enqueue(record, payment, cap)
    } catch (error) {
      context.onError(error, { operation: 'settle', key })
      return failure(Reason.unexpectedSettleError, network, 'The payment could not be queued; nothing was charged.', payer)
    }
    if (result.queued) {
      context.wake(scheme, network)
      return mode.kind === 'wait' ? awaitOutcome(context, key, network) : queuedAnswer(record, network)
    }
    if ('cap' in result) return capped(network, payer)
  }
  return failure(Reason.settlementPending, network)
}

function capped(network: string, payer: string | undefined): SettleResponse {
  return failure(
    Reason.unsettledCap,
    network,
    'The payer has as much unsettled value queued to this payee as the seller allows; settle before answering.',
    payer,
  )
}

function queuedAnswer(record: SettlementRecord, network: string): SettleResponse {
  return {
    success: true,
    transaction: '',
    network,
    ...(record.payer && { payer: record.payer }),
    amount: record.amount,
    extensions: { settlement: { ...queuedExtension } },
  }
}

/**
 * Waits for the pipeline to record a queued payment's outcome: woken at once by a worker of this
 * process, and looking at the store every second for one of another instance.
 */
async function awaitOutcome(context: Context, key: string, network: string): Promise<SettleResponse> {
  const deadline = Date.now() + context.settleWaitMs
  for (;;) {
    let record: SettlementRecord | undefined
    try {
      record = await context.store.get(key)
    } catch (error) {
      // The store is away for a moment (a database restart): the payment is queued all the same; look again.
      context.onError(error, { operation: 'settle', key })
    }
    if (record && (record.status === 'settled' || record.status === 'failed')) return stored(record, network)
    const remaining = deadline - Date.now()
    if (remaining <= 0)
      return failure(Reason.settlementPending, network, 'The payment is queued for settlement; ask again shortly.', record?.payer)
    await new Promise<void>((resolve) => {
      const waiters = context.waiters.get(key) ?? new Set()
      context.waiters.set(key, waiters)
      const done = () => {
        clearTimeout(timer)
        waiters.delete(done)
        if (waiters.size === 0 && context.waiters.get(key) === waiters) context.waiters.delete(key)
        resolve()
      }
      const timer = setTimeout(done, Math.min(remaining, 1_000))
      waiters.add(done)
    })
  }
}

async function settleOnce(context: Context, scheme: SchemeFacilitator, key: string, payment: Payment): Promise<SettleResponse> {
  const { network } = payment.requirements
  // As in verify, only a payment the scheme finds valid may claim a key: a forged payment over a key
  // anyone can read (a txproof transaction hash is public) would otherwise spend it for the real payer.
  if (!(await context.store.get(key))) {
    const checked = await checkValid(context, scheme, key, payment)
    if ('refusal' in checked) return checked.refusal
  }
  // Two rounds suffice: a lost race for `verified → settling` leaves the record `settling` or later.
  for (let round = 0; round < 3; round++) {
    const now = context.now()
    const existing = await context.store.reserve(key, newRecord(key, payment, 'settling', undefined, now))
    if (!existing) return send(context, scheme, payment, key)
    if (!samePayment(existing, payment)) return failure(scheme.alreadyUsedReason ?? alreadyUsed.reason, network, alreadyUsed.message)
    switch (existing.status) {
      case 'verified': {
        // Compare-and-set: of all instances that saw `verified`, exactly one moves it on and sends.
        const claimed = await context.store.update(key, { status: 'settling', updatedAt: now }, { status: 'verified' })
        if (claimed) return send(context, scheme, payment, key)
        continue
      }
      case 'settling':
        return awaitSettlement(context, key, existing, network)
      default:
        return stored(existing, network)
    }
  }
  return failure(Reason.settlementPending, network)
}

/** The scheme's verdict on a payment nobody verified first: its payer, or the answer refusing it (nothing recorded). */
async function checkValid(
  context: Context,
  scheme: SchemeFacilitator,
  key: string,
  payment: Payment,
): Promise<{ payer: string | undefined } | { refusal: SettleResponse }> {
  const { network } = payment.requirements
  let verdict: VerifyResponse
  try {
    verdict = await scheme.verify(payment)
  } catch (error) {
    context.onError(error, { operation: 'settle', key })
    return { refusal: failure(Reason.unexpectedSettleError, network, 'The settlement failed unexpectedly.') }
  }
  if (verdict.isValid) {
    let screened: Awaited<ReturnType<typeof screen>>
    try {
      screened = await screen(context, payment, verdict.payer)
    } catch (error) {
      context.onError(error, { operation: 'settle', key })
      return { refusal: failure(Reason.unexpectedSettleError, network, 'The settlement failed unexpectedly.') }
    }
    if (screened?.refusal)
      return { refusal: failure(screened.refusal.reason, network, screened.refusal.message, verdict.payer ?? undefined) }
    accepted(context, screened?.input)
    return { payer: verdict.payer ?? undefined }
  }
  const reason = verdict.invalidReason ?? Reason.unexpectedSettleError
  return { refusal: failure(reason, network, verdict.invalidMessage ?? undefined, verdict.payer ?? undefined) }
}

/** Runs the scheme's settlement and records its outcome before anyone is answered. */
async function send(context: Context, scheme: SchemeFacilitator, payment: Payment, key?: string): Promise<SettleResponse> {
  const { network } = payment.requirements
  let result: SettleResponse
  try {
    result = await scheme.settle(payment)
  } catch (error) {
    context.onError(error, { operation: 'settle', ...(key !== undefined && { key }) })
    // The cause stays in the log: scheme errors can carry RPC URLs with API keys.
    result = failure(Reason.unexpectedSettleError, network, 'The settlement failed unexpectedly.')
  }
  // Issued before the outcome is recorded: a repeated settle answers this credential, never a new one.
  if (result.success) result = await context.credentials.issue(payment, result)
  if (key === undefined) return result
  if (!result.success && result.errorReason === Reason.unexpectedSettleError && !result.transaction) {
    // Nothing was sent (or the chain refuses a second use anyway: EIP-3009 and permit nonces), so the
    // payment goes back to `verified`: a passing fault must not spend a payer's authorization or
    // their already-mined transfer (pay-by-transaction).
    await record(context, key, { status: 'verified', updatedAt: context.now() })
    return result
  }
  if (!result.success && result.errorReason === Reason.settlementPending) {
    // Sent but not yet confirmed: the record stays `settling`, now with its transaction, so no one sends again.
    await record(context, key, { updatedAt: context.now(), ...(result.transaction && { transaction: result.transaction }) })
    return result
  }
  const patch: SettlementPatch = {
    status: result.success ? 'settled' : 'failed',
    transaction: result.transaction || undefined,
    errorReason: result.success ? undefined : (result.errorReason ?? Reason.unexpectedSettleError),
    result,
    updatedAt: context.now(),
    ...(result.payer && { payer: result.payer }),
  }
  await record(context, key, patch)
  return result
}

/**
 * Writes a settlement's outcome, retrying briefly. If the store stays down, the outcome is still
 * answered (the chain has moved the money; the caller must learn of it) and the record stays
 * `settling`, which later requests answer `settlement_pending`, never with a second settlement.
 */
async function record(context: Context, key: string, patch: SettlementPatch): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await context.store.update(key, patch, { status: 'settling' })
      return
    } catch (error) {
      if (attempt >= 2) {
        context.onError(error, { operation: 'settle', key })
        return
      }
      await sleep(50 * 4 ** attempt)
    }
  }
}

/** Watches a settlement another instance is running, for up to `pendingWaitMs`. */
async function awaitSettlement(context: Context, key: string, first: SettlementRecord, network: string): Promise<SettleResponse> {
  const deadline = Date.now() + context.pendingWaitMs
  const interval = Math.max(10, Math.min(250, context.pendingWaitMs / 20))
  let current: SettlementRecord | undefined = first
  while (current?.status === 'settling' && Date.now() < deadline) {
    await sleep(interval)
    current = await context.store.get(key)
  }
  if (current && (current.status === 'settled' || current.status === 'failed')) return stored(current, network)
  return {
    ...failure(Reason.settlementPending, network, 'Another request is settling this payment; ask again shortly.', current?.payer),
    ...(current?.transaction && { transaction: current.transaction }),
  }
}

function stored(record: SettlementRecord, network: string): SettleResponse {
  if (record.result) return record.result
  return {
    success: record.status === 'settled',
    ...(record.errorReason && { errorReason: record.errorReason }),
    ...(record.payer && { payer: record.payer }),
    transaction: record.transaction ?? '',
    network,
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
