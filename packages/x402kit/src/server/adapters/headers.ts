/**
 * Headers the adapters share. A paywall answer that replaces the handler's (a 402, a 503) keeps what
 * middleware in front of the paywall set (CORS, a session cookie), and none of the handler's.
 */

// Headers that describe a body belong to the body they came with.
const bodyHeaders = new Set(['content-length', 'content-type', 'content-encoding', 'content-range', 'transfer-encoding'])
const listHeaders = new Set(['access-control-expose-headers', 'vary'])

/** Adds to `response` the headers `outer` has and it lacks; list headers such as `Access-Control-Expose-Headers` are merged. */
export function inheritHeaders(response: Response, outer: Headers): Response {
  const missing = new Set([...outer.keys()].filter((name) => !response.headers.has(name) && !bodyHeaders.has(name)))
  for (const [name, value] of outer) {
    if (missing.has(name)) response.headers.append(name, value)
    else if (listHeaders.has(name)) response.headers.set(name, union(response.headers.get(name), value))
  }
  return response
}

function union(...lists: (string | null)[]): string {
  const tokens = lists.flatMap((list) => (list ?? '').split(',').map((token) => token.trim()))
  const seen = new Map(tokens.filter(Boolean).map((token) => [token.toLowerCase(), token]))
  return [...seen.values()].join(', ')
}
