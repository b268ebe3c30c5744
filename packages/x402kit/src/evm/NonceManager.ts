/**
 * NonceManager: one transaction-nonce sequence per signer key, so that many settlements from one key
 * can be in flight at once without a `eth_getTransactionCount` round trip (or a collision) per send.
 *
 * The sequence is read once from the chain (`pending` block tag) and then handed out synchronously.
 * A nonce the node provably refused goes back to the pool; a later reservation reuses it first, since
 * every higher nonce waits behind that gap.
 */
import { BaseError } from '../core/Errors.ts'

export type NonceManager = {
  /** Reads the chain's pending transaction count once; later calls resolve at once. */
  ready(): Promise<void>
  /** The next nonce. Synchronous: between reading and advancing the counter nothing else runs. */
  reserve(): number
  /** Hands back a nonce the node refused, so that no gap is left behind it. */
  release(nonce: number): void
  /** Re-reads the chain after a nonce conflict; the sequence only ever moves forward. */
  resync(): Promise<void>
  /**
   * Forgets the sequence, so that the next `resync` takes the chain's count as it is, even lower:
   * after a reorganisation took mined transactions out of the chain.
   */
  rewind(): void
}

/**
 * A nonce sequence for one account.
 *
 * @example
 * ```ts
 * import { NonceManager } from 'x402kit/evm'
 * const nonces = NonceManager.create(() => client.getTransactionCount({ address, blockTag: 'pending' }))
 * await nonces.ready()
 * const nonce = nonces.reserve()
 * ```
 */
export function create(pendingCount: () => Promise<number>): NonceManager {
  let next: number | undefined
  let loading: Promise<void> | undefined
  // Refused nonces below `next`, lowest first.
  let gaps: number[] = []

  const load = () => {
    loading ??= pendingCount().then(
      (count) => {
        next = Math.max(next ?? 0, count)
        gaps = gaps.filter((gap) => gap >= count)
        loading = undefined
      },
      (error) => {
        loading = undefined
        throw error
      },
    )
    return loading
  }

  return {
    async ready() {
      if (next === undefined) await load()
    },
    reserve() {
      if (next === undefined) throw new BaseError('NonceManager.reserve() was called before ready().', { hint: 'Await ready() first.' })
      const gap = gaps.shift()
      if (gap !== undefined) return gap
      return next++
    },
    release(nonce) {
      if (next === undefined || nonce >= next) return
      if (nonce === next - 1) {
        next = nonce
        // The gaps just below the new top are no longer gaps but the top itself.
        while (gaps.length > 0 && gaps[gaps.length - 1] === next - 1) next = gaps.pop()!
      } else if (!gaps.includes(nonce)) {
        gaps.push(nonce)
        gaps.sort((a, b) => a - b)
      }
    },
    resync: load,
    rewind() {
      next = undefined
      gaps = []
    },
  }
}

/**
 * What a failed `eth_sendRawTransaction` says about the transaction:
 * - `known`: the node already has this very transaction (a repeated send of the same bytes);
 * - `conflict`: the nonce is taken (mined, or pooled by another transaction), so this one was refused;
 * - `refused`: the node answered with another error, so it did not take the transaction;
 * - `unknown`: no answer (timeout, connection or HTTP failure, internal error): the node may have taken it.
 */
export function classifySendError(error: unknown): 'known' | 'conflict' | 'refused' | 'unknown' {
  const text = messages(error)
  if (/already known|known transaction|already imported|AlreadyKnown/i.test(text)) return 'known'
  if (
    /nonce too low|nonce has already been used|replacement transaction underpriced|NonceTooLow|OldNonce|ReplacementUnderpriced/i.test(text)
  )
    return 'conflict'
  const code = rpcCode(error)
  // -32603 "internal error" is what gateways answer when the node behind them failed or timed out.
  return code === undefined || code === -32603 ? 'unknown' : 'refused'
}

function messages(error: unknown): string {
  const parts: string[] = []
  for (let e = error, depth = 0; e && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof Error) parts.push(e.message)
    const details = (e as { details?: unknown }).details
    if (typeof details === 'string') parts.push(details)
  }
  return parts.join('\n')
}

// A JSON-RPC error code anywhere in the chain means the node answered. An HTTP status error is not an
// answer from the node: a proxy or load balancer may have failed after forwarding the request.
function rpcCode(error: unknown): number | undefined {
  for (let e = error, depth = 0; e && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, status } = e as { code?: unknown; status?: unknown }
    if (typeof status === 'number') return undefined
    if (typeof code === 'number' && code !== -1) return code
  }
  return undefined
}
