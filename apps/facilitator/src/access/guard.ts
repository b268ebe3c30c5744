/**
 * Access to the paying operations (`/verify`, `/settle`, `/enqueue`): merchant API keys as bearer
 * tokens (RFC 6750) and a request rate limit per key, or per client address without keys. Refusals
 * are RFC 9457 problem details with a stable `code`, as the facilitator's other HTTP errors are.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { BaseError } from 'x402kit'
import { type RateLimit, tokenBuckets } from './rateLimit.ts'

/** The problem codes of access control, each with its status. A shipped code never changes. */
export const accessProblems = {
  missing_api_key: { status: 401, title: 'Unauthorized' },
  invalid_api_key: { status: 401, title: 'Unauthorized' },
  rate_limited: { status: 429, title: 'Too Many Requests' },
} as const

export type ApiKey = {
  /** The key itself, or its SHA-256 digest as `sha256:` and 64 hex digits (see `hashApiKey`). */
  key: string
  /** Who the key belongs to, for statements. */
  merchant: string
  /** The only recipients this merchant's requests may name, when set; checked by the caller once the body is parsed. */
  payTo?: readonly string[] | undefined
}

/** The merchant a request's key belongs to. */
export type Merchant = { merchant: string; payTo?: readonly string[] | undefined }

export type AccessGuardOptions = {
  /** When set, every guarded request must carry `Authorization: Bearer <key>` with one of these keys. */
  apiKeys?: readonly ApiKey[] | undefined
  /** Requests per API key (or per client address without keys; requests with neither share one bucket), as a token bucket. */
  rateLimit?: RateLimit | undefined
  /** Buckets kept at most; past it the least recently used is dropped. Default 10 000. */
  maxClients?: number | undefined
  /** The paths guarded. Default `/verify`, `/settle`, `/enqueue`. */
  paths?: readonly string[] | undefined
  now?: (() => number) | undefined
}

export type AccessGuard = {
  /** A 401 or 429 problem for a request that may not go on, or `undefined` when it may. */
  guard(request: Request, clientAddress?: string): Promise<Response | undefined>
  /** The merchant whose valid API key the request carries. */
  identify(request: Request): Merchant | undefined
}

/**
 * Builds the guard from the `access` configuration.
 *
 * @example
 * ```ts
 * import { createAccessGuard } from './access/guard.ts'
 * const access = createAccessGuard({ apiKeys: [{ key: process.env.SHOP_KEY!, merchant: 'shop' }], rateLimit: { requestsPerSecond: 20, burst: 40 } })
 * const fetch = async (request: Request) => (await access.guard(request, clientAddress)) ?? facilitator.handler(request)
 * ```
 */
export function createAccessGuard(options: AccessGuardOptions = {}): AccessGuard {
  // Only digests are kept: a heap dump or a log of this object shows no key.
  const keys = (options.apiKeys ?? []).map((entry) => ({
    digest: Buffer.from(hashApiKey(entry.key).slice('sha256:'.length), 'hex'),
    merchant: { merchant: entry.merchant, ...(entry.payTo && { payTo: entry.payTo }) } satisfies Merchant,
  }))
  const paths = new Set(options.paths ?? ['/verify', '/settle', '/enqueue'])
  const limiter =
    options.rateLimit &&
    tokenBuckets(options.rateLimit, {
      ...(options.maxClients !== undefined && { maxClients: options.maxClients }),
      ...(options.now && { now: options.now }),
    })

  /** The index of the request's key, `undefined` for none, `-1` for one that is not known. */
  function find(request: Request): number | undefined {
    const token = bearer(request)
    if (token === undefined) return undefined
    const digest = createHash('sha256').update(token).digest()
    // Every key is compared, in constant time, so the answer's timing tells nothing of which came close.
    let found = -1
    for (const [index, key] of keys.entries()) if (timingSafeEqual(digest, key.digest) && found === -1) found = index
    return found
  }

  return {
    async guard(request, clientAddress) {
      const path = new URL(request.url).pathname.replace(/(?<=.)\/$/, '')
      if (!paths.has(path)) return undefined
      let client = `address:${clientAddress ?? 'unknown'}`
      if (keys.length > 0) {
        const index = find(request)
        if (index === undefined)
          return problem('missing_api_key', 'This facilitator needs an API key: send Authorization: Bearer <key>.', {
            'www-authenticate': 'Bearer realm="x402"',
          })
        if (index === -1)
          return problem('invalid_api_key', 'The API key is not known to this facilitator.', {
            'www-authenticate': 'Bearer realm="x402", error="invalid_token"',
          })
        client = `key:${index}`
      }
      const retryAfter = limiter?.take(client)
      if (retryAfter !== undefined)
        return problem('rate_limited', `Too many requests; try again in ${retryAfter} s.`, { 'retry-after': String(retryAfter) })
      return undefined
    },

    identify(request) {
      const index = keys.length > 0 ? find(request) : undefined
      return index === undefined || index === -1 ? undefined : keys[index]!.merchant
    },
  }
}

/**
 * The form of an API key to write in configuration instead of the key: `sha256:` and its digest in hex.
 * A value already in that form is returned as it is.
 *
 * @example
 * ```ts
 * hashApiKey('sk_live_…') // 'sha256:9f86d0…'
 * ```
 */
export function hashApiKey(key: string): string {
  if (/^sha256:[0-9a-f]{64}$/i.test(key)) return key.toLowerCase()
  if (key.length === 0) throw new BaseError('An API key cannot be empty.', { code: 'invalid_api_key' })
  return `sha256:${createHash('sha256').update(key).digest('hex')}`
}

function bearer(request: Request): string | undefined {
  const header = request.headers.get('authorization')
  const match = header && /^Bearer +(\S+) *$/i.exec(header)
  return match ? match[1] : undefined
}

function problem(code: keyof typeof accessProblems, detail: string, headers: Record<string, string>): Response {
  const { status, title } = accessProblems[code]
  return new Response(JSON.stringify({ type: 'about:blank', title, status, detail, code }), {
    status,
    headers: { 'content-type': 'application/problem+json', ...headers },
  })
}
