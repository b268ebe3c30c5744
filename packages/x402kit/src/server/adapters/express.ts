/**
 * The paywall as Express 5 middleware. The handler's answer is captured (status, headers, body)
 * instead of written, so that it reaches the socket only once the payment has settled.
 */
import type { ServerResponse } from 'node:http'
import type { RequestHandler } from 'express'
import { createPaywall, type PaywallConfig } from '../paywall.ts'
import { inheritHeaders } from './headers.ts'
import { toHeaders, toRequest, writeResponse } from './node.ts'

/**
 * Express middleware that protects the configured routes.
 *
 * @example
 * ```ts
 * import express from 'express'
 * import { paywall } from 'x402kit/express'
 * const app = express()
 * app.use(paywall({ facilitator: 'http://localhost:4020', payTo, network: 'eip155:8453', routes: { 'GET /weather': { price: '$0.001' } } }))
 * app.get('/weather', (req, res) => res.json({ weather: 'sunny' }))
 * ```
 */
export function paywall(config: PaywallConfig): RequestHandler {
  const core = createPaywall(config)
  return async (req, res, next) => {
    // Within a mounted router `req.url` is relative; the routes name full paths.
    const path = req.baseUrl + req.url
    const request = toRequest(req, path)
    if (!core.covers(request, { path })) return next()
    const outer = toHeaders(res.getHeaders())
    let release = () => {}
    let response: Response
    try {
      response = await core.handle(
        request,
        () => {
          const captured = capture(res, () => next())
          release = captured.release
          return captured.response
        },
        { path },
      )
    } finally {
      release()
    }
    await writeResponse(res, inheritHeaders(response, outer))
  }
}

type Write = (chunk?: unknown, encoding?: unknown, callback?: unknown) => unknown

/**
 * Runs the rest of the chain with `res` writing into a `Response` instead of the socket, until
 * `release`. Writes after the handler's `end` are dropped, as Node would refuse them.
 */
function capture(res: ServerResponse, next: () => void): { response: Promise<Response>; release(): void } {
  const original = { writeHead: res.writeHead, write: res.write, end: res.end, flushHeaders: res.flushHeaders }
  const chunks: Buffer[] = []
  let ended = false
  const keep = (chunk: unknown, encoding: unknown) => {
    if (ended) return
    if (typeof chunk === 'string') chunks.push(Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8'))
    else if (chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk))
  }
  const done = (...callbacks: unknown[]) => (callbacks.find((callback) => typeof callback === 'function') as (() => void) | undefined)?.()
  const response = new Promise<Response>((resolve, reject) => {
    res.writeHead = ((status: number, ...rest: unknown[]) => {
      if (ended) return res
      res.statusCode = status
      if (typeof rest[0] === 'string') res.statusMessage = rest.shift() as string
      const headers = rest[0]
      if (Array.isArray(headers)) for (let i = 0; i + 1 < headers.length; i += 2) res.setHeader(headers[i], headers[i + 1])
      else if (headers) for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value as string)
      return res
    }) as ServerResponse['writeHead']
    res.write = ((chunk, encoding, callback) => {
      keep(chunk, encoding)
      done(chunk, encoding, callback)
      return true
    }) as Write as ServerResponse['write']
    res.end = ((chunk, encoding, callback) => {
      keep(chunk, encoding)
      if (!ended) {
        ended = true
        const body = Buffer.concat(chunks)
        const empty = body.length === 0 || [204, 205, 304].includes(res.statusCode)
        const init = { status: res.statusCode, statusText: res.statusMessage || undefined, headers: toHeaders(res.getHeaders()) }
        resolve(new Response(empty ? null : new Uint8Array(body), init))
      }
      done(chunk, encoding, callback)
      return res
    }) as Write as ServerResponse['end']
    res.flushHeaders = () => {}
    res.once('close', () => reject(new Error('The connection closed before the handler answered.')))
    next()
  })
  return { response, release: () => Object.assign(res, original) }
}
