/**
 * Choosing the offer to pay among a 402's `accepts`: one that a scheme can pay, within the budget,
 * cheapest first.
 */
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import type { SchemeClient } from '../core/Scheme.ts'
import * as Budget from './Budget.ts'

export type Rejection = {
  offer: PaymentRequirements
  reason: 'unsupported' | Budget.CheckFailure
  message: string
}

export type Choice = { index: number; offer: PaymentRequirements; scheme: SchemeClient }

export type Selection =
  | { ok: true; choice: Choice; rejected: Rejection[] }
  | { ok: false; reason: 'no_payable_offer' | Budget.CheckFailure; rejected: Rejection[] }

type Candidate = Choice & { usd: Budget.Usd | undefined; group: number; rank: number }

/**
 * Picks the offer to pay. Offers in the schemes of `prefer` come first, in that order; then, within
 * each, offers valued in dollars come first, cheapest first; then offers in other assets the budget
 * names, cheapest first within each asset, assets in the server's order. Ties keep the server's order.
 *
 * @example
 * ```ts
 * const selection = select(paymentRequired.accepts, { schemes, budget: Budget.from({ perRequest: '$0.05' }) })
 * if (selection.ok) await selection.choice.scheme.createPayload(selection.choice.offer, { resource })
 * ```
 */
export function select(
  offers: readonly PaymentRequirements[],
  context: { schemes: readonly SchemeClient[]; budget: Budget.Budget; prefer?: readonly string[] },
): Selection {
  const prefer = context.prefer ?? []
  const rankOf = (scheme: string) => (prefer.includes(scheme) ? prefer.indexOf(scheme) : prefer.length)
  const rejected: Rejection[] = []
  const candidates: Candidate[] = []
  const groups = new Map<string, number>()

  offers.forEach((offer, index) => {
    const scheme = context.schemes.find((s) => s.scheme === offer.scheme && canPay(s, offer))
    if (!scheme) {
      rejected.push({ offer, reason: 'unsupported', message: `No scheme pays "${offer.scheme}" on ${offer.network}.` })
      return
    }
    const check = context.budget.check(offer)
    if (!check.ok) {
      rejected.push({ offer, reason: check.reason, message: check.message })
      return
    }
    const asset = `${offer.network}/${offer.asset.toLowerCase()}`
    if (!groups.has(asset)) groups.set(asset, groups.size)
    candidates.push({ index, offer, scheme, usd: check.usd, group: groups.get(asset) ?? 0, rank: rankOf(offer.scheme) })
  })

  const [best] = candidates.sort(cheaperFirst)
  if (best) return { ok: true, choice: { index: best.index, offer: best.offer, scheme: best.scheme }, rejected }
  const reason = rejected.some((r) => r.reason === 'over_budget')
    ? 'over_budget'
    : rejected.some((r) => r.reason === 'asset_not_in_budget')
      ? 'asset_not_in_budget'
      : 'no_payable_offer'
  return { ok: false, reason, rejected }
}

function cheaperFirst(a: Candidate, b: Candidate): number {
  if (a.rank !== b.rank) return a.rank - b.rank
  if (a.usd && b.usd) return Budget.compare(a.usd, b.usd)
  if (a.usd) return -1
  if (b.usd) return 1
  if (a.group !== b.group) return a.group - b.group
  const left = BigInt(a.offer.amount)
  const right = BigInt(b.offer.amount)
  return left < right ? -1 : left > right ? 1 : 0
}

// A scheme's `canPay` runs on server input; one that throws cannot pay that offer.
function canPay(scheme: SchemeClient, offer: PaymentRequirements): boolean {
  try {
    return scheme.canPay(offer)
  } catch {
    return false
  }
}
