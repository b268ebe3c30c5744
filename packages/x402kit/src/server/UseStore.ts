/**
 * UseStore: how many requests each N-use access credential has served. The count is taken before
 * the handler runs, atomically, so an N-use credential sent N+1 times at once serves N of them.
 */

/**
 * Where a paywall counts credential uses. Every method must be atomic across all server instances
 * that share the store. On SQL, `consume` is one statement:
 *
 * ```sql
 * INSERT INTO credential_uses (id, used, expires_at) VALUES ($1, 1, $3)
 * ON CONFLICT (id) DO UPDATE SET used = credential_uses.used + 1 WHERE credential_uses.used < $2
 * RETURNING used -- no row: used up
 * ```
 */
export type UseStore = {
  /** Counts one use of credential `id`, which allows `limit` uses and expires at `expiresAt` (ms). False when used up. */
  consume(id: string, limit: number, expiresAt: number): Promise<boolean>
  /** Gives back a use `consume` counted, when the request it was counted for was not served. */
  release(id: string): Promise<void>
}

/**
 * A use store in this process's memory: the default, right for one server instance. Entries go once
 * their credential has expired.
 *
 * @example
 * ```ts
 * import { memoryUseStore } from 'x402kit/server'
 * const store = memoryUseStore()
 * ```
 */
export function memoryUseStore(options: { now?: () => number } = {}): UseStore {
  const now = options.now ?? Date.now
  const uses = new Map<string, { used: number; expiresAt: number }>()
  let writes = 0

  function prune() {
    const time = now()
    for (const [id, entry] of uses) if (entry.expiresAt < time) uses.delete(id)
  }

  // Check and write with no `await` between them: atomic within the process.
  return {
    async consume(id, limit, expiresAt) {
      if (++writes % 1024 === 0) prune()
      const entry = uses.get(id) ?? { used: 0, expiresAt }
      if (entry.used >= limit) return false
      entry.used++
      uses.set(id, entry)
      return true
    },
    async release(id) {
      const entry = uses.get(id)
      if (entry && entry.used > 0) entry.used--
    },
  }
}
