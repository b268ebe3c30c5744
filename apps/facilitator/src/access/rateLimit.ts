/**
 * Token buckets by client: each holds up to `burst` tokens and gains `requestsPerSecond` a second; a
 * request takes one. Kept as the time each bucket will be full again (GCRA, the token bucket's
 * equivalent), so a refused request changes nothing and no fraction of a token is lost to rounding.
 * At most `maxClients` buckets are kept; past it the least recently used goes, so a caller rotating
 * client addresses cannot grow memory without bound (a dropped bucket starts full, which such a
 * caller gets with a new address anyway). Kept in this process: each instance limits on its own.
 */

export type RateLimit = { requestsPerSecond: number; burst: number }

/**
 * @example
 * ```ts
 * const limiter = tokenBuckets({ requestsPerSecond: 10, burst: 20 })
 * const retryAfter = limiter.take('key:0') // undefined: allowed; else seconds to wait
 * ```
 */
export function tokenBuckets(limit: RateLimit, options: { maxClients?: number; now?: () => number } = {}) {
  const { maxClients = 10_000, now = Date.now } = options
  const interval = 1000 / limit.requestsPerSecond
  const tolerance = (limit.burst - 1) * interval
  /** Per client, when its bucket is full again (ms); each token taken moves it one interval later. */
  const full = new Map<string, number>()

  return {
    /** Takes a token for `client`: `undefined` when there was one, else the whole seconds until there is. */
    take(client: string): number | undefined {
      const time = now()
      const at = Math.max(full.get(client) ?? time, time)
      // Re-inserted, so the map's order is least recently used first.
      full.delete(client)
      full.set(client, at)
      while (full.size > maxClients) full.delete(full.keys().next().value!)
      const wait = at - time - tolerance
      if (wait > 0) return Math.max(1, Math.ceil(wait / 1000))
      full.set(client, at + interval)
      return undefined
    },

    /** How many clients have a bucket, for tests and metrics. */
    get size() {
      return full.size
    },
  }
}
