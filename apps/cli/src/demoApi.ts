/**
 * The demo paid API that `x402 dev` serves: a few routes at different prices, protected by the
 * Hono adapter and paid through a facilitator reached over HTTP.
 */
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import type { Asset, Network } from 'x402kit'
import { paywall } from 'x402kit/hono'

export type DemoApiOptions = { facilitatorUrl: string; payTo: string; network: Network.Network; asset: Asset; port?: number }

export const demoRoutes = {
  'GET /weather': { price: '$0.001', description: 'Current weather for a city' },
  'GET /quote': { price: '$0.0025', description: 'A quotation worth reading' },
  'POST /summarize': { price: '$0.01', description: 'Summarise a text' },
} as const

const quotes = ['Make it work, make it right, make it fast.', 'Simplicity is prerequisite for reliability.', 'Money is exact.']

export function demoApp(options: DemoApiOptions): Hono {
  const routes = Object.fromEntries(
    Object.entries(demoRoutes).map(([key, route]) => [key, { ...route, network: options.network, asset: options.asset }]),
  )
  const app = new Hono()
  app.use(paywall({ facilitator: options.facilitatorUrl, payTo: options.payTo, routes }))
  app.get('/', (c) => c.json({ routes: Object.keys(demoRoutes), free: ['GET /'] }))
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
