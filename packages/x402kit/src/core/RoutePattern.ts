/**
 * RoutePattern: the `'METHOD /path'` keys that name paid routes, and the access-credential scopes
 * bought for them (DESIGN §7 invariant 5). Paths are matched by segment: `*` is one or more
 * segments, a final `/*` any tail. Matching takes already-normalised, lower-case segments.
 */
import { BaseError } from './Errors.ts'

export const one = Symbol('one segment')
export const any = Symbol('any segments')
export type Segment = string | typeof one | typeof any

export type RoutePattern = {
  /** `undefined`: every method. */
  method: string | undefined
  /** Path segments to match: a literal, `one` (any one segment) or `any` (zero or more). */
  pattern: readonly Segment[]
}

export const methods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])
const keyPattern = /^(?:([A-Za-z]+)\s+)?(\S+)$/
const segmentPattern = /^[\p{L}\p{N}\-._~!$&'()+,=@]+$/u

/**
 * Parses a route key such as `'GET /feed/*'`; throws a `BaseError` (code `invalid_route`) naming
 * what is wrong.
 *
 * @example
 * ```ts
 * const { method, pattern } = parse('GET /feed/*')
 * matches({ method, pattern }, 'GET', ['feed', 'today']) // true
 * ```
 */
export function parse(key: string): RoutePattern {
  const match = keyPattern.exec(key.trim())
  const method = match?.[1]?.toUpperCase()
  const path = match?.[2] ?? ''
  if (!match || !path.startsWith('/')) fail(`Route "${key}" is not "METHOD /path" or "/path".`, "Write e.g. 'GET /weather' or '/feed/*'.")
  if (method !== undefined && !methods.has(method))
    fail(`Route "${key}" has the unknown method "${method}".`, `Use one of ${[...methods].join(', ')}, or no method for all.`)
  const segments = path.toLowerCase().split('/').filter(Boolean)
  for (const segment of segments) {
    if (segment === '*') continue
    if (segment.startsWith(':') || segment.includes('*'))
      fail(`Route "${key}" has the segment "${segment}".`, 'A variable part is a whole segment written "*".')
    if (segment === '.' || segment === '..' || !segmentPattern.test(segment))
      fail(
        `Route "${key}" has the segment "${segment}", which a request path never has once normalised.`,
        'Write the path as clients see it decoded, without ".", "..", "%", "?", "#", ";" or "\\".',
      )
  }
  const tail = segments.at(-1) === '*'
  // A middle `*` is one segment and then any more, so it also covers a segment holding an encoded `/`.
  const pattern = (tail ? segments.slice(0, -1) : segments).flatMap((segment): Segment[] => (segment === '*' ? [one, any] : [segment]))
  return { method, pattern: tail ? [...pattern, any] : pattern }
}

/** Whether a pattern applies to a request's method and (normalised, lower-case) path segments. */
export function matches(route: RoutePattern, method: string, segments: readonly string[]): boolean {
  return coversMethod(route.method, method.toUpperCase()) && matchSegments(route.pattern, segments)
}

/**
 * Whether a path's segments match a pattern: the classic wildcard walk, which retries only from
 * the last `any`, so its cost stays proportional to pattern × path length whatever the path.
 */
export function matchSegments(pattern: readonly Segment[], segments: readonly string[]): boolean {
  let p = 0
  let s = 0
  let retryP = -1
  let retryS = 0
  while (s < segments.length) {
    const wanted = pattern[p]
    if (wanted === any) {
      retryP = p++
      retryS = s
    } else if (wanted !== undefined && (wanted === one || wanted === segments[s])) {
      p++
      s++
    } else if (retryP !== -1) {
      p = retryP + 1
      s = ++retryS
    } else return false
  }
  while (pattern[p] === any) p++
  return p === pattern.length
}

/** Whether a declared method (`undefined`: every method) covers a request's upper-case method. */
export function coversMethod(declared: string | undefined, method: string): boolean {
  // Servers answer HEAD with the GET handler, so a GET price covers HEAD.
  return declared === undefined || declared === method || (declared === 'GET' && method === 'HEAD')
}

/** One string per pattern, equal for two keys that name the same paths. */
export function canonical(pattern: readonly Segment[]): string {
  return pattern.map((segment) => (segment === one ? '/?' : segment === any ? '/**' : `/${segment}`)).join('')
}

/** The segments of a normalised path. */
export function segmentsOf(path: string): string[] {
  return path.split('/').filter(Boolean)
}

function fail(shortMessage: string, hint: string): never {
  throw new BaseError(shortMessage, { code: 'invalid_route', hint })
}
