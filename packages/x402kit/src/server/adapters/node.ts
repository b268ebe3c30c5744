/**
 * The Node bridge Express and Fastify share: an `IncomingMessage` as a Web `Request`, Node header
 * objects as `Headers` and back, and a Web `Response` written to a `ServerResponse`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'

const hostPattern = /^(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i

/**
 * The request as a Web `Request`. `path` is the target the framework routes on (default `req.url`).
 * The body is attached only when there is one, and read from the socket only if someone reads it,
 * so the framework's body parser still gets it.
 */
export function toRequest(req: IncomingMessage, path = req.url ?? '/'): Request {
  // A Host header that is not a host could otherwise move the path (`Host: a/free?`).
  const host = hostPattern.test(req.headers.host ?? '') ? req.headers.host : 'localhost'
  const origin = `${'encrypted' in req.socket && req.socket.encrypted ? 'https' : 'http'}://${host}`
  // Concatenated, not resolved against the origin: `//weather` stays a path instead of becoming a host.
  const url = path.startsWith('/')
    ? origin + path
    : URL.canParse(path)
      ? origin + new URL(path).pathname + new URL(path).search
      : `${origin}/`
  // The Fetch API refuses CONNECT, TRACE and TRACK; priced as GET, such a request is over-covered, never under.
  const method = !req.method || /^(CONNECT|TRACE|TRACK)$/i.test(req.method) ? 'GET' : req.method
  const length = req.headers['content-length']
  const hasBody =
    method !== 'GET' && method !== 'HEAD' && (req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0'))
  return new Request(url, { method, headers: toHeaders(req.headers), ...(hasBody && { body: lazyBody(req), duplex: 'half' }) })
}

function lazyBody(req: IncomingMessage): ReadableStream<Uint8Array> {
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        reader ??= (Readable.toWeb(req) as ReadableStream<Uint8Array>).getReader()
        const { done, value } = await reader.read()
        if (done) controller.close()
        else controller.enqueue(value)
      },
      cancel: (reason) => reader?.cancel(reason),
    },
    // No read ahead: the socket is not touched until the body is asked for.
    { highWaterMark: 0 },
  )
}

/** Node headers (incoming or outgoing) as `Headers`; HTTP/2 pseudo-headers are left out. */
export function toHeaders(headers: Record<string, string | number | readonly string[] | undefined>): Headers {
  const result = new Headers()
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(':') || value === undefined) continue
    for (const item of Array.isArray(value) ? value : [value]) result.append(name, String(item))
  }
  return result
}

/** `Headers` as a Node header object, with every `set-cookie` kept. */
export function toNodeHeaders(headers: Headers): Record<string, string | string[]> {
  const result: Record<string, string | string[]> = Object.fromEntries([...headers].filter(([name]) => name !== 'set-cookie'))
  const cookies = headers.getSetCookie()
  if (cookies.length > 0) result['set-cookie'] = cookies
  return result
}

/** Writes a Web `Response` as the whole answer, replacing any header set on `res` before. */
export async function writeResponse(res: ServerResponse, response: Response): Promise<void> {
  const body = new Uint8Array(await response.arrayBuffer())
  for (const name of res.getHeaderNames()) res.removeHeader(name)
  res.statusCode = response.status
  if (response.statusText) res.statusMessage = response.statusText
  for (const [name, value] of Object.entries(toNodeHeaders(response.headers))) res.setHeader(name, value)
  res.end(body)
}
