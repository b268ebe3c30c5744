/**
 * The paywall: the resource server's part of x402 (x402 v2 §3 flow; HTTP transport in
 * specs/transports-v2/http.md) on Web `Request`/`Response`. Framework adapters are thin glue over it.
 *
 * Per request: match the route on the normalised path, answer 402 with the offers, check the payment
 * header (size, then decoding, then against the offers), have the facilitator verify it, run the
 * handler, and settle before any of the handler's answer is released (or, on an `after-response`
 * route, queue the payment for settlement durably and release it then). A route that grants access
 * (`grants`) also takes the access credential a payment earned (`PAYMENT-CREDENTIAL`, checked offline
 * in `credentials.ts`), and hands on the one each payment earns.
 */
import * as Base64Json from '../core/Base64Json.ts'
import { BaseError, Reason } from '../core/Errors.ts'
import type { FacilitatorClient, Payment, SettleResponse } from '../core/Facilitator.ts'
import { HttpHeader } from '../core/HttpHeader.ts'
import * as PaymentPayload from '../core/PaymentPayload.ts'
import * as PaymentRequirements from '../core/PaymentRequirements.ts'
import type { LocalVerdict, SchemeServer } from '../core/Scheme.ts'
import { exactEvmServer } from '../evm/exact/server.ts'
import { type CredentialGate, type CredentialRequest, type CredentialsConfig, credentialGate } from './credentials.ts'
import { offersFor, paymentRequired, problem } from './requirements.ts'
import { compileRoutes, coversPath, findRoute, PaywallConfigError, type Route, type RoutesConfig, readTarget } from './routes.ts'

export type PaywallConfig = {
  /** A facilitator object (in-process or `httpFacilitator`), or the URL of one. */
  facilitator: FacilitatorClient | string
  /** Default recipient of every offer. */
  payTo?: string
  /** Default network of every offer, e.g. `'eip155:8453'` or `'base'`. */
  network?: string
  routes: RoutesConfig
  /** The schemes that turn prices into offers. Default `[exactEvmServer()]`. */
  schemes?: readonly SchemeServer[]
  /** Largest payment header read; a larger one is refused unparsed. Default 16 KiB. */
  maxPaymentHeaderBytes?: number
  /** Deadlines of facilitator calls, in milliseconds. Default verify 10 s, settle 60 s. */
  timeoutMs?: { verify?: number; settle?: number }
  /** Called after each settlement, before the paid answer is released. Errors it throws go to `onError`. */
  onSettled?: (info: SettledInfo) => void | Promise<void>
  /** Faults that do not reach the payer as such: a facilitator that fails, an `onSettled` that throws. Default: `console.error`. */
  onError?: (error: unknown, context: { operation: 'verify' | 'settle' | 'onSettled' | 'credential'; route: string }) => void
  /**
   * Take access credentials on routes that grant them (`grants`): this server's identity (`audience`)
   * and the issuers it trusts. Without it, no route may grant.
   */
  credentials?: CredentialsConfig
}

export type SettledInfo = {
  request: Request
  /** The route key, as declared. */
  route: string
  payment: Payment
  settlement: SettleResponse
  payer: string | undefined
}

export type HandleOptions = {
  /**
   * The request target as the framework routes it (`req.url` on Node), when that differs from
   * `request.url`, which WHATWG URL parsing has already normalised.
   */
  path?: string
}

export type Paywall = {
  /** Answers a request: passes it to `next` when no route covers it, else asks for or takes payment. */
  handle(request: Request, next: (request: Request) => Promise<Response>, options?: HandleOptions): Promise<Response>
  /** Whether `handle` would do anything but pass the request on; adapters skip their buffering when not. */
  covers(request: Request, options?: HandleOptions): boolean
}

export const defaults = {
  maxPaymentHeaderBytes: Base64Json.defaultMaxLength,
  verifyMs: 10_000,
  settleMs: 60_000,
  /** An after-response route's default cap on a payer's unsettled value: this many of its payments. */
  unsettledPayments: 100n,
} as const

const overrideHeaders = ['x-http-method-override', 'x-http-method', 'x-method-override']

/**
 * Creates a paywall on Web `Request`/`Response`. Use it through an adapter (`x402kit/hono`,
 * `x402kit/express`, `x402kit/fastify`), or directly in any server that speaks `fetch`.
 *
 * @example
 * ```ts
 * import { createPaywall } from 'x402kit/server'
 * const paywall = createPaywall({
 *   facilitator: 'http://localhost:4020',
 *   payTo: '0x209693Bc6afc0C5328bA36FaF03C514EF312287C',
 *   network: 'eip155:84532',
 *   routes: { 'GET /weather': { price: '$0.001', description: 'Current weather' } },
 * })
 * const response = await paywall.handle(request, (request) => app.fetch(request))
 * ```
 */
export function createPaywall(config: PaywallConfig): Paywall {
  const schemes = config.schemes ?? [exactEvmServer()]
  const routes = compileRoutes(config.routes, {
    payTo: config.payTo,
    network: config.network,
    schemes,
    audience: config.credentials?.audience,
  })
  const gate = config.credentials && credentialGate(config.credentials)
  const timeouts = { verify: config.timeoutMs?.verify ?? defaults.verifyMs, settle: config.timeoutMs?.settle ?? defaults.settleMs }
  // Given a URL, the HTTP client waits as long as the paywall does: a shorter wait would withhold
  // the content of a settlement that is still being mined.
  const facilitator = resolveFacilitator(config.facilitator, Math.max(timeouts.verify, timeouts.settle))
  const maxHeaderBytes = config.maxPaymentHeaderBytes ?? defaults.maxPaymentHeaderBytes
  if (!Number.isInteger(maxHeaderBytes) || maxHeaderBytes <= 0)
    throw new PaywallConfigError('maxPaymentHeaderBytes must be a positive integer.')
  const onError =
    config.onError ?? ((error, where) => console.error(`[x402kit paywall] ${where.operation} failed on ${where.route}`, error))

  type Classified = { route: Route; readings: string[] } | { refusal: Response } | undefined
  // Adapters ask `covers` and then `handle` of one request: the path is read and matched once.
  const classified = new WeakMap<Request, { path: string | undefined; result: Classified }>()

  function classify(request: Request, options: HandleOptions = {}): Classified {
    const seen = classified.get(request)
    if (seen && seen.path === options.path) return seen.result
    const result = classifyAfresh(request, options)
    // A refusal is a response, which can be sent once: it is made afresh each time.
    if (!(result && 'refusal' in result)) classified.set(request, { path: options.path, result })
    return result
  }

  function classifyAfresh(request: Request, options: HandleOptions): Classified {
    const url = new URL(request.url)
    const readings = readTarget(url, options.path)
    if (!readings) return { refusal: problem(400, Reason.invalidPath, 'The path is percent-encoded more than three times over.') }
    const route = findRoute(routes, request.method, readings)
    const override = overrideHeaders.some((name) => request.headers.has(name)) || url.searchParams.has('_method')
    // A method override could carry the request to another method's handler, so a paid path refuses it.
    if (override && (route || coversPath(routes, readings)))
      return {
        refusal: problem(400, Reason.methodOverrideRefused, 'This path is paid; send the method itself, without a method override.'),
      }
    return route && { route, readings }
  }

  async function call<result>(operation: 'verify' | 'settle', route: Route, run: () => Promise<result>): Promise<result | undefined> {
    const ms = timeouts[operation]
    let timer: ReturnType<typeof setTimeout> | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new BaseError(`The facilitator did not answer ${operation} within ${ms} ms.`, { code: Reason.facilitatorUnavailable })),
        ms,
      )
    })
    try {
      return await Promise.race([run(), deadline])
    } catch (error) {
      onError(error, { operation, route: route.key })
      return undefined
    } finally {
      clearTimeout(timer)
    }
  }

  // Set once the facilitator has said it does not queue payments: after-response routes then settle before.
  let queues = typeof facilitator.enqueue === 'function'

  /**
   * Queues a payment for settlement after the response; `undefined` when the response must wait for
   * settlement instead: the payer is at the cap of unsettled value, or the facilitator does not queue.
   */
  async function enqueue(payment: Payment, cap: bigint): Promise<SettleResponse | undefined> {
    if (!queues || !facilitator.enqueue) return undefined
    try {
      const queued = await facilitator.enqueue(payment, { maxUnsettled: cap.toString() })
      return queued.success !== true && queued.errorReason === Reason.unsettledCap ? undefined : queued
    } catch (error) {
      if (!(error instanceof BaseError && error.code === 'enqueue_not_supported')) throw error
      queues = false
      return undefined
    }
  }

  async function handle(request: Request, next: (request: Request) => Promise<Response>, options?: HandleOptions): Promise<Response> {
    const found = classify(request, options)
    if (!found) return next(request)
    if ('refusal' in found) return found.refusal
    const { route, readings } = found
    const offers = await offersFor(route, request)
    const resource = { url: request.url, description: route.description, mimeType: route.mimeType }
    const ask = (error: string, message?: string | null, headers?: Record<string, string>) =>
      paymentRequired({ resource, offers, error, message, headers })

    // PAYMENT-SIGNATURE is version 2's; X-PAYMENT is version 1's, though version 2 payloads arrive in it too.
    const name = request.headers.has(HttpHeader.paymentSignature) ? HttpHeader.paymentSignature : HttpHeader.xPayment
    const header = request.headers.get(name)
    const credentialRequest: CredentialRequest = { method: request.method, readings, grant: route.grant, offers }
    // A request that pays is paid: a credential is looked at only when no payment comes with it.
    const credential = gate && header === null ? request.headers.get(HttpHeader.paymentCredential) : null
    if (gate && credential !== null) return serveOnCredential(gate, credential, credentialRequest, request, next, ask)
    if (header === null) return ask(Reason.paymentRequired)
    if (header.length > maxHeaderBytes)
      return ask(Reason.paymentHeaderTooLarge, `The ${name} header is ${header.length} bytes; the limit is ${maxHeaderBytes}.`)
    let sent: PaymentPayload.AnyPaymentPayload
    try {
      sent = PaymentPayload.decode(header, { maxLength: maxHeaderBytes })
    } catch (error) {
      return ask(Reason.invalidPayload, error instanceof BaseError ? error.shortMessage : `The ${name} header could not be read.`)
    }
    const payload = PaymentPayload.toV2(sent, offers)
    const offer = payload && offers.find((candidate) => PaymentRequirements.matches(candidate, payload.accepted))
    if (!payload || !offer)
      return ask(Reason.offerMismatch, 'The payment is for an offer this route does not make; pay one of the offers in accepts.')
    // The server's own offer and resource are what the facilitator checks the payment against, never the
    // payer's copies: a proof signed for one resource (txproof) must not buy another.
    const payment: Payment = { payload: { ...payload, resource }, requirements: offer }

    // A scheme that judges its own payments (a channel's vouchers) verifies and settles them here, without a facilitator call.
    const local = schemes.find((scheme) => scheme.scheme === offer.scheme)
    const verdict = await call('verify', route, () => local?.verify?.(payment) ?? facilitator.verify(payment))
    if (!verdict) return unavailable('verify')
    if (verdict.isValid !== true) {
      const extra = local && (verdict as LocalVerdict).offerExtra
      const shown = extra
        ? offers.map((candidate) => (candidate === offer ? { ...candidate, extra: { ...candidate.extra, ...extra } } : candidate))
        : offers
      const error = reasonOf(verdict.invalidReason, Reason.unexpectedVerifyError)
      return paymentRequired({ resource, offers: shown, error, message: verdict.invalidMessage })
    }

    const answer = local && (verdict as LocalVerdict).answer
    let response: Response
    let body: ArrayBuffer
    try {
      response = answer ? Response.json(answer) : await next(request)
      if (response.status >= 400) {
        local?.release?.(payment)
        return response
      }
      // The whole answer is held until settlement succeeds (or, after-response, the payment is queued): nothing of it leaves unpaid.
      body = await response.arrayBuffer()
    } catch (error) {
      local?.release?.(payment)
      throw error
    }
    const cap = route.offers[offers.indexOf(offer)]?.maxUnsettled ?? BigInt(offer.amount) * defaults.unsettledPayments
    const settlement = await call(
      'settle',
      route,
      async () =>
        local?.settle?.(payment) ??
        (route.settlement === 'after-response'
          ? ((await enqueue(payment, cap)) ?? facilitator.settle(payment))
          : facilitator.settle(payment)),
    )
    if (!settlement) return unavailable('settle')
    const receiptName = name === HttpHeader.xPayment ? HttpHeader.xPaymentResponse : HttpHeader.paymentResponse
    const receipt = Base64Json.encode(settlement)
    if (settlement.success !== true)
      return ask(reasonOf(settlement.errorReason, Reason.unexpectedSettleError), settlement.errorMessage, { [receiptName]: receipt })

    const payer = settlement.payer ?? verdict.payer ?? undefined
    try {
      await config.onSettled?.({ request, route: route.key, payment, settlement, payer })
    } catch (error) {
      onError(error, { operation: 'onSettled', route: route.key })
    }
    const headers = new Headers(response.headers)
    headers.set(receiptName, receipt)
    const earned = gate && (await earnedCredential(gate, settlement, credentialRequest, route))
    if (earned) headers.set(HttpHeader.paymentCredential, earned)
    const exposed = [headers.get('access-control-expose-headers'), receiptName, earned && HttpHeader.paymentCredential]
    headers.set('access-control-expose-headers', exposed.filter(Boolean).join(', '))
    // A paid answer must not be served from a shared cache to the next, unpaying, client.
    headers.set('cache-control', privateCacheControl(headers.get('cache-control')))
    return new Response(body.byteLength > 0 ? new Uint8Array(body) : null, {
      status: response.status,
      statusText: response.statusText,
      headers,
    })
  }

  /** The credential path: no facilitator, no chain; a use counted is given back when the handler fails. */
  async function serveOnCredential(
    gate: CredentialGate,
    token: string,
    context: CredentialRequest,
    request: Request,
    next: (request: Request) => Promise<Response>,
    ask: (error: string, message?: string | null) => Response,
  ): Promise<Response> {
    const admission = await gate.admit(token, context)
    if (!admission.ok) return ask(admission.reason, admission.message)
    let response: Response
    try {
      response = await next(request)
    } catch (error) {
      await admission.release()
      throw error
    }
    if (response.status >= 400) {
      await admission.release()
      return response
    }
    const headers = new Headers(response.headers)
    headers.set('cache-control', privateCacheControl(headers.get('cache-control')))
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers })
  }

  /** The credential a settlement earned, when this paywall would take it on this route; a faulty one is reported, not handed on. */
  async function earnedCredential(gate: CredentialGate, settlement: SettleResponse, context: CredentialRequest, route: Route) {
    const token = (settlement.extensions?.credential as { token?: unknown } | undefined)?.token
    if (!route.grant || typeof token !== 'string') return undefined
    const admission = await gate.admit(token, context, { consume: false })
    if (admission.ok) return token
    const error = new BaseError(`The facilitator issued a credential this paywall refuses: ${admission.reason}.`, {
      code: admission.reason,
      details: admission.message,
      hint: 'Check that the paywall trusts the facilitator as an issuer (credentials.trust) and that its audience matches.',
    })
    onError(error, { operation: 'credential', route: route.key })
    return undefined
  }

  return { handle, covers: (request, options) => classify(request, options) !== undefined }
}

function unavailable(operation: 'verify' | 'settle'): Response {
  const detail =
    operation === 'verify'
      ? 'The payment facilitator could not be reached to verify the payment; nothing was charged. Try again shortly.'
      : 'The payment facilitator could not confirm settlement, so the answer is withheld. Try again shortly.'
  return problem(503, Reason.facilitatorUnavailable, detail)
}

/** A facilitator's reason, when it is a code; anything else is not echoed. */
function reasonOf(reason: string | null | undefined, fallback: string): string {
  return typeof reason === 'string' && /^[A-Za-z0-9_.:-]{1,128}$/.test(reason) ? reason : fallback
}

function privateCacheControl(value: string | null): string {
  const directives = (value ?? '')
    .split(',')
    .map((directive) => directive.trim())
    .filter((directive) => directive && !/^(public|s-maxage=.*)$/i.test(directive))
  if (!directives.some((directive) => /^(private|no-store)$/i.test(directive))) directives.push('private')
  return directives.join(', ')
}

function resolveFacilitator(facilitator: FacilitatorClient | string, timeoutMs: number): FacilitatorClient {
  if (typeof facilitator !== 'string') {
    if (typeof facilitator?.verify !== 'function' || typeof facilitator.settle !== 'function')
      throw new PaywallConfigError('The facilitator is neither a URL nor an object with verify and settle.', {
        hint: "Pass 'http://localhost:4020', httpFacilitator(url) or createFacilitator(config).",
      })
    return facilitator
  }
  if (!URL.canParse(facilitator) || !/^https?:$/.test(new URL(facilitator).protocol))
    throw new PaywallConfigError(`The facilitator "${facilitator.slice(0, 200)}" is not an http(s) URL.`, {
      hint: 'Use e.g. http://localhost:4020.',
    })
  // Loaded on first use: the server role reaches the facilitator's HTTP client only when given a URL.
  let client: Promise<FacilitatorClient> | undefined
  const load = () =>
    (client ??= import('../facilitator/http.ts').then(({ httpFacilitator }) => httpFacilitator(facilitator, { timeoutMs })))
  return {
    verify: async (payment) => (await load()).verify(payment),
    settle: async (payment) => (await load()).settle(payment),
    supported: async () => (await load()).supported(),
    enqueue: async (payment, options) => {
      const client = await load()
      if (!client.enqueue) throw new BaseError('The facilitator client does not queue payments.', { code: 'enqueue_not_supported' })
      return client.enqueue(payment, options)
    },
  }
}
