/**
 * Body: reading an HTTP body from outside with a byte cap, so no peer can make us hold more than we
 * asked for. Shared by every role that reads one (requests, facilitator answers, 402 bodies, key sets).
 */
import { BaseError } from './Errors.ts'

export class BodyTooLargeError extends BaseError {
  override name = 'BodyTooLargeError'
  constructor(maxBytes: number, length?: number) {
    super(
      length === undefined ? `The body exceeds the limit of ${maxBytes} bytes.` : `The body is ${length} bytes; the limit is ${maxBytes}.`,
      {
        code: 'body_too_large',
      },
    )
  }
}

export class BodyEncodingError extends BaseError {
  override name = 'BodyEncodingError'
  constructor(cause: unknown) {
    super('The body is not UTF-8 text.', { code: 'invalid_json', cause })
  }
}

/**
 * Reads a body as UTF-8 text, never holding more than `maxBytes` of it: a declared `Content-Length`
 * over the limit is refused before reading, and the stream is cancelled as soon as it passes the limit
 * (a sender may omit or understate the length).
 */
export async function readBody(body: ReadableStream<Uint8Array> | null, maxBytes: number, contentLength?: string | null): Promise<string> {
  const declared = contentLength ? Number(contentLength) : Number.NaN
  if (Number.isFinite(declared) && declared > maxBytes) {
    // Not awaited: cancelling one branch of a tee (a cloned response) settles only once the other is done too.
    body?.cancel().catch(() => {})
    throw new BodyTooLargeError(maxBytes, declared)
  }
  if (!body) return ''
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let total = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    total += value.byteLength
    if (total > maxBytes) {
      reader.cancel().catch(() => {})
      throw new BodyTooLargeError(maxBytes)
    }
    chunks.push(value)
  }
  const bytes = new Uint8Array(total)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.byteLength
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch (cause) {
    throw new BodyEncodingError(cause)
  }
}
