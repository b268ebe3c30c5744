/**
 * Budget: what a payer is willing to pay, checked against each offer before anything is signed.
 *
 * Limits in US dollars apply to offers in known USD stablecoins, valued exactly from the asset's
 * decimals (no floating point). Offers in other assets are paid only under an explicit limit in
 * atomic units for that asset. A budget is an object with `check`, so limits per host or per day can
 * join later without changing its callers.
 */
import { BaseError } from '../core/Errors.ts'
import * as Money from '../core/Money.ts'
import * as Network from '../core/Network.ts'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'

export type Limits = {
  /** The most to pay for one request, in US dollars (`'$0.05'`, `'0.05'`, `0.05`), in known USD stablecoins. */
  perRequest?: string | number
  /**
   * The most to pay for one request in atomic units of an asset, keyed by token address (any network)
   * or by `'<network>/<address>'` (that network only, e.g. `'eip155:8453/0x8335…'`). Applies in
   * addition to `perRequest` where both do.
   */
  perRequestAtomic?: Readonly<Record<string, string | bigint>>
}

/** An asset the payer knows the decimals of, beyond the `Network` registry. */
export type KnownAsset = { network: string; address: string; decimals: number; symbol: string }

/** An amount in US dollars: `amount` units of 10^-`decimals` dollars. */
export type Usd = { amount: bigint; decimals: number }

export type CheckFailure = 'over_budget' | 'asset_not_in_budget'

export type Check = { ok: true; usd: Usd | undefined } | { ok: false; reason: CheckFailure; message: string }

export type Budget = {
  /** Whether the offer may be paid; when it may, its value in US dollars where that is known. */
  check(offer: PaymentRequirements): Check
}

export class BudgetError extends BaseError {
  override name = 'BudgetError'
  constructor(shortMessage: string, hint?: string) {
    super(shortMessage, { code: 'invalid_budget', hint })
  }
}

/** Dollar limits are held with this many decimals; any USD stablecoin has fewer. */
const usdDecimals = 18

/**
 * A budget from limits. Throws a `BudgetError` on a limit that does not parse, or when no limit is given.
 *
 * @example
 * ```ts
 * import { Budget } from 'x402kit/client'
 * const budget = Budget.from({ perRequest: '$0.05' })
 * budget.check(offer) // { ok: true, usd } or { ok: false, reason: 'over_budget', message }
 * ```
 */
export function from(limits: Limits, options: { assets?: readonly KnownAsset[] } = {}): Budget {
  const usdLimit = parseUsd(limits.perRequest)
  const atomicLimits = parseAtomicLimits(limits.perRequestAtomic ?? {})
  if (usdLimit === undefined && atomicLimits.size === 0)
    throw new BudgetError('The budget sets no limit.', "Give `perRequest` in dollars (e.g. '$0.05'), or `perRequestAtomic` per asset.")
  const assets = options.assets ?? []

  return {
    check(offer) {
      const amount = BigInt(offer.amount)
      const asset = findAsset(offer, assets)
      const usd = asset && isUsd(asset.symbol) ? { amount, decimals: asset.decimals } : undefined
      const atomicLimit = atomicLimits.get(key(offer.network, offer.asset)) ?? atomicLimits.get(normalize(offer.asset))

      if (atomicLimit === undefined && (usd === undefined || usdLimit === undefined)) {
        const what = asset ? `${asset.symbol} (${offer.asset} on ${offer.network})` : `${offer.asset} on ${offer.network}`
        return { ok: false, reason: 'asset_not_in_budget', message: `The budget has no limit for ${what}.` }
      }
      if (usd && usdLimit !== undefined && compare(usd, usdLimit) > 0)
        return {
          ok: false,
          reason: 'over_budget',
          message: `The offer costs $${Money.format(usd.amount, usd.decimals)}; the limit per request is $${Money.format(usdLimit.amount, usdLimit.decimals)}.`,
        }
      if (atomicLimit !== undefined && amount > atomicLimit)
        return {
          ok: false,
          reason: 'over_budget',
          message: `The offer costs ${amount} atomic units of ${offer.asset}; the limit per request is ${atomicLimit}.`,
        }
      return { ok: true, usd }
    },
  }
}

/** Compares two dollar amounts exactly: negative, zero or positive. */
export function compare(a: Usd, b: Usd): number {
  const left = a.amount * 10n ** BigInt(b.decimals)
  const right = b.amount * 10n ** BigInt(a.decimals)
  return left < right ? -1 : left > right ? 1 : 0
}

function parseUsd(price: Limits['perRequest']): Usd | undefined {
  if (price === undefined) return undefined
  if (typeof price !== 'string' && typeof price !== 'number')
    throw new BudgetError('`perRequest` is in dollars: a string or a number.', 'For atomic units of one asset, use `perRequestAtomic`.')
  try {
    return { amount: Money.parse(price, usdDecimals), decimals: usdDecimals }
  } catch (cause) {
    throw new BudgetError(`\`perRequest\` is not an amount of dollars: ${cause instanceof BaseError ? cause.shortMessage : String(cause)}`)
  }
}

function parseAtomicLimits(limits: Readonly<Record<string, string | bigint>>): Map<string, bigint> {
  const parsed = new Map<string, bigint>()
  for (const [asset, limit] of Object.entries(limits)) {
    const slash = asset.lastIndexOf('/')
    const normalized = slash === -1 ? normalize(asset) : key(asset.slice(0, slash), asset.slice(slash + 1))
    try {
      parsed.set(normalized, Money.parseAtomic(limit))
    } catch {
      throw new BudgetError(
        `\`perRequestAtomic\` for ${asset} is not an amount of atomic units.`,
        'Use a decimal string of digits or a bigint.',
      )
    }
  }
  return parsed
}

function findAsset(offer: PaymentRequirements, assets: readonly KnownAsset[]): KnownAsset | undefined {
  const network = Network.find(offer.network)?.network ?? offer.network
  const address = normalize(offer.asset)
  const local = assets.find((a) => (Network.find(a.network)?.network ?? a.network) === network && normalize(a.address) === address)
  if (local) return local
  const known = Network.find(network)?.assets.find((a) => normalize(a.address) === address)
  return known && { network, address: known.address, decimals: known.decimals, symbol: known.symbol }
}

// USDC, USDC.e, USDT0 …: every registered symbol of a dollar stablecoin starts with "USD".
function isUsd(symbol: string): boolean {
  return /^USD/i.test(symbol)
}

function key(network: string, address: string): string {
  return `${Network.find(network)?.network ?? network}/${normalize(address)}`
}

// EVM addresses compare case-insensitively; other chains' addresses (base58) are case-sensitive.
function normalize(address: string): string {
  return /^0x[0-9a-fA-F]+$/.test(address) ? address.toLowerCase() : address
}
