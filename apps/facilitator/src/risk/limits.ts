/**
 * Per-payer limits over a sliding window: how many payments, and how much of each asset. The window
 * is a log of the payer's accepted payments in the last `windowSeconds`, kept in this process only:
 * each instance of the service counts the payments it accepted, so N instances behind a load
 * balancer allow up to N times the limit.
 */

export type PayerLimits = {
  windowSeconds: number
  /** Most payments a payer may make in a window. */
  maxPayments?: number | undefined
  /** Most a payer may pay in a window, per asset address, in the asset's atomic units. */
  maxAmount?: Record<string, bigint> | undefined
}

type Entry = { at: number; asset: string; amount: bigint }

/**
 * The payers' windows. At most `maxPayers` are kept: past it the least recently active payer's window
 * is dropped (and its limits start afresh), so memory stays bounded whatever the number of payers.
 *
 * @example
 * ```ts
 * const windows = payerWindows({ windowSeconds: 60, maxPayments: 10 })
 * windows.check('0xabc…', '0xusdc…', 1000n) // undefined: within the limits
 * windows.record('0xabc…', '0xusdc…', 1000n)
 * ```
 */
export function payerWindows(limits: PayerLimits, options: { maxPayers?: number; now?: () => number } = {}) {
  const { maxPayers = 100_000, now = Date.now } = options
  const windowMs = limits.windowSeconds * 1000
  const maxAmount = new Map(Object.entries(limits.maxAmount ?? {}).map(([asset, amount]) => [asset.toLowerCase(), amount]))
  const payers = new Map<string, Entry[]>()

  /** The payer's entries still in the window, oldest first. */
  function current(payer: string): Entry[] {
    const entries = payers.get(payer)
    if (!entries) return []
    const since = now() - windowMs
    let expired = 0
    while (expired < entries.length && entries[expired]!.at <= since) expired++
    if (expired > 0) entries.splice(0, expired)
    if (entries.length === 0) payers.delete(payer)
    return entries
  }

  return {
    /** Which limit this payment would break, if any: at the limit passes, past it does not. */
    check(payer: string, asset: string, amount: bigint): 'payments' | 'amount' | undefined {
      const entries = current(payer.toLowerCase())
      if (limits.maxPayments !== undefined && entries.length + 1 > limits.maxPayments) return 'payments'
      const max = maxAmount.get(asset.toLowerCase())
      if (max !== undefined) {
        let sum = amount
        for (const entry of entries) if (entry.asset === asset.toLowerCase()) sum += entry.amount
        if (sum > max) return 'amount'
      }
      return undefined
    },

    record(payer: string, asset: string, amount: bigint): void {
      const key = payer.toLowerCase()
      const entries = current(key)
      entries.push({ at: now(), asset: asset.toLowerCase(), amount })
      // Re-inserted, so the map's order is least recently active first.
      payers.delete(key)
      payers.set(key, entries)
      while (payers.size > maxPayers) payers.delete(payers.keys().next().value!)
    },

    /** How many payers have a window, for tests and metrics. */
    get size() {
      return payers.size
    },
  }
}
