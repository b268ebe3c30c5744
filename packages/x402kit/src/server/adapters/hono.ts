/**
 * The paywall as Hono middleware. Hono speaks Web `Request`/`Response` already; this only hands the
 * rest of the chain to the paywall as its `next`, and puts the paywall's answer in place.
 */
import type { MiddlewareHandler } from 'hono'
import { createPaywall, type PaywallConfig } from '../paywall.ts'
import { inheritHeaders } from './headers.ts'

/**
 * Hono middleware that protects the configured routes.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { paywall } from 'x402kit/hono'
 * const app = new Hono()
 * app.use(paywall({ facilitator: 'http://localhost:4020', payTo, network: 'eip155:8453', routes: { 'GET /weather': { price: '$0.001' } } }))
 * app.get('/weather', (c) => c.json({ weather: 'sunny' }))
 * ```
 */
export function paywall(config: PaywallConfig): MiddlewareHandler {
  const core = createPaywall(config)
  return async (c, next) => {
    if (!core.covers(c.req.raw)) return next()
    // What middleware in front set so far (CORS headers, say): kept on a 402, unlike the handler's headers.
    const untouched = !c.finalized
    const outer = new Headers(c.res.headers)
    // Reading `c.res` left a response in place; Hono would merge it into the handler's answer by
    // re-wrapping that answer's body as a stream. Headers set with `c.header()` stay prepared either way.
    if (untouched) {
      c.res = undefined
      c.finalized = false
    }
    let downstream: Response | undefined
    const response = await core.handle(c.req.raw, async () => {
      await next()
      downstream = c.res
      return downstream
    })
    if (response === downstream) return
    // Cleared first: assigning over a response merges the old one's headers into the new.
    c.res = undefined
    c.res = inheritHeaders(response, outer)
  }
}
