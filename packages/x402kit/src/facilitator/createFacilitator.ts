/**
 * A facilitator (x402 v2 §7): routes each payment to the scheme registered for its
 * `(scheme, network)`, verifies and settles it exactly once through a settlement store, and serves
 * the HTTP API (`/verify`, `/settle`, `/supported`, `/health`, and `/.well-known/jwks.json` when it issues
 * access credentials) on Web `Request`/`Response`.
 */
import { BaseError, Reason } from '../core/Errors.ts'
import type { FacilitatorClient, Payment, SupportedResponse } from '../core/Facilitator.ts'
import * as Network from '../core/Network.ts'
import type { SchemeFacilitator } from '../core/Scheme.ts'
import { type CredentialIssuerConfig, credentialIssuer } from './credentials.ts'
import { createHandler } from './handler.ts'
import type { Context } from './internal/context.ts'
import { memoryStore, type SettlementStore } from './Store.ts'
import { settle } from './settle.ts'
import { verify } from './verify.ts'

export type FacilitatorConfig = {
  /** The scheme parts that verify and settle, each for its networks. */
  schemes: readonly SchemeFacilitator[]
  /** Where settlement records live; shared by every instance of one facilitator. Default: `memoryStore()`. */
  store?: SettlementStore
  /** Largest request body the HTTP handler reads. Default 64 KiB. */
  maxBodyBytes?: number
  /** How long a verified, unsettled payment keeps its authorization from being verified again. Default 120 s. */
  verifyTtlMs?: number
  /** How long a settle waits for another instance already settling the same payment. Default 5 s. */
  pendingWaitMs?: number
  /** Faults that do not reach the caller as such: scheme exceptions, store writes after settlement. Default: `console.error`. */
  onError?: (error: unknown, context: { operation: 'verify' | 'settle' | 'http'; key?: string }) => void
  /** The clock of record timestamps, in milliseconds. */
  now?: () => number
  /** Issue access credentials for offers that ask for them (`extra.grant`) once their payment settles. */
  credentials?: CredentialIssuerConfig
  /** Told of every verification and settlement answered, with its outcome and duration: the hook for metrics. */
  observe?: (event: Observation) => void
}

/** One answered verification or settlement. `outcome` is `valid`/`settled`, or the reason code of the refusal. */
export type Observation = { operation: 'verify' | 'settle'; scheme: string; network: string; outcome: string; seconds: number }

export type Facilitator = FacilitatorClient & {
  /** The HTTP API on Web `Request`/`Response`, for any server that speaks them. */
  handler(request: Request): Promise<Response>
}

const defaults = {
  maxBodyBytes: 64 * 1024,
  verifyTtlMs: 120_000,
  pendingWaitMs: 5_000,
} as const

/**
 * Creates a facilitator: an in-process `FacilitatorClient` plus its HTTP handler.
 *
 * @example
 * ```ts
 * import { serve } from '@hono/node-server'
 * import { exactEvmFacilitator } from 'x402kit/evm'
 * import { createFacilitator } from 'x402kit/facilitator'
 * const facilitator = createFacilitator({ schemes: [exactEvmFacilitator({ networks })] })
 * serve({ fetch: facilitator.handler, port: 4020 }) // or hand `facilitator` to a paywall in-process
 * ```
 */
export function createFacilitator(config: FacilitatorConfig): Facilitator {
  const byKind = new Map<string, SchemeFacilitator>()
  for (const scheme of config.schemes)
    for (const network of scheme.networks) {
      const kind = `${scheme.scheme} ${network}`
      if (byKind.has(kind))
        throw new BaseError(`Two schemes are registered for "${scheme.scheme}" on ${network}.`, {
          code: 'invalid_config',
          hint: 'Give each (scheme, network) pair to one scheme part.',
        })
      byKind.set(kind, scheme)
    }
  const names = new Set(config.schemes.map((scheme) => scheme.scheme))
  const onError =
    config.onError ?? ((error, where) => console.error(`[x402kit facilitator] ${where.operation} failed`, where.key ?? '', error))

  const now = config.now ?? Date.now
  const credentials = credentialIssuer(config.credentials, { now, onError: (error) => onError(error, { operation: 'settle' }) })
  const context: Context = {
    route: ({ scheme, network }) =>
      byKind.get(`${scheme} ${network}`) ?? (names.has(scheme) ? Reason.invalidNetwork : Reason.unsupportedScheme),
    store: config.store ?? memoryStore(),
    now,
    verifyTtlMs: config.verifyTtlMs ?? defaults.verifyTtlMs,
    pendingWaitMs: config.pendingWaitMs ?? defaults.pendingWaitMs,
    inflight: new Map(),
    onError,
    credentials,
  }

  async function timed<answer>(
    operation: Observation['operation'],
    payment: Payment,
    run: () => Promise<answer>,
    outcomeOf: (answer: answer) => string,
  ) {
    if (!config.observe) return run()
    const started = performance.now()
    const answer = await run()
    try {
      const { scheme, network } = payment.requirements
      config.observe({ operation, scheme, network, outcome: outcomeOf(answer), seconds: (performance.now() - started) / 1000 })
    } catch (error) {
      onError(error, { operation })
    }
    return answer
  }
  const client: FacilitatorClient = {
    verify: (payment) =>
      timed(
        'verify',
        payment,
        () => verify(context, payment),
        (answer) => (answer.isValid ? 'valid' : (answer.invalidReason ?? 'invalid')),
      ),
    settle: (payment) =>
      timed(
        'settle',
        payment,
        () => settle(context, payment),
        (answer) => (answer.success ? 'settled' : (answer.errorReason ?? 'failed')),
      ),
    supported: async () => supported(config.schemes, credentials.jwks !== undefined),
  }
  return {
    ...client,
    handler: createHandler(client, { maxBodyBytes: config.maxBodyBytes ?? defaults.maxBodyBytes, onError, jwks: credentials.jwks }),
  }
}

/**
 * `/supported`: every `(scheme, network)` in version 2, again in version 1 where the network has a
 * version 1 name (version 1 requests are accepted), and the signer addresses per network family.
 */
function supported(schemes: readonly SchemeFacilitator[], issuesCredentials: boolean): SupportedResponse {
  const kinds: SupportedResponse['kinds'] = []
  const signers: Record<string, string[]> = {}
  for (const scheme of schemes)
    for (const network of scheme.networks) {
      const extra = scheme.extra?.(network)
      kinds.push({ x402Version: 2, scheme: scheme.scheme, network, ...(extra && { extra }) })
      const v1Name = Network.find(network)?.v1Name
      if (v1Name) kinds.push({ x402Version: 1, scheme: scheme.scheme, network: v1Name, ...(extra && { extra }) })
      const family = `${network.split(':')[0]}:*`
      const list = new Set([...(signers[family] ?? []), ...scheme.signers(network)])
      signers[family] = [...list]
    }
  return { kinds, extensions: issuesCredentials ? ['credential'] : [], signers }
}
