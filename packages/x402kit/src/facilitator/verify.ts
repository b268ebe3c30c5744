/**
 * Verify (x402 v2 §7.1 `/verify`): the scheme checks the payment, then its settlement key is reserved,
 * so one authorization is accepted by one verification at a time. Without the reservation, two
 * resource servers (or one, twice) could verify the same authorization before either settles it and
 * both serve — the window between verify and settle that the reference SDK once had.
 */
import { Reason } from '../core/Errors.ts'
import type { Payment, VerifyResponse } from '../core/Facilitator.ts'
import { accepted, alreadyUsed, type Context, invalid, newRecord, screen } from './internal/context.ts'
import type { SettlementRecord } from './Store.ts'

export async function verify(context: Context, payment: Payment): Promise<VerifyResponse> {
  const scheme = context.route(payment.requirements)
  if (typeof scheme === 'string') return invalid(scheme, `No scheme "${payment.requirements.scheme}" on ${payment.requirements.network}.`)
  const grantRefusal = context.credentials.refusal(payment.requirements)
  if (grantRefusal) return invalid(Reason.invalidPaymentRequirements, grantRefusal)

  let key: string | undefined
  try {
    key = scheme.settlementKey(payment)
  } catch (error) {
    context.onError(error, { operation: 'verify' })
    return invalid(Reason.unexpectedVerifyError)
  }

  let checked: { result: VerifyResponse } | { error: unknown }
  try {
    checked = { result: await scheme.verify(payment) }
  } catch (error) {
    checked = { error }
  }
  // A taken key is refused whatever the scheme says. For a valid payment the reservation below finds
  // it; only a refused one looks it up, so that an honest payment costs one store call.
  if (key !== undefined && !('result' in checked && checked.result.isValid)) {
    const existing = await context.store.get(key)
    if (existing && !expired(context, existing))
      return invalid(scheme.alreadyUsedReason ?? alreadyUsed.reason, alreadyUsed.message, existing.payer)
  }
  if ('error' in checked) {
    context.onError(checked.error, { operation: 'verify', ...(key !== undefined && { key }) })
    return invalid(Reason.unexpectedVerifyError)
  }
  const result: VerifyResponse = checked.result
  // Only a valid payment reserves its key: an invalid one (say, a forged signature over someone
  // else's nonce) must not be able to block the real payer.
  if (!result.isValid) return result
  let screened: Awaited<ReturnType<typeof screen>>
  try {
    screened = await screen(context, payment, result.payer)
  } catch (error) {
    context.onError(error, { operation: 'verify', ...(key !== undefined && { key }) })
    return invalid(Reason.unexpectedVerifyError)
  }
  if (screened?.refusal) return invalid(screened.refusal.reason, screened.refusal.message, result.payer ?? undefined)
  if (key === undefined) {
    accepted(context, screened?.input)
    return result
  }

  const now = context.now()
  const record = newRecord(key, payment, 'verified', result.payer, now)
  const existing = await context.store.reserve(key, record)
  if (!existing) {
    accepted(context, screened?.input)
    remember(context, key)
    return result
  }
  if (existing.status === 'verified') {
    // A verification nobody settled within the TTL gives way, so an honest client can retry.
    const { key: _, createdAt, ...fresh } = record
    const taken = await context.store.update(key, fresh, { status: 'verified', updatedBefore: now - context.verifyTtlMs })
    if (taken) {
      accepted(context, screened?.input)
      remember(context, key)
      return result
    }
  }
  return invalid(scheme.alreadyUsedReason ?? alreadyUsed.reason, alreadyUsed.message, existing.payer)
}

function expired(context: Context, record: SettlementRecord): boolean {
  return record.status === 'verified' && record.updatedAt < context.now() - context.verifyTtlMs
}

const remembered = 10_000

/** Notes a key this process verified, forgetting the oldest past `remembered`. */
function remember(context: Context, key: string) {
  context.verified.add(key)
  if (context.verified.size > remembered) context.verified.delete(context.verified.values().next().value!)
}
