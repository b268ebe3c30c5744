/**
 * Routes: which requests a paywall covers (DESIGN §7 invariant 5).
 *
 * Route keys are compiled once, with every offer checked. A request path is then read every way a
 * router in front of or behind the paywall might read it (decoded until stable, slashes collapsed,
 * dot segments resolved or kept, `;` parameters dropped or taken as a query, case folded, trailing
 * slash dropped), and a route applies when any reading matches. Over-matching only costs a 402 on a
 * path no handler serves; under-matching would serve a handler unpaid.
 */
import * as Base64Json from '../core/Base64Json.ts'
import { BaseError } from '../core/Errors.ts'
import type { Price } from '../core/Money.ts'
import type { Asset, Network } from '../core/Network.ts'
import * as PaymentRequirements from '../core/PaymentRequirements.ts'
import * as RoutePattern from '../core/RoutePattern.ts'
import { canonical, coversMethod, matchSegments, type Segment, segmentsOf } from '../core/RoutePattern.ts'
import type { SchemeServer } from '../core/Scheme.ts'
import type { GrantConfig } from '../credential/Grant.ts'
import * as Grant from '../credential/Grant.ts'

/** A price, or a function of the request that gives one (a dynamic price). */
export type DynamicPrice = Price | ((request: Request) => Price | Promise<Price>)

/** One way to pay for a route. Fields left out come from the route, then from the paywall config. */
export type OfferConfig = {
  price: DynamicPrice
  network?: string
  payTo?: string
  asset?: Asset
  /** Default `'exact'`. */
  scheme?: string
  maxTimeoutSeconds?: number
  extra?: Record<string, unknown>
}

/**
 * A paid route: a `price` (one offer), `accepts` (several offers), or both (the `price` offer first).
 */
export type RouteConfig = Partial<OfferConfig> & {
  description?: string
  mimeType?: string
  accepts?: readonly OfferConfig[]
  /** What one payment buys: `{ uses: 3 }` calls, a `{ window: '1h' }` of calls, or both, served on the access credential it earns. */
  grants?: GrantConfig
  /**
   * When the answer is released: `before-response` (default) once the payment has settled on chain;
   * `after-response` once it is verified and durably queued for settlement (an x402kit facilitator's
   * `enqueue`), which takes the wait for a block off the request. Other facilitators settle before.
   */
  settlement?: 'before-response' | 'after-response'
  /**
   * With `after-response`: the most a payer may have queued and not yet settled to this route's
   * payee, per asset, as a price (`'$0.50'`, or atomic units). Past it, that payer's requests settle
   * before the response until the queue catches up. Default: 100 times the payment.
   */
  maxUnsettled?: Price
}

/** Keys are `'METHOD /path'` or `'/path'` (every method); `*` is one or more segments, a final `/*` any tail. */
export type RoutesConfig = Record<string, RouteConfig>

export type Offer = {
  scheme: SchemeServer
  price: DynamicPrice
  input: { network: Network; payTo: string; asset?: Asset; maxTimeoutSeconds?: number; extra?: Record<string, unknown> }
  /** The requirements, when the price is fixed and so computed once. */
  fixed: PaymentRequirements.PaymentRequirements | undefined
  /** The route's `maxUnsettled` in this offer's atomic units. */
  maxUnsettled: bigint | undefined
}

export type Route = {
  key: string
  /** `undefined`: every method. */
  method: string | undefined
  /** Path segments to match: a literal, `one` (any one segment) or `any` (zero or more). */
  pattern: readonly Segment[]
  description: string | undefined
  mimeType: string | undefined
  offers: Offer[]
  /** The access credential a payment earns, as its offers' `extra.grant` ask for it. */
  grant: Grant.Grant | undefined
  settlement: 'before-response' | 'after-response'
}

export class PaywallConfigError extends BaseError {
  override name = 'PaywallConfigError'
  constructor(shortMessage: string, options: { hint?: string; cause?: unknown } = {}) {
    super(shortMessage, { code: 'invalid_config', ...options })
  }
}

/** Compiles and checks every route; throws a `PaywallConfigError` naming the route at fault. */
export function compileRoutes(
  routes: RoutesConfig,
  defaults: { payTo?: string; network?: string; schemes: readonly SchemeServer[]; audience?: string },
): Route[] {
  if (typeof routes !== 'object' || routes === null || Object.keys(routes).length === 0)
    throw new PaywallConfigError('The paywall has no routes.', { hint: "Give routes such as { 'GET /weather': { price: '$0.001' } }." })
  const compiled: Route[] = []
  for (const [key, route] of Object.entries(routes)) {
    const { method, pattern } = parseKey(key)
    const twin = compiled.find((other) => other.method === method && canonical(other.pattern) === canonical(pattern))
    if (twin) throw new PaywallConfigError(`Routes "${twin.key}" and "${key}" are the same route once normalised.`)
    const { price, accepts = [], description, mimeType, grants, settlement = 'before-response', maxUnsettled, ...shared } = route ?? {}
    if (settlement !== 'before-response' && settlement !== 'after-response')
      throw new PaywallConfigError(`Route "${key}" has settlement "${String(settlement).slice(0, 40)}".`, {
        hint: "Use 'before-response' or 'after-response'.",
      })
    const offers = [...(price === undefined ? [] : [{ ...shared, price }]), ...accepts]
    if (offers.length === 0)
      throw new PaywallConfigError(`Route "${key}" has no price.`, {
        hint: "Give it a price such as '$0.001', or accepts: [{ price, network }].",
      })
    const grant = grants === undefined ? undefined : compileGrant(key, grants, defaults.audience)
    compiled.push({
      key,
      method,
      pattern,
      description,
      mimeType,
      offers: offers.map((offer) => {
        const merged = { ...shared, ...offer }
        return compileOffer(key, grant ? { ...merged, extra: { ...merged.extra, grant } } : merged, defaults, maxUnsettled)
      }),
      grant,
      settlement,
    })
  }
  return compiled
}

function compileOffer(
  key: string,
  offer: OfferConfig,
  defaults: { payTo?: string; network?: string; schemes: readonly SchemeServer[] },
  maxUnsettled?: Price,
): Offer {
  const name = offer.scheme ?? 'exact'
  const scheme = defaults.schemes.find((candidate) => candidate.scheme === name)
  if (!scheme)
    throw new PaywallConfigError(`Route "${key}" uses the scheme "${name}", which the paywall has no server part for.`, {
      hint: `Add it to schemes; the paywall has ${defaults.schemes.map((s) => `"${s.scheme}"`).join(', ') || 'none'}.`,
    })
  const network = offer.network ?? defaults.network
  const payTo = offer.payTo ?? defaults.payTo
  if (!network)
    throw new PaywallConfigError(`Route "${key}" has no network.`, { hint: "Set network on the route or the paywall, e.g. 'eip155:8453'." })
  if (!payTo) throw new PaywallConfigError(`Route "${key}" has no payTo.`, { hint: 'Set payTo on the route or the paywall.' })
  const input = { network: network as Network, payTo, asset: offer.asset, maxTimeoutSeconds: offer.maxTimeoutSeconds, extra: offer.extra }
  try {
    // A dynamic price is checked with a zero price now, so a bad network, asset or payTo fails at start.
    const probe = Base64Json.parse(
      scheme.requirements({ ...input, price: typeof offer.price === 'function' ? 0n : offer.price }),
      PaymentRequirements.schema,
      'offer',
    )
    // The cap in the offer's own asset and units, converted as the scheme converts a price.
    const cap = maxUnsettled === undefined ? undefined : BigInt(scheme.requirements({ ...input, price: maxUnsettled }).amount)
    return {
      scheme,
      price: offer.price,
      input: { ...input, network: probe.network as Network },
      fixed: typeof offer.price === 'function' ? undefined : probe,
      maxUnsettled: cap,
    }
  } catch (cause) {
    const message = cause instanceof BaseError ? cause.shortMessage : cause instanceof Error ? cause.message.split('\n')[0] : String(cause)
    throw new PaywallConfigError(`Route "${key}": ${message}`, { cause, hint: cause instanceof BaseError ? cause.hint : undefined })
  }
}

function compileGrant(key: string, grants: GrantConfig, audience: string | undefined): Grant.Grant {
  if (audience === undefined)
    throw new PaywallConfigError(`Route "${key}" grants access, but the paywall takes no credentials.`, {
      hint: "Give the paywall credentials: { audience: 'https://api.example.com', trust: [{ issuer: facilitatorUrl }] }.",
    })
  try {
    return Grant.fromConfig(grants, { audience, scope: key })
  } catch (cause) {
    if (!(cause instanceof BaseError)) throw cause
    throw new PaywallConfigError(`Route "${key}": ${cause.shortMessage}`, { hint: cause.hint })
  }
}

function parseKey(key: string): RoutePattern.RoutePattern {
  try {
    return RoutePattern.parse(key)
  } catch (cause) {
    if (!(cause instanceof BaseError)) throw cause
    throw new PaywallConfigError(cause.shortMessage, { hint: cause.hint })
  }
}

/** The route that applies to a request, if any: the first declared whose method and any path reading match. */
export function findRoute(routes: readonly Route[], method: string, readings: readonly string[]): Route | undefined {
  const wanted = method.toUpperCase()
  const paths = readings.map(segmentsOf)
  return routes.find((route) => coversMethod(route.method, wanted) && paths.some((path) => matchSegments(route.pattern, path)))
}

/** Whether any route covers one of the path readings, whatever the method. */
export function coversPath(routes: readonly Route[], readings: readonly string[]): boolean {
  const paths = readings.map(segmentsOf)
  return routes.some((route) => paths.some((path) => matchSegments(route.pattern, path)))
}

/** How many times a path is percent-decoded; a path still encoded after that is refused. */
export const maxDecodeRounds = 3

/**
 * The readings of a request path that routes are matched against, each lower-case, with single
 * slashes and no trailing slash; `undefined` when the path is still percent-encoded after
 * `maxDecodeRounds` decodings.
 */
export function readPath(path: string): string[] | undefined {
  const decoded = decodeFully(path)
  if (decoded === undefined) return undefined
  const slashed = decoded.replaceAll('\\', '/')
  const clean = cutAt(slashed, /[?#\0]/)
  const readings = [
    // Matrix parameters dropped per segment (`/a;x=1/b`), dot segments resolved: what proxies and servlet containers read.
    finish(resolveDots(clean.split('/').map((segment) => segment.split(';')[0] ?? ''))),
    // `;` as the start of a query, as some routers can be told to read it.
    finish(resolveDots(cutAt(clean, /;/).split('/'))),
    // Decoded but otherwise literal: `..` kept as a segment, as a router matching raw segments sees it.
    finish(slashed.split('/')),
  ]
  return [...new Set(readings)]
}

/** The main reading of a path: decoded, dot segments resolved, case folded. */
export function normalizePath(path: string): string | undefined {
  return readPath(path)?.[0]
}

/**
 * The readings of a request's path: from its URL, which WHATWG parsing has already resolved, and from
 * the raw request target when the framework routes on that instead (`req.url` on Node).
 */
export function readTarget(url: URL, target?: string): string[] | undefined {
  const fromUrl = readPath(url.pathname)
  const fromTarget = target?.startsWith('/') ? readPath(target.split(/[?#]/, 1)[0] ?? '/') : []
  return fromUrl && fromTarget && [...new Set([...fromUrl, ...fromTarget])]
}

const encoded = /%[0-9a-f]{2}/i
const encodedRun = /(?:%[0-9a-f]{2})+/gi
const utf8 = new TextDecoder()

function decodeFully(path: string): string | undefined {
  let current = path
  for (let round = 0; round < maxDecodeRounds && encoded.test(current); round++)
    current = current.replace(encodedRun, (run) => utf8.decode(Uint8Array.from(run.slice(1).split('%'), (hex) => Number.parseInt(hex, 16))))
  return encoded.test(current) ? undefined : current
}

function cutAt(text: string, pattern: RegExp): string {
  const index = text.search(pattern)
  return index === -1 ? text : text.slice(0, index)
}

function resolveDots(segments: readonly string[]): string[] {
  const resolved: string[] = []
  for (const segment of segments) {
    if (segment === '..') resolved.pop()
    else if (segment !== '.' && segment !== '') resolved.push(segment)
  }
  return resolved
}

function finish(segments: readonly string[]): string {
  return `/${segments.filter(Boolean).join('/')}`.toLowerCase()
}
