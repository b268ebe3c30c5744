import { request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import express from 'express'
import Fastify from 'fastify'
import { Hono } from 'hono'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import * as Base64Json from '../../core/Base64Json.ts'
import { settleResponse } from '../../core/Facilitator.ts'
import { fakeFacilitator, network, offersOf, type Payer, payer, payTo, requiredOf } from '../internal/fakeFacilitator.ts'
import type { PaywallConfig } from '../paywall.ts'
import { paywall as expressPaywall } from './express.ts'
import { paywall as fastifyPaywall } from './fastify.ts'
import { paywall as honoPaywall } from './hono.ts'

const facilitator = fakeFacilitator()
const config: PaywallConfig = {
  facilitator,
  payTo,
  network,
  routes: {
    'GET /weather': { price: '$0.001' },
    'GET /teapot': { price: '$0.001' },
    'POST /echo': { price: '$0.002' },
    'GET /files/*': { price: '$0.003' },
    'GET /stream': { price: '$0.001' },
    'GET /boom': { price: '$0.001' },
    'GET /late': { price: '$0.001' },
  },
  timeoutMs: { verify: 100 },
  onError: () => {},
}
const weather = { weather: 'sunny', secret: 's3cret' }
// Set in front of the paywall, as a CORS middleware would; a 402 keeps these, unlike the handler's headers.
const front = { 'access-control-allow-origin': '*', 'access-control-expose-headers': 'X-Front' }
// Requests that got past the paywall.
let served = 0
let buyer: Payer

type Send = (method: string, path: string, headers?: Record<string, string>, body?: string) => Promise<Response>
type Adapter = { name: string; start(): Promise<{ send: Send; stop(): Promise<void> }> }

const adapters: Adapter[] = [
  {
    name: 'hono',
    async start() {
      const app = new Hono()
      app.onError((_error, c) => c.text('Internal Server Error', 500))
      app.use(async (c, next) => {
        for (const [name, value] of Object.entries(front)) c.header(name, value)
        await next()
      })
      app.use(honoPaywall(config))
      app.use(async (_c, next) => {
        served++
        await next()
      })
      app.get('/weather', (c) => c.json(weather, 200, { 'x-handler': 'yes' }))
      app.get('/teapot', (c) => c.text('short and stout', 418))
      app.post('/echo', async (c) => c.json(await c.req.json()))
      app.get('/files/*', (c) => c.text('file'))
      app.get('/stream', (c) => c.body(new Blob(['a', 'b', 'c']).stream()))
      app.get('/boom', () => {
        throw new Error('boom')
      })
      app.get('/late', (c) => c.text('PAID-CONTENT'))
      app.get('/free', (c) => c.text('free'))
      const send: Send = async (method, path, headers = {}, body) => app.request(path, { method, headers, body })
      return { send, stop: async () => {} }
    },
  },
  {
    name: 'express',
    async start() {
      const app = express()
      app.use((_req, res, next) => {
        for (const [name, value] of Object.entries(front)) res.setHeader(name, value)
        next()
      })
      app.use(expressPaywall(config))
      app.use((_req, _res, next) => {
        served++
        next()
      })
      app.use(express.json())
      app.get('/weather', (_req, res) => void res.set('x-handler', 'yes').json(weather))
      app.get('/teapot', (_req, res) => void res.status(418).send('short and stout'))
      app.post('/echo', (req, res) => void res.json(req.body))
      app.get('/files/*path', (_req, res) => void res.send('file'))
      app.get('/stream', (_req, res) => {
        res.writeHead(200, 'Fine', { 'content-type': 'text/plain' })
        res.write('a')
        res.write(Buffer.from('b'), () => {})
        res.end('c')
      })
      app.get('/boom', () => {
        throw new Error('boom')
      })
      app.get('/late', (_req, res) => {
        res.end('PAID-CONTENT')
        // A buggy handler writing after its end must not reach the socket before settlement.
        setTimeout(() => res.write(' LEAKED'), 5)
      })
      app.get('/free', (_req, res) => void res.send('free'))
      return listen(app.listen(0))
    },
  },
  {
    name: 'fastify',
    async start() {
      const app = Fastify()
      app.addHook('onRequest', async (_request, reply) => void reply.headers(front))
      await app.register(fastifyPaywall(config))
      app.addHook('preHandler', async () => void served++)
      app.get('/weather', async (_request, reply) => reply.header('x-handler', 'yes').send(weather))
      app.get('/teapot', async (_request, reply) => reply.code(418).send('short and stout'))
      app.post('/echo', async (request) => request.body)
      app.get('/files/*', async () => 'file')
      app.get('/stream', async (_request, reply) => reply.type('text/plain').send(Readable.from(['a', 'b', 'c'])))
      app.get('/boom', async () => {
        throw new Error('boom')
      })
      app.get('/late', async () => 'PAID-CONTENT')
      app.get('/free', async () => 'free')
      await app.listen({ port: 0, host: '127.0.0.1' })
      const { send } = await listen(app.server, false)
      return { send, stop: () => app.close() }
    },
  },
]

beforeAll(async () => {
  buyer = await payer()
})

beforeEach(() => {
  facilitator.reset()
  served = 0
})

describe.each(adapters)('$name adapter', (adapter) => {
  let send: Send
  let stop: () => Promise<void>
  beforeAll(async () => ({ send, stop } = await adapter.start()))
  afterAll(() => stop())

  const pay = async (method: string, path: string, headers: Record<string, string> = {}, body?: string) =>
    send(method, path, { ...headers, 'PAYMENT-SIGNATURE': await buyer.answer(await send(method, path, {}, body)) }, body)

  it('answers an unpaid request 402, keeping the headers set in front', async () => {
    const response = await send('GET', '/weather')
    expect(response.status).toBe(402)
    expect(offersOf(response)).toMatchObject([{ amount: '1000', network, payTo }])
    expect(await response.json()).toMatchObject({ x402Version: 1, error: 'payment_required', accepts: [{ network: 'base-sepolia' }] })
    expect(response.headers.get('access-control-allow-origin')).toBe('*')
    expect(response.headers.get('access-control-expose-headers')).toBe('PAYMENT-REQUIRED, X-Front')
    expect(served).toBe(0)
  })

  it('serves a paid request with PAYMENT-RESPONSE', async () => {
    const response = await pay('GET', '/weather')
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual(weather)
    expect(response.headers.get('x-handler')).toBe('yes')
    expect(Base64Json.decode(response.headers.get('PAYMENT-RESPONSE') ?? '', settleResponse)).toMatchObject({
      success: true,
      payer: buyer.address,
    })
    expect(response.headers.get('access-control-expose-headers')).toMatch(/PAYMENT-RESPONSE/)
    expect(facilitator.calls.settle).toHaveLength(1)
    expect(served).toBe(1)
  })

  it('answers version 1 X-PAYMENT with X-PAYMENT-RESPONSE', async () => {
    const [offer] = offersOf(await send('GET', '/weather'))
    const response = await send('GET', '/weather', { 'X-PAYMENT': await buyer.payV1(offer!) })
    expect(response.status).toBe(200)
    expect(response.headers.get('X-PAYMENT-RESPONSE')).not.toBeNull()
    expect(response.headers.get('PAYMENT-RESPONSE')).toBeNull()
  })

  it('leaves the request body to the framework’s parser', async () => {
    const response = await pay('POST', '/echo', { 'content-type': 'application/json' }, '{"question":42}')
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ question: 42 })
  })

  it('does not charge for a handler’s 4xx', async () => {
    const response = await pay('GET', '/teapot')
    expect(response.status).toBe(418)
    expect(await response.text()).toBe('short and stout')
    expect(response.headers.get('PAYMENT-RESPONSE')).toBeNull()
    expect(facilitator.calls.verify).toHaveLength(1)
    expect(facilitator.calls.settle).toHaveLength(0)
  })

  it('withholds the answer, body and headers, when settlement fails', async () => {
    facilitator.onSettle = async () => ({ success: false, errorReason: 'invalid_exact_evm_nonce_already_used', transaction: '', network })
    const response = await pay('GET', '/weather')
    expect(response.status).toBe(402)
    expect(requiredOf(response)?.error).toBe('invalid_exact_evm_nonce_already_used')
    expect(await response.text()).not.toContain('s3cret')
    expect(response.headers.get('x-handler')).toBeNull()
    expect(response.headers.get('access-control-allow-origin')).toBe('*')
    expect(served).toBe(1)
  })

  it('holds a streamed answer until settled, and withholds it when settlement fails', async () => {
    const response = await pay('GET', '/stream')
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('abc')
    expect(response.headers.get('PAYMENT-RESPONSE')).not.toBeNull()
    facilitator.onSettle = async () => ({ success: false, errorReason: 'invalid_exact_evm_transaction_failed', transaction: '', network })
    const refused = await pay('GET', '/stream')
    expect(refused.status).toBe(402)
    expect(await refused.text()).not.toMatch(/abc/)
  })

  it('sends only what the handler answered by its end', async () => {
    facilitator.onSettle = async () => {
      await new Promise((resolve) => setTimeout(resolve, 20))
      return { success: false, errorReason: 'invalid_exact_evm_transaction_failed', transaction: '', network }
    }
    const refused = await pay('GET', '/late')
    expect(refused.status).toBe(402)
    expect(await refused.text()).not.toMatch(/PAID-CONTENT|LEAKED/)
    facilitator.reset()
    expect(await (await pay('GET', '/late')).text()).toBe('PAID-CONTENT')
  })

  it('does not charge for a handler that throws', async () => {
    const response = await pay('GET', '/boom')
    expect(response.status).toBe(500)
    expect(facilitator.calls.settle).toHaveLength(0)
    expect(served).toBe(1)
  })

  it('never runs the handler for an invalid payment', async () => {
    facilitator.onVerify = async () => ({ isValid: false, invalidReason: 'invalid_exact_evm_signature' })
    const response = await pay('GET', '/weather')
    expect(requiredOf(response)?.error).toBe('invalid_exact_evm_signature')
    expect(served).toBe(0)
  })

  it('answers 503 when the facilitator does not answer', async () => {
    facilitator.onVerify = () => new Promise(() => {})
    const response = await pay('GET', '/weather')
    expect(response.status).toBe(503)
    expect(await response.json()).toMatchObject({ code: 'facilitator_unavailable' })
    expect(served).toBe(0)
  })

  it.each([
    ['GET', '/WEATHER'],
    ['GET', '//weather'],
    ['GET', '/weather/'],
    ['GET', '/%77eather'],
    ['GET', '/weather%2F'],
    ['GET', '/x/../weather'],
    ['GET', '/weather;x=1'],
    ['HEAD', '/weather'],
  ])('asks for payment on the bypass attempt %s %s', async (method, path) => {
    const response = await send(method, path)
    expect(response.status).toBe(402)
    expect(served).toBe(0)
  })

  it('refuses a method override on a paid path', async () => {
    const response = await send('POST', '/weather', { 'X-HTTP-Method-Override': 'GET' })
    expect(response.status).toBe(400)
    expect(served).toBe(0)
  })

  it('leaves free paths alone', async () => {
    const response = await send('GET', '/free')
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('free')
    expect(response.headers.get('PAYMENT-REQUIRED')).toBeNull()
  })
})

describe.each(adapters.filter((adapter) => adapter.name !== 'hono'))('$name adapter on Node', (adapter) => {
  let send: Send
  let stop: () => Promise<void>
  beforeAll(async () => ({ send, stop } = await adapter.start()))
  afterAll(() => stop())

  it('does not let a Host header move the path', async () => {
    const response = await send('GET', '/weather', { host: 'example.com/free?' })
    expect(response.status).toBe(402)
    expect(requiredOf(response)?.resource.url).toBe('http://localhost/weather')
  })

  it('reads the raw target, where these routers do not resolve `..`', async () => {
    // WHATWG URL parsing makes this /free, but the router serves it from /files/*.
    const response = await send('GET', '/files/../free')
    expect(response.status).toBe(402)
    expect(offersOf(response)[0]?.amount).toBe('3000')
    expect(served).toBe(0)
  })
})

async function listen(server: Server, wait = true): Promise<{ send: Send; stop(): Promise<void> }> {
  if (wait && !server.listening) await new Promise((resolve) => server.once('listening', resolve))
  const { port } = server.address() as AddressInfo
  const send: Send = (method, path, headers = {}, body) =>
    new Promise((resolve, reject) => {
      // node:http sends the path as given, where fetch would resolve `..` and friends first.
      const request = httpRequest({ host: '127.0.0.1', port, method, path, headers }, (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.on('end', () => {
          const headers = new Headers()
          for (const [name, value] of Object.entries(response.headers)) for (const item of [value ?? []].flat()) headers.append(name, item)
          const status = response.statusCode ?? 500
          const empty = method === 'HEAD' || status === 204 || status === 304
          resolve(new Response(empty ? null : Buffer.concat(chunks), { status, headers }))
        })
      })
      request.on('error', reject)
      request.end(body)
    })
  return { send, stop: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}
