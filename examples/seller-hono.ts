/**
 * A paid API with Hono: one free route, two paid ones, paid in USDC on Base Sepolia through a
 * facilitator reached over HTTP.
 *
 *   PAY_TO=0xYourAddress FACILITATOR_URL=http://127.0.0.1:4020 npx tsx examples/seller-hono.ts
 */
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { paywall } from 'x402kit/hono'

const payTo = required('PAY_TO')
const app = new Hono()

app.use(
  paywall({
    facilitator: process.env.FACILITATOR_URL ?? 'http://127.0.0.1:4020',
    payTo,
    network: 'eip155:84532',
    routes: {
      'GET /weather': { price: '$0.001', description: 'Current weather for a city' },
      // A dynamic price: longer texts cost more.
      'POST /summarize': {
        price: async (request) => ((await request.clone().text()).length > 10_000 ? '$0.05' : '$0.01'),
        description: 'Summarise a text',
      },
    },
  }),
)

app.get('/', (c) => c.text('free'))
app.get('/weather', (c) => c.json({ city: c.req.query('city') ?? 'Lisbon', temperatureC: 19 }))
app.post('/summarize', async (c) => c.json({ summary: (await c.req.text()).slice(0, 80) }))

serve({ fetch: app.fetch, port: Number(process.env.PORT ?? 4021) }, (info) => console.log(`paid API on http://127.0.0.1:${info.port}`))

function required(name: string): string {
  const value = process.env[name]
  if (!value) throw new Error(`Set ${name}.`)
  return value
}
