/**
 * Settlement after the response, end to end on the local chain: our client → a Hono API whose routes
 * settle `after-response` → our facilitator service with its settlement pipeline (PGlite, batches to
 * the SettlementBatcher) → real USDC. Mining is paused where a test needs to see an answer leave
 * before its payment is on chain.
 */

import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { createTestClient, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Base64Json, Facilitator, HttpHeader } from 'x402kit'
import { wrapFetch } from 'x402kit/client'
import { httpFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import type { PaywallConfig } from 'x402kit/server'
import { budget, type Stack, startStack } from './support.ts'

describe('after-response settlement', () => {
  let stack: Stack
  let api: { url: string; close(): Promise<void> }
  let plain: { url: string; close(): Promise<void> }
  const served: Record<string, number> = {}

  async function start(facilitator: PaywallConfig['facilitator']) {
    const offer = { network: stack.network, asset: stack.asset }
    const app = new Hono()
    app.use(
      paywall({
        facilitator,
        payTo: stack.payTo,
        routes: {
          'GET /quote': { ...offer, price: '$0.001', settlement: 'after-response', maxUnsettled: '$0.002' },
          'GET /broken': { ...offer, price: '$0.001', settlement: 'after-response' },
        },
      }),
    )
    app.get('/quote', (c) => {
      served.quote = (served.quote ?? 0) + 1
      return c.json({ symbol: 'ETH', price: 3_000 })
    })
    app.get('/broken', (c) => c.json({ error: 'down' }, 500))
    const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as Server
    if (!server.listening) await new Promise((resolve) => server.once('listening', resolve))
    const { port } = server.address() as AddressInfo
    return {
      url: `http://127.0.0.1:${port}`,
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve())
          server.closeAllConnections()
        }),
    }
  }

  beforeAll(async () => {
    stack = await startStack({ payers: 4, batcher: true })
    api = await start(stack.service.url)
    // A facilitator client that cannot queue: the same service, reached without `enqueue`.
    const { verify, settle, supported } = httpFacilitator(stack.service.url)
    plain = await start({ verify, settle, supported })
  }, 60_000)

  afterAll(async () => {
    await api?.close()
    await plain?.close()
    await stack?.stop()
  })

  const test = () => createTestClient({ mode: 'anvil', transport: http(stack.devnet.rpcUrl) })
  const receiptOf = (response: Response) =>
    Base64Json.decode(response.headers.get(HttpHeader.paymentResponse) ?? '', Facilitator.settleResponse)

  it('answers once the payment is queued, before any block, and settles it after', async () => {
    const payer = stack.payers[0]!
    const fetch = wrapFetch(globalThis.fetch, { account: privateKeyToAccount(payer.privateKey), budget })
    const [before] = await stack.balances([stack.payTo])
    await test().setAutomine(false)
    let response: Response
    try {
      response = await fetch(`${api.url}/quote`)
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual({ symbol: 'ETH', price: 3_000 })
      expect(receiptOf(response)).toMatchObject({ success: true, transaction: '', extensions: { settlement: { status: 'queued' } } })
      // Answered with no block mined: nothing has moved yet.
      expect(await stack.balances([stack.payTo])).toEqual([before])
    } finally {
      await test().setAutomine(true)
      await test().mine({ blocks: 1 })
    }
    await expect.poll(async () => (await stack.balances([stack.payTo]))[0], { timeout: 15_000 }).toBe(before! + 1_000n)
  }, 30_000)

  it('makes a payer at the cap of unsettled value wait for settlement, and no one else', async () => {
    const payer = stack.payers[1]!
    const fetch = wrapFetch(globalThis.fetch, { account: privateKeyToAccount(payer.privateKey), budget })
    const other = wrapFetch(globalThis.fetch, { account: privateKeyToAccount(stack.payers[2]!.privateKey), budget })
    const [before] = await stack.balances([stack.payTo])
    await test().setAutomine(false)
    let third: Promise<Response> | undefined
    try {
      // The cap is two payments' worth: two answer at once, the third waits for its block.
      for (const _ of [1, 2]) expect((await fetch(`${api.url}/quote`)).status).toBe(200)
      let answered = false
      third = fetch(`${api.url}/quote`).then((response) => {
        answered = true
        return response
      })
      expect((await other(`${api.url}/quote`)).status).toBe(200)
      await new Promise((resolve) => setTimeout(resolve, 1_000))
      expect(answered).toBe(false)
    } finally {
      await test().setAutomine(true)
      await test().mine({ blocks: 1 })
    }
    const response = await third!
    expect(response.status).toBe(200)
    expect(receiptOf(response)).toMatchObject({ success: true, transaction: expect.stringMatching(/^0x[0-9a-f]{64}$/) })
    await expect.poll(async () => (await stack.balances([stack.payTo]))[0], { timeout: 15_000 }).toBe(before! + 4_000n)
  }, 40_000)

  it('queues nothing for a handler that fails', async () => {
    const payer = stack.payers[3]!
    const fetch = wrapFetch(globalThis.fetch, { account: privateKeyToAccount(payer.privateKey), budget })
    const before = await stack.balances([payer.address, stack.payTo])
    const response = await fetch(`${api.url}/broken`)
    expect(response.status).toBe(500)
    await new Promise((resolve) => setTimeout(resolve, 1_500))
    expect(await stack.balances([payer.address, stack.payTo])).toEqual(before)
  }, 20_000)

  it('serves a replayed payment header once', async () => {
    const payer = stack.payers[3]!
    const header = await paymentHeader(payer.privateKey, `${api.url}/quote`)
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => globalThis.fetch(`${api.url}/quote`, { headers: { [HttpHeader.paymentSignature]: header } })),
    )
    expect(answers.map((answer) => answer.status).sort()).toEqual([200, 402, 402, 402, 402])
  }, 20_000)

  it('settles before the response with a facilitator that cannot queue', async () => {
    const fetch = wrapFetch(globalThis.fetch, { account: privateKeyToAccount(stack.payers[2]!.privateKey), budget })
    const response = await fetch(`${plain.url}/quote`)
    expect(response.status).toBe(200)
    expect(receiptOf(response)).toMatchObject({ success: true, transaction: expect.stringMatching(/^0x[0-9a-f]{64}$/) })
  }, 20_000)
})

/** A payment header for `url`, signed by `key`, taken from the request our client would send. */
async function paymentHeader(key: `0x${string}`, url: string): Promise<string> {
  let header: string | undefined
  const capture = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = new Request(input, init)
    const sent = request.headers.get(HttpHeader.paymentSignature)
    if (sent) {
      header = sent
      return new Response(null, { status: 204 })
    }
    return globalThis.fetch(request)
  }) as typeof globalThis.fetch
  await wrapFetch(capture, { account: privateKeyToAccount(key), budget })(url)
  return header!
}
