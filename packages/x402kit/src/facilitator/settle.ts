/**
 * Settle (x402 v2 §7.2 `/settle`), idempotent per settlement key (DESIGN §7.1: a payment settles at
 * most once, across retries, concurrent duplicates, restarts and instances):
 *
 * - duplicates in this process join the one settlement in flight;
 * - the store record is claimed as `settling` (from `verified`, or fresh when nobody verified first)
 *   before the scheme sends anything, and holds the outcome before anyone is answered;
 * - a settled or failed key answers its stored result without touching the chain, and a key another
 *   instance is settling is watched for a while, then answered `settlement_pending`.
 */
import { Reason } from '../core/Errors.ts'
import type { Payment, SettleResponse, VerifyResponse } from '../core/Facilitator.ts'
import type { SchemeFacilitator } from '../core/Scheme.ts'
import { alreadyUsed, type Context, failure, newRecord, payloadHash, samePayment } from './internal/context.ts'
import type { SettlementPatch, SettlementRecord } from './Store.ts'

export async function settle(context: Context, payment: Payment): Promise<SettleResponse> {
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

  const running = context.inflight.get(key)
  if (running)
    return samePayment({ ...running.requirements, payloadHash: running.payloadHash }, payment)
      ? running.result
      : failure(scheme.alreadyUsedReason ?? alreadyUsed.reason, network, alreadyUsed.message)
  const result = settleOnce(context, scheme, key, payment).finally(() => context.inflight.delete(key))
  context.inflight.set(key, { requirements: payment.requirements, payloadHash: payloadHash(payment), result })
  return result
}

async function settleOnce(context: Context, scheme: SchemeFacilitator, key: string, payment: Payment): Promise<SettleResponse> {
  const { network } = payment.requirements
  // As in verify, only a payment the scheme finds valid may claim a key: a forged payment over a key
  // anyone can read (a txproof transaction hash is public) would otherwise spend it for the real payer.
  if (!(await context.store.get(key))) {
    const refusal = await refuseInvalid(context, scheme, key, payment)
    if (refusal) return refusal
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

/** The answer to a payment the scheme finds invalid, with nothing recorded; `undefined` when it is valid. */
async function refuseInvalid(
  context: Context,
  scheme: SchemeFacilitator,
  key: string,
  payment: Payment,
): Promise<SettleResponse | undefined> {
  const { network } = payment.requirements
  let verdict: VerifyResponse
  try {
    verdict = await scheme.verify(payment)
  } catch (error) {
    context.onError(error, { operation: 'settle', key })
    return failure(Reason.unexpectedSettleError, network, 'The settlement failed unexpectedly.')
  }
  if (verdict.isValid) return undefined
  return failure(
    verdict.invalidReason ?? Reason.unexpectedSettleError,
    network,
    verdict.invalidMessage ?? undefined,
    verdict.payer ?? undefined,
  )
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
