/**
 * The paywall as a Fastify plugin: `onRequest` asks for and verifies the payment, `onSend` hands the
 * handler's answer to the paywall and replaces it when settlement fails.
 */
import type { Readable } from 'node:stream'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { createPaywall, type PaywallConfig } from '../paywall.ts'
import { inheritHeaders } from './headers.ts'
import { toHeaders, toNodeHeaders, toRequest } from './node.ts'

type Pending = { outer: Headers; result: Promise<Response>; deliver: (response: Response) => void }

/**
 * A Fastify plugin that protects the configured routes of the whole app.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import { paywall } from 'x402kit/fastify'
 * const app = Fastify()
 * await app.register(paywall({ facilitator: 'http://localhost:4020', payTo, network: 'eip155:8453', routes: { 'GET /weather': { price: '$0.001' } } }))
 * app.get('/weather', async () => ({ weather: 'sunny' }))
 * ```
 */
export function paywall(config: PaywallConfig): FastifyPluginAsync {
  const core = createPaywall(config)
  const pending = new WeakMap<FastifyRequest, Pending>()

  const plugin: FastifyPluginAsync = async (fastify) => {
    fastify.addHook('onRequest', async (request, reply) => {
      const path = request.url
      const web = toRequest(request.raw, path)
      if (!core.covers(web, { path })) return
      const state = { outer: toHeaders(reply.getHeaders()) } as Pending
      let reached!: (value: undefined) => void
      const handlerReached = new Promise<undefined>((resolve) => (reached = resolve))
      const next = () => {
        reached(undefined)
        return new Promise<Response>((resolve) => (state.deliver = resolve))
      }
      state.result = core.handle(web, next, { path })
      // Either the paywall answers now (402, 503) or it lets the request through to the handler.
      const early = await Promise.race([state.result, handlerReached])
      if (early) return send(reply, inheritHeaders(early, state.outer))
      pending.set(request, state)
    })

    fastify.addHook('onSend', async (request, reply, payload) => {
      const state = pending.get(request)
      if (!state) return payload
      pending.delete(request)
      const body = await bytes(payload)
      const empty = body.length === 0 || [204, 205, 304].includes(reply.statusCode)
      const handed = new Response(empty ? null : body, { status: reply.statusCode, headers: toHeaders(reply.getHeaders()) })
      state.deliver(handed)
      const response = await state.result
      if (response === handed) return Buffer.from(body)
      const final = inheritHeaders(response, state.outer)
      for (const name of Object.keys(reply.getHeaders())) reply.removeHeader(name)
      reply.code(final.status).headers(toNodeHeaders(final.headers))
      return Buffer.from(await final.arrayBuffer())
    })
  }
  // Like fastify-plugin: the hooks apply to the whole app, not only to routes registered inside the plugin.
  return Object.assign(plugin, { [Symbol.for('skip-override')]: true, [Symbol.for('fastify.display-name')]: 'x402kit-paywall' })
}

async function send(reply: FastifyReply, response: Response): Promise<FastifyReply> {
  const body = Buffer.from(await response.arrayBuffer())
  return reply.code(response.status).headers(toNodeHeaders(response.headers)).send(body)
}

async function bytes(payload: unknown): Promise<Uint8Array<ArrayBuffer>> {
  if (payload == null) return new Uint8Array()
  if (typeof payload === 'string') return new TextEncoder().encode(payload)
  if (payload instanceof Uint8Array) return new Uint8Array(payload)
  const chunks: Buffer[] = []
  for await (const chunk of payload as Readable) chunks.push(Buffer.from(chunk))
  return new Uint8Array(Buffer.concat(chunks))
}
