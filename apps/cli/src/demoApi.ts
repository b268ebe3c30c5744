/**
 * The demo paid API that `x402 dev` serves: routes at different prices, each showing a way to pay —
 * `exact` in USDC (EIP-3009), `exact` in a permit-only token (EIP-2612), pay-by-transaction, and a
 * route whose payment buys an access credential for later calls — protected by the Hono adapter and
 * paid through a facilitator reached over HTTP.
 */
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import type { Asset, Network } from 'x402kit'
import { exactEvmServer, txproofServer } from 'x402kit/evm'
import { paywall } from 'x402kit/hono'

export type DemoApiOptions = {
  facilitatorUrl: string
  /** The facilitator's credential issuer id; its keys are read from `facilitatorUrl`. */
  issuer: string
  /** The facilitator signer that spends EIP-2612 permits. */
  spender: string
  payTo: string
  network: Network.Network
  usdc: Asset
  permitToken: Asset
  port?: number
  /** Adds routes of its own to the app (the channel route of `x402 dev`). */
  extend?: (app: Hono) => void
}

export const demoRoutes = {
  'GET /weather': '$0.001 USDC, signed transfer (EIP-3009)',
  'GET /quote': '$0.0025 USDC, signed transfer, answered before settlement',
  'POST /summarize': '$0.01 USDC, signed transfer (EIP-3009)',
  'GET /report': '0.02 PUSD, signed permit (EIP-2612)',
  'GET /archive': '$0.005 USDC, paid by the agent’s own transaction',
  'GET /feed': '$0.003 USDC, buys 3 more calls with an access credential',
} as const

const quotes = ['Make it work, make it right, make it fast.', 'Simplicity is prerequisite for reliability.', 'Money is exact.']

export function demoApp(options: DemoApiOptions): Hono {
  const { network, usdc, permitToken } = options
  const app = new Hono()
  app.use(
    paywall({
      facilitator: options.facilitatorUrl,
      payTo: options.payTo,
      network,
      schemes: [exactEvmServer({ spender: options.spender }), txproofServer()],
      credentials: {
        audience: 'x402-dev-api',
        trust: [{ issuer: options.issuer, jwksUrl: `${options.facilitatorUrl}/.well-known/jwks.json` }],
      },
      routes: {
        'GET /weather': { price: '$0.001', asset: usdc, description: 'Current weather for a city' },
        'GET /quote': {
          price: '$0.0025',
          asset: usdc,
          description: 'A quotation worth reading',
          // Released once the payment is verified and queued; it settles in the next batch.
          settlement: 'after-response',
          maxUnsettled: '$0.05',
        },
        'POST /summarize': { price: '$0.01', asset: usdc, description: 'Summarise a text' },
        'GET /report': { price: '0.02', asset: permitToken, description: 'A market report, paid in a permit-only token' },
        'GET /archive': { price: '$0.005', asset: usdc, scheme: 'txproof', description: 'An archived article' },
        'GET /feed': { price: '$0.003', asset: usdc, grants: { uses: 3 }, description: 'The news feed, four calls per payment' },
      },
    }),
  )
  app.get('/', (c) => c.json({ routes: demoRoutes, free: ['GET /'] }))
  app.get('/weather', (c) => {
    const city = c.req.query('city') ?? 'Lisbon'
    return c.json({ city, temperatureC: 18 + (city.length % 7), conditions: 'clear' })
  })
  app.get('/quote', (c) => c.json({ quote: quotes[Math.floor(Math.random() * quotes.length)] }))
  app.post('/summarize', async (c) => {
    const body = (await c.req.json().catch(() => ({}))) as { text?: unknown }
    if (typeof body.text !== 'string' || body.text.length === 0) return c.json({ error: 'Send { "text": "..." }' }, 400)
    const words = body.text.split(/\s+/).filter(Boolean)
    return c.json({ words: words.length, summary: words.slice(0, 8).join(' ') + (words.length > 8 ? ' …' : '') })
  })
  app.get('/report', (c) => c.json({ market: 'stablecoins', trend: 'up', confidence: 0.7 }))
  app.get('/archive', (c) => c.json({ title: 'HTTP 402, reserved since 1997', words: 1402 }))
  let item = 0
  app.get('/feed', (c) => c.json({ item: ++item, headline: `Headline number ${item}` }))
  options.extend?.(app)
  return app
}

/** Serves the demo API on loopback; resolves once it listens. */
export async function startDemoApi(options: DemoApiOptions): Promise<{ url: string; close(): Promise<void> }> {
  const app = demoApp(options)
  return await new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: options.port ?? 0 }, (info) => {
      resolve({
        url: `http://127.0.0.1:${info.port}`,
        close: () => new Promise<void>((done) => server.close(() => done())),
      })
    })
  })
}
