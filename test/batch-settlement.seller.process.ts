/**
 * A channel seller in a process of its own, for the crash suite: our paywall on Hono over loopback,
 * channels in a SQL store (PostgreSQL at `DATABASE_URL`, else PGlite in `SELLER_DATA_DIR`), deposits
 * and claims through the facilitator at `FACILITATOR_URL`. `GET /ready`, `GET /channel/:id` and
 * `POST /claim` let the suite look inside.
 */
import { PGlite } from '@electric-sql/pglite'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import pg from 'pg'
import type { Address } from 'viem'
import { Network } from 'x402kit'
import { batchSettlementEvmServer, type SqlQueryable, sqlSellerChannelStore } from 'x402kit/evm'
import { httpFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'

const env = (name: string) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set`)
  return value
}
const network = env('SELLER_NETWORK') as `${string}:${string}`
const usdc = {
  address: env('SELLER_USDC') as Address,
  name: 'USD Coin',
  version: '2',
  decimals: 6,
  symbol: 'USDC',
  transfer: 'eip3009',
} as const
Network.registerAsset(network, Number(network.split(':')[1]), usdc)

const db: SqlQueryable = process.env.DATABASE_URL
  ? new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 })
  : await PGlite.create(env('SELLER_DATA_DIR'))
const seller = batchSettlementEvmServer({
  receiverAuthorizer: env('SELLER_RECEIVER_AUTHORIZER'),
  facilitator: httpFacilitator(env('FACILITATOR_URL')),
  store: sqlSellerChannelStore(db, { table: env('SELLER_TABLE') }),
  durability: { intervalMs: Number(env('SELLER_COMMIT_MS')), maxUnsaved: Number(env('SELLER_MAX_UNSAVED')) },
})
await seller.ready()

const app = new Hono()
app.get('/ready', (c) => c.text('ok'))
app.get('/channel/:id', (c) => {
  const channel = seller.channel(c.req.param('id'))
  if (!channel) return c.json(null)
  return c.json({ charged: channel.charged.toString(), totalClaimed: channel.totalClaimed.toString(), balance: channel.balance.toString() })
})
app.post('/claim', async (c) => {
  const results = await seller.claim()
  return c.json(results.map((result) => ({ ...result, claimed: result.claimed.toString() })))
})
app.use(
  paywall({
    facilitator: env('FACILITATOR_URL'),
    payTo: env('SELLER_PAY_TO'),
    network,
    schemes: [seller],
    routes: { 'GET /quote': { price: { atomic: env('SELLER_PRICE') }, scheme: 'batch-settlement', asset: usdc } },
  }),
)
app.get('/quote', (c) => c.json({ symbol: 'ETH', usd: 3_000 }))

serve({ fetch: app.fetch, port: Number(env('SELLER_PORT')), hostname: '127.0.0.1' })
