/**
 * Access credentials end to end on the local chain with real USDC (DESIGN §3 steps 4–5): our client
 * (`wrapFetch`) → a Hono paywall whose routes grant uses or a time window → our facilitator service
 * over HTTP, which settles on chain and issues a credential signed with the key it publishes at
 * `/.well-known/jwks.json` → later requests served on the credential, with no facilitator call.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import type { Server } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serve } from '@hono/node-server'
import type { DevnetAccount } from '@x402kit/devnet'
import { type FacilitatorService, startFacilitatorService } from '@x402kit/facilitator'
import { Hono } from 'hono'
import { privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type FacilitatorClient, HttpHeader, PaymentRequired } from 'x402kit'
import { getPaymentResult, wrapFetch } from 'x402kit/client'
import { exactEvmFacilitator, exactEvmServer, txproofClient, txproofEvmFacilitator, txproofServer } from 'x402kit/evm'
import { httpFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import { type Stack, settlementOnChain, startStack } from './support.ts'

const prices = { feed: 10_000n, news: 100_000n, report: 20_000n } as const
const budget = { perRequest: '$0.50' }

let stack: Stack
let issuer: FacilitatorService
let issuerDir: string
let api: { url: string; close(): Promise<void> }
const calls = { verify: 0, settle: 0 }
const keyFetches: string[] = []
const served: Record<string, number> = {}

/** A port free now, so the issuer can be told its own URL before it listens. */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

beforeAll(async () => {
  stack = await startStack({ payers: 4, spareSigners: 1 })
  // A facilitator service of its own, issuing credentials, with exact and pay-by-transaction.
  issuerDir = await mkdtemp(join(tmpdir(), 'x402kit-credential-'))
  const port = await freePort()
  const networks = { [stack.network]: { rpcUrl: stack.devnet.rpcUrl, signers: [stack.spareSigners[0]!.privateKey] } }
  issuer = await startFacilitatorService(
    { port, host: '127.0.0.1', dataDir: issuerDir, networks, credentials: { issuer: `http://127.0.0.1:${port}` } },
    {
      schemes: [
        exactEvmFacilitator({ networks }),
        txproofEvmFacilitator({ networks: { [stack.network]: { rpcUrl: stack.devnet.rpcUrl } } }),
      ],
    },
  )

  // Every call the resource server makes to the facilitator, counted.
  const remote = httpFacilitator(issuer.url)
  const counted: FacilitatorClient = {
    verify: (payment) => {
      calls.verify++
      return remote.verify(payment)
    },
    settle: (payment) => {
      calls.settle++
      return remote.settle(payment)
    },
    supported: () => remote.supported(),
  }
  const offer = { network: stack.network, asset: stack.asset }
  const app = new Hono()
  app.use(
    paywall({
      facilitator: counted,
      payTo: stack.payTo,
      schemes: [exactEvmServer(), txproofServer()],
      routes: {
        'GET /feed/*': { ...offer, price: '$0.01', grants: { uses: 3 } },
        'GET /news/*': { ...offer, price: '$0.10', grants: { window: '1h' } },
        'GET /report/*': { ...offer, price: '$0.02', scheme: 'txproof', grants: { window: '1h' } },
      },
      credentials: {
        audience: 'http://api.test',
        trust: [{ issuer: issuer.url }],
        keys: {
          fetch: ((input: RequestInfo | URL, init?: RequestInit) => {
            keyFetches.push(String(input))
            return fetch(input, init)
          }) as typeof fetch,
        },
      },
    }),
  )
  app.get('/*', (c) => {
    served[c.req.path] = (served[c.req.path] ?? 0) + 1
    return c.json({ path: c.req.path })
  })
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as Server
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
  api = {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
})

afterAll(async () => {
  await api?.close()
  await issuer?.close({ graceMs: 1_000 })
  await stack?.stop()
  if (issuerDir) await rm(issuerDir, { recursive: true, force: true })
})

const exactPayer = (payer: DevnetAccount) => wrapFetch(fetch, { account: privateKeyToAccount(payer.privateKey), budget })
const balances = (payer: DevnetAccount) => stack.balances([payer.address, stack.payTo])
const callsNow = () => ({ ...calls })

describe('access credentials on the local chain', () => {
  it('pays once with exact for a 3-use route, serves 3 requests on the credential with no facilitator call, then pays again', async () => {
    const payer = stack.payers[0]!
    const pay = exactPayer(payer)
    const before = await balances(payer)

    const first = await pay(`${api.url}/feed/a`)
    expect(first.status).toBe(200)
    const result = getPaymentResult(first)
    expect(result).toMatchObject({ paid: true, granted: { scope: 'GET /feed/*', usesLeft: 3 } })
    expect(await settlementOnChain(stack.devnet, result!.settlement!.transaction)).toEqual({
      status: 'success',
      transfers: [{ from: payer.address, to: stack.payTo, value: prices.feed }],
    })
    expect(callsNow()).toEqual({ verify: 1, settle: 1 })

    for (const path of ['/feed/b', '/feed/c', '/feed/b']) {
      const response = await pay(`${api.url}${path}`)
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual({ path })
      expect(getPaymentResult(response)).toMatchObject({ paid: false, credential: { scope: 'GET /feed/*' } })
    }
    expect(callsNow()).toEqual({ verify: 1, settle: 1 })
    expect(await balances(payer)).toEqual([before[0]! - prices.feed, before[1]! + prices.feed])

    const fourth = await pay(`${api.url}/feed/d`)
    expect(getPaymentResult(fourth)).toMatchObject({ paid: true, granted: { usesLeft: 3 } })
    expect(callsNow()).toEqual({ verify: 2, settle: 2 })
    expect(await balances(payer)).toEqual([before[0]! - 2n * prices.feed, before[1]! + 2n * prices.feed])
  })

  it('serves a 3-use credential sent 4 times at once exactly 3 times', async () => {
    const pay = exactPayer(stack.payers[1]!)
    const bought = await pay(`${api.url}/feed/x`)
    const token = bought.headers.get(HttpHeader.paymentCredential)!
    const before = { ...callsNow(), served: served['/feed/y'] ?? 0 }
    const responses = await Promise.all(
      Array.from({ length: 4 }, () => fetch(`${api.url}/feed/y`, { headers: { [HttpHeader.paymentCredential]: token } })),
    )
    expect(responses.map((response) => response.status).sort()).toEqual([200, 200, 200, 402])
    const refused = responses.find((response) => response.status === 402)!
    expect(PaymentRequired.decode(refused.headers.get(HttpHeader.paymentRequired)!).error).toBe('credential_uses_exhausted')
    expect(served['/feed/y']).toBe(before.served + 3)
    expect(callsNow()).toEqual({ verify: before.verify, settle: before.settle })
  })

  it('serves a one-hour window repeatedly after one payment', async () => {
    const payer = stack.payers[2]!
    const pay = exactPayer(payer)
    const before = await balances(payer)
    expect(getPaymentResult(await pay(`${api.url}/news/today`))).toMatchObject({ paid: true, granted: { scope: 'GET /news/*' } })
    const afterPayment = callsNow()
    for (let i = 0; i < 10; i++) {
      const response = await pay(`${api.url}/news/${i}`)
      expect(response.status).toBe(200)
      expect(getPaymentResult(response)?.credential).toBeDefined()
    }
    expect(callsNow()).toEqual(afterPayment)
    expect(await balances(payer)).toEqual([before[0]! - prices.news, before[1]! + prices.news])
  })

  it('has the facilitator service publish its keys, which the server fetched by URL once', async () => {
    const response = await fetch(`${issuer.url}/.well-known/jwks.json`)
    expect(response.status).toBe(200)
    const { keys } = (await response.json()) as { keys: Record<string, unknown>[] }
    expect(keys).toEqual([{ kty: 'OKP', crv: 'Ed25519', x: expect.any(String), kid: expect.any(String), alg: 'EdDSA', use: 'sig' }])
    expect(keyFetches).toEqual([`${issuer.url}/.well-known/jwks.json`])
  })

  it('runs the whole flow with pay-by-transaction: 402 → transfer on chain → credential → served on the issuer’s signature', async () => {
    const payer = stack.payers[3]!
    const before = await balances(payer)
    const asked = await fetch(`${api.url}/report/q1`)
    expect(asked.status).toBe(402)
    const [offer] = PaymentRequired.decode(asked.headers.get(HttpHeader.paymentRequired)!).accepts
    expect(offer).toMatchObject({
      scheme: 'txproof',
      amount: String(prices.report),
      extra: { grant: { scope: 'GET /report/*', windowSeconds: 3600 } },
    })

    const pay = wrapFetch(fetch, { schemes: [txproofClient({ wallet: stack.devnet.walletClient(payer.privateKey) })], budget })
    const start = callsNow()
    const paid = await pay(`${api.url}/report/q1`)
    expect(paid.status).toBe(200)
    const result = getPaymentResult(paid)
    expect(result).toMatchObject({ paid: true, offer: { scheme: 'txproof' }, granted: { scope: 'GET /report/*' } })
    expect(await settlementOnChain(stack.devnet, result!.settlement!.transaction)).toEqual({
      status: 'success',
      transfers: [{ from: payer.address, to: stack.payTo, value: prices.report }],
    })
    expect(callsNow()).toEqual({ verify: start.verify + 1, settle: start.settle + 1 })

    const again = await pay(`${api.url}/report/q2`)
    expect(again.status).toBe(200)
    expect(await again.json()).toEqual({ path: '/report/q2' })
    expect(getPaymentResult(again)).toMatchObject({ paid: false, credential: { scope: 'GET /report/*' } })
    expect(callsNow()).toEqual({ verify: start.verify + 1, settle: start.settle + 1 })
    expect(await balances(payer)).toEqual([before[0]! - prices.report, before[1]! + prices.report])
    expect(stack.facilitatorErrors).toEqual([])
  })
})
