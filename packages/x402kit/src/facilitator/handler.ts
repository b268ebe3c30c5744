/**
 * The facilitator HTTP API (x402 v2 §7; PROTOCOL.md "Facilitator HTTP API") on Web `Request`/`Response`.
 *
 * A payment that is merely unacceptable is an answer, status 200 with `{ isValid: false, … }` or
 * `{ success: false, … }`, as the reference facilitator gives it (its client treats any other status
 * as a fault). A request that is not a verify or settle request at all is an RFC 9457 problem with a
 * stable `code`. Every answer is JSON.
 */
import type { z } from 'zod'
import { readBody } from '../core/Body.ts'
import { BaseError, Reason } from '../core/Errors.ts'
import { type FacilitatorClient, toPayment, type VerifyRequest, verifyRequest } from '../core/Facilitator.ts'
import type { JsonWebKeySet } from '../credential/Keys.ts'
import { failure, invalid } from './internal/context.ts'

/** The problem codes of the HTTP API, each with its status. A shipped code never changes. */
export const problems = {
  invalid_json: { status: 400, title: 'Bad Request' },
  invalid_request: { status: 400, title: 'Bad Request' },
  not_found: { status: 404, title: 'Not Found' },
  method_not_allowed: { status: 405, title: 'Method Not Allowed' },
  body_too_large: { status: 413, title: 'Content Too Large' },
  internal_error: { status: 500, title: 'Internal Server Error' },
} as const

export type ProblemCode = keyof typeof problems

/** An RFC 9457 problem details response. `type` is `about:blank`: `code` names the problem. */
export function problem(code: ProblemCode, detail: string, headers: Record<string, string> = {}): Response {
  const { status, title } = problems[code]
  return new Response(JSON.stringify({ type: 'about:blank', title, status, detail, code }), {
    status,
    headers: { 'content-type': 'application/problem+json', ...headers },
  })
}

class ProblemError extends BaseError {
  override name = 'ProblemError'
  constructor(
    readonly problem: ProblemCode,
    detail: string,
  ) {
    super(detail, { code: problem })
  }
}

type Route = Partial<Record<'GET' | 'POST', (request: Request) => Promise<Response>>>

export function createHandler(
  client: FacilitatorClient,
  options: {
    maxBodyBytes: number
    onError(error: unknown, context: { operation: 'http' }): void
    /** The credential issuer's public keys, served at `/.well-known/jwks.json`. */
    jwks?: (() => Promise<JsonWebKeySet>) | undefined
  },
): (request: Request) => Promise<Response> {
  const routes = new Map<string, Route>([
    [
      '/verify',
      {
        async POST(request) {
          const body = await readRequest(request, options.maxBodyBytes)
          const payment = toPayment(body)
          if (!payment) return json(invalid(Reason.invalidNetwork, unknownNetwork(body)))
          return json(await client.verify(payment))
        },
      },
    ],
    [
      '/settle',
      {
        async POST(request) {
          const body = await readRequest(request, options.maxBodyBytes)
          const payment = toPayment(body)
          if (!payment) return json(failure(Reason.invalidNetwork, body.paymentRequirements.network, unknownNetwork(body)))
          const result = await client.settle(payment)
          // A version 1 client names networks its own way, and reads them back that way.
          if (body.x402Version === 1 && result.network === payment.requirements.network)
            return json({ ...result, network: body.paymentRequirements.network })
          return json(result)
        },
      },
    ],
    ['/supported', { GET: async () => json(await client.supported()) }],
    ...(client.enqueue ? [enqueueRoute(client.enqueue, options.maxBodyBytes)] : []),
    ['/health', { GET: async () => json({ status: 'ok' }) }],
  ])
  const { jwks } = options
  // Short-lived in caches: after a rotation, servers fetching on an unknown key id must see the new key soon.
  if (jwks)
    routes.set('/.well-known/jwks.json', {
      GET: async () =>
        new Response(JSON.stringify(await jwks()), {
          headers: { 'content-type': 'application/jwk-set+json', 'cache-control': 'public, max-age=60' },
        }),
    })

  return async function handler(request) {
    try {
      const path = new URL(request.url).pathname.replace(/(?<=.)\/$/, '')
      const route = routes.get(path)
      if (!route)
        return problem(
          'not_found',
          `There is no ${path.slice(0, 200)}; the API is POST /verify, POST /settle, POST /enqueue, GET /supported.`,
        )
      const run = route[request.method as keyof Route]
      const allow = Object.keys(route).join(', ')
      if (!run) return problem('method_not_allowed', `${path} accepts ${allow}, not ${request.method.slice(0, 20)}.`, { allow })
      return await run(request)
    } catch (error) {
      // The rest of an oversized body is not read: the connection ends with the answer.
      if (error instanceof ProblemError)
        return problem(error.problem, error.shortMessage, error.problem === 'body_too_large' ? { connection: 'close' } : {})
      options.onError(error, { operation: 'http' })
      return problem('internal_error', 'The facilitator could not complete the request; try again.')
    }
  }
}

/** `POST /enqueue` (an x402kit extension): a settle request, with an optional `maxUnsettled` in atomic units. */
function enqueueRoute(enqueue: NonNullable<FacilitatorClient['enqueue']>, maxBodyBytes: number): [string, Route] {
  return [
    '/enqueue',
    {
      async POST(request) {
        const { body, extra } = await readRequestWith(request, maxBodyBytes)
        const payment = toPayment(body)
        if (!payment) return json(failure(Reason.invalidNetwork, body.paymentRequirements.network, unknownNetwork(body)))
        const cap = extra.maxUnsettled
        if (cap !== undefined && typeof cap !== 'string')
          throw new ProblemError('invalid_request', 'maxUnsettled must be a string of atomic units.')
        const result = await enqueue(payment, cap === undefined ? {} : { maxUnsettled: cap })
        if (body.x402Version === 1 && result.network === payment.requirements.network)
          return json({ ...result, network: body.paymentRequirements.network })
        return json(result)
      },
    },
  ]
}

async function readRequest(request: Request, maxBytes: number): Promise<VerifyRequest> {
  return (await readRequestWith(request, maxBytes)).body
}

async function readRequestWith(request: Request, maxBytes: number): Promise<{ body: VerifyRequest; extra: Record<string, unknown> }> {
  let text: string
  try {
    text = await readBody(request.body, maxBytes, request.headers.get('content-length'))
  } catch (error) {
    if (error instanceof BaseError && (error.code === 'body_too_large' || error.code === 'invalid_json'))
      throw new ProblemError(error.code, error.shortMessage)
    throw error
  }
  if (text.trim() === '') throw new ProblemError('invalid_json', 'The body is empty; send a JSON verify or settle request.')
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    throw new ProblemError('invalid_json', `The body is not JSON: ${(error as Error).message}`)
  }
  const parsed = verifyRequest.safeParse(json)
  if (!parsed.success) throw new ProblemError('invalid_request', describe(json, parsed.error))
  return { body: parsed.data, extra: json as Record<string, unknown> }
}

/** The one issue worth reporting: for a union, the branch of the version the request names. */
function describe(json: unknown, error: z.ZodError): string {
  const version =
    typeof json === 'object' && json !== null && !Array.isArray(json) ? (json as { x402Version?: unknown }).x402Version : undefined
  if (version !== 1 && version !== 2) return 'The request needs "x402Version": 1 or 2, with "paymentPayload" and "paymentRequirements".'
  let issues: readonly z.core.$ZodIssue[] = error.issues
  let prefix: PropertyKey[] = []
  for (let issue = issues[0]; issue?.code === 'invalid_union'; issue = issues[0]) {
    prefix = [...prefix, ...issue.path]
    issues = issue.errors.find((branch) => !branch.some((inner) => inner.path[0] === 'x402Version')) ?? issue.errors[0] ?? []
  }
  const issue = issues[0]
  const path = [...prefix, ...(issue?.path ?? [])].map(String).join('.')
  return `The request does not match the schema${path ? ` at ${path}` : ''}: ${issue?.message ?? 'invalid'}.`
}

function unknownNetwork(body: VerifyRequest): string {
  return `Unknown network "${body.paymentRequirements.network}".`
}

function json(body: unknown): Response {
  return new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } })
}
