/**
 * Asking for payment (x402 v2 §5.2; HTTP transport: `PAYMENT-REQUIRED` header in version 2, the JSON
 * body in version 1): a route's offers for one request, and the 402 that carries them. Also the
 * paywall's other JSON answers, as RFC 9457 problem details.
 */
import { BaseError } from '../core/Errors.ts'
import { HttpHeader } from '../core/HttpHeader.ts'
import type { Price } from '../core/Money.ts'
import * as PaymentRequired from '../core/PaymentRequired.ts'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import type { Route } from './routes.ts'

/** The offers of a route for one request: fixed prices as compiled, dynamic ones asked now. */
export async function offersFor(route: Route, request: Request): Promise<PaymentRequirements[]> {
  return Promise.all(
    route.offers.map(async (offer) => {
      if (offer.fixed) return offer.fixed
      let price: Price
      try {
        price = await (offer.price as (request: Request) => Price | Promise<Price>)(request)
        return offer.scheme.requirements({ ...offer.input, price })
      } catch (cause) {
        throw new BaseError(`The price function of route "${route.key}" failed.`, {
          code: 'invalid_price',
          cause,
          details: cause instanceof BaseError ? cause.shortMessage : String(cause),
          hint: "Return a price such as '$0.001' or { atomic: '1000' }.",
        })
      }
    }),
  )
}

/**
 * A 402: the version 2 `PaymentRequired` in its header and the version 1 form as the JSON body, so
 * that clients of either version can pay. `error` is a stable code; `message` says more, in the body.
 */
export function paymentRequired(input: {
  resource: PaymentRequired.ResourceInfo
  offers: PaymentRequirements[]
  error: string
  message?: string | null
  headers?: Record<string, string>
}): Response {
  const required: PaymentRequired.PaymentRequired = { x402Version: 2, error: input.error, resource: input.resource, accepts: input.offers }
  const message = input.message ? input.message.slice(0, 500) : undefined
  const exposed = [HttpHeader.paymentRequired, ...Object.keys(input.headers ?? {})].join(', ')
  return new Response(json({ ...PaymentRequired.toV1(required), ...(message && { errorMessage: message }) }), {
    status: 402,
    headers: {
      ...input.headers,
      [HttpHeader.paymentRequired]: PaymentRequired.encode(required),
      'access-control-expose-headers': exposed,
      'cache-control': 'no-store',
      'content-type': 'application/json',
      'x-content-type-options': 'nosniff',
    },
  })
}

const titles: Record<number, string> = { 400: 'Bad Request', 503: 'Service Unavailable' }

/** An RFC 9457 problem details answer; `code` names the problem. */
export function problem(status: 400 | 503, code: string, detail: string): Response {
  return new Response(json({ type: 'about:blank', title: titles[status], status, detail, code }), {
    status,
    headers: { 'cache-control': 'no-store', 'content-type': 'application/problem+json', 'x-content-type-options': 'nosniff' },
  })
}

/**
 * JSON with `<`, `>`, `&` and the JavaScript line separators escaped: what the paywall echoes (a
 * facilitator's reason, a path) stays inert even if a page embeds the body later (DESIGN §7 invariant 6).
 */
export function json(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`)
}
