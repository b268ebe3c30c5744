/**
 * A remote facilitator over its HTTP API (x402 v2 §7; PROTOCOL.md "Facilitator HTTP API"), as a
 * `FacilitatorClient`. Every call has a deadline that covers the body too, every answer is read with a
 * size limit and checked against its schema, and any failure to get a usable answer is thrown as a
 * `FacilitatorUnavailableError`, never mistaken for a payment verdict.
 */
import type { z } from 'zod'
import { readBody } from '../core/Body.ts'
import { BaseError, Reason } from '../core/Errors.ts'
import {
  type FacilitatorClient,
  type Payment,
  type SettleResponse,
  type SupportedResponse,
  settleResponse,
  supportedResponse,
  type VerifyResponse,
  verifyResponse,
} from '../core/Facilitator.ts'

export type HttpFacilitatorOptions = {
  /** Deadline of each call, body included. Default 10 s. */
  timeoutMs?: number
  /** Sent with every call, e.g. an `authorization`; a function is asked per call (`path` is `verify`, `settle` or `supported`). */
  headers?: Record<string, string> | ((path: 'verify' | 'settle' | 'supported') => Record<string, string> | Promise<Record<string, string>>)
  fetch?: typeof globalThis.fetch
  /** Largest answer read. Default 1 MiB. */
  maxResponseBytes?: number
}

/** The facilitator could not be reached or gave no usable answer. The payment itself may be fine. */
export class FacilitatorUnavailableError extends BaseError {
  override name = 'FacilitatorUnavailableError'
  constructor(url: string, what: string, options: { details?: string; cause?: unknown } = {}) {
    super(`The facilitator at ${url} ${what}.`, {
      ...options,
      code: Reason.facilitatorUnavailable,
      hint: 'Check that the facilitator is running and reachable; the payment can be retried once it answers.',
    })
  }
}

/**
 * The facilitator at `url`, reached over HTTP.
 *
 * @example
 * ```ts
 * import { httpFacilitator } from 'x402kit/facilitator'
 * const facilitator = httpFacilitator('http://localhost:4020', { timeoutMs: 5_000 })
 * const { isValid, invalidReason } = await facilitator.verify({ payload, requirements })
 * ```
 */
export function httpFacilitator(url: string | URL, options: HttpFacilitatorOptions = {}): Required<FacilitatorClient> {
  const base = String(url).replace(/\/+$/, '')
  if (!URL.canParse(base) || !/^https?:$/.test(new URL(base).protocol))
    throw new BaseError(`"${base.slice(0, 200)}" is not an http(s) URL.`, {
      code: 'invalid_config',
      hint: 'Use e.g. http://localhost:4020.',
    })
  const timeoutMs = options.timeoutMs ?? 10_000
  const maxBytes = options.maxResponseBytes ?? 1024 * 1024
  const fetch = options.fetch ?? globalThis.fetch

  async function call<schema extends z.ZodType>(
    path: 'verify' | 'settle' | 'supported' | 'enqueue',
    schema: schema,
    payment?: Payment,
    extra?: Record<string, unknown>,
  ): Promise<z.output<schema>> {
    const endpoint = `${base}/${path}`
    const headers = typeof options.headers === 'function' ? await options.headers(path === 'enqueue' ? 'settle' : path) : options.headers
    const signal = AbortSignal.timeout(timeoutMs)
    let status: number
    let text: string
    try {
      const response = await fetch(endpoint, {
        method: payment ? 'POST' : 'GET',
        headers: { accept: 'application/json', ...(payment && { 'content-type': 'application/json' }), ...headers },
        ...(payment && {
          body: JSON.stringify({ x402Version: 2, paymentPayload: payment.payload, paymentRequirements: payment.requirements, ...extra }),
        }),
        signal,
      })
      status = response.status
      text = await readBody(response.body, maxBytes, response.headers.get('content-length'))
    } catch (cause) {
      if (signal.aborted) throw new FacilitatorUnavailableError(base, `did not answer ${path} within ${timeoutMs} ms`, { cause })
      if (cause instanceof BaseError)
        throw new FacilitatorUnavailableError(base, `gave an unreadable ${path} answer`, { details: cause.shortMessage, cause })
      throw new FacilitatorUnavailableError(base, `could not be reached for ${path}`, { details: (cause as Error)?.message, cause })
    }

    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (cause) {
      throw new FacilitatorUnavailableError(base, `answered ${path} with status ${status} and a body that is not JSON`, {
        details: excerpt(text),
        cause,
      })
    }
    // Only x402kit facilitators queue payments; any other answers 404 (or 405) to the path.
    if (path === 'enqueue' && (status === 404 || status === 405))
      throw new BaseError(`The facilitator at ${base} does not queue payments (POST /enqueue answered ${status}).`, {
        code: 'enqueue_not_supported',
        hint: 'Settle before the response, or use an x402kit facilitator.',
      })
    const parsed = schema.safeParse(json)
    const ok = status >= 200 && status < 300
    // Some facilitators answer an invalid payment with a 4xx carrying the verdict: it is still a verdict.
    if (parsed.success && (ok || payment)) return parsed.data
    if (ok) {
      const issue = parsed.error?.issues[0]
      throw new FacilitatorUnavailableError(base, `answered ${path} with a body that does not match the schema`, {
        details: `${issue?.path.join('.') || 'body'}: ${issue?.message}. Body: ${excerpt(text)}`,
      })
    }
    throw new FacilitatorUnavailableError(base, `answered ${path} with status ${status}`, { details: problemDetail(json) ?? excerpt(text) })
  }

  return {
    verify: (payment): Promise<VerifyResponse> => call('verify', verifyResponse, payment),
    settle: (payment): Promise<SettleResponse> => call('settle', settleResponse, payment),
    supported: (): Promise<SupportedResponse> => call('supported', supportedResponse),
    enqueue: (payment, enqueueOptions): Promise<SettleResponse> =>
      call(
        'enqueue',
        settleResponse,
        payment,
        enqueueOptions?.maxUnsettled === undefined ? {} : { maxUnsettled: enqueueOptions.maxUnsettled },
      ),
  }
}

function problemDetail(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined
  const { code, detail, error } = json as Record<string, unknown>
  const text = [code, detail ?? error].filter((part) => typeof part === 'string').join(': ')
  return text ? text.slice(0, 500) : undefined
}

function excerpt(text: string): string {
  const compact = text.trim().replace(/\s+/g, ' ')
  if (!compact) return '<empty>'
  return compact.length > 200 ? `${compact.slice(0, 197)}...` : compact
}
