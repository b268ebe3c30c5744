/**
 * A facilitator (x402 v2 §7): routes each payment to the scheme registered for its
 * `(scheme, network)`, verifies and settles it exactly once through a settlement store, and serves
 * the HTTP API (`/verify`, `/settle`, `/supported`, `/health`, and `/.well-known/jwks.json` when it issues
 * access credentials) on Web `Request`/`Response`.
 */
import { BaseError, Reason } from '../core/Errors.ts'
import type { FacilitatorClient, Payment, SupportedResponse } from '../core/Facilitator.ts'
import * as Money from '../core/Money.ts'
import * as Network from '../core/Network.ts'
import type { PipelineEvent, PipelineWorkers, SchemeFacilitator } from '../core/Scheme.ts'
import { type CredentialIssuerConfig, credentialIssuer } from './credentials.ts'
import { createHandler } from './handler.ts'
import type { Context } from './internal/context.ts'
import { isQueue } from './Queue.ts'
import { memoryStore, type SettlementPatch, type SettlementStore } from './Store.ts'
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
  /**
   * A settlement left `settling` this long (a crash between sending and recording) is reconciled with
   * the chain by its scheme, at start and every minute after. Default 180 s, well past any receipt wait.
   */
  reconcileAfterMs?: number
  /** Faults that do not reach the caller as such: scheme exceptions, store writes after settlement. Default: `console.error`. */
  onError?: (error: unknown, context: { operation: 'verify' | 'settle' | 'http'; key?: string }) => void
  /** The clock of record timestamps, in milliseconds. */
  now?: () => number
  /** Issue access credentials for offers that ask for them (`extra.grant`) once their payment settles. */
  credentials?: CredentialIssuerConfig
  /** Told of every verification and settlement answered, with its outcome and duration: the hook for metrics. */
  observe?: (event: Observation) => void
  /**
   * Risk controls: asked about every payment the scheme finds valid, before it is accepted (verified,
   * or queued or settled without a verification first). A refusal answers with its reason code and
   * leaves nothing recorded; `accepted` is told of each payment that was accepted.
   */
  risk?: RiskControls
  /**
   * The settlement pipeline, for schemes that offer one and a store that is a `SettlementQueue`
   * (`memoryStore` and the service's SQL store are): accepted payments are queued and settled in batches.
   */
  pipeline?: {
    /** Default true when the store is a queue. */
    enabled?: boolean
    /** This process's name in signer leases; keep it across restarts to take the leases back at once. Default: random. */
    owner?: string
    /** How long `settle` waits for a queued payment's outcome before answering `settlement_pending`. Default 60 s. */
    settleWaitMs?: number
    /** Told of what the workers do: batches, gas, queue depth, signer balances. */
    onEvent?: (event: PipelineEvent) => void
    /** The workers' log lines. Default: warnings and errors to the console. */
    log?: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void
  }
}

/** A valid payment, as risk controls see it. */
export type RiskInput = { payer: string; payTo: string; asset: string; network: string; amount: bigint }

export type RiskControls = {
  screen(payment: RiskInput): Promise<{ reason: string; message: string } | undefined>
  accepted?(payment: RiskInput): void
}

/** One answered verification or settlement. `outcome` is `valid`/`settled`, or the reason code of the refusal. */
export type Observation = { operation: 'verify' | 'settle' | 'enqueue'; scheme: string; network: string; outcome: string; seconds: number }

export type Facilitator = Required<FacilitatorClient> & {
  /** The HTTP API on Web `Request`/`Response`, for any server that speaks them. */
  handler(request: Request): Promise<Response>
  /** Stops the settlement pipeline's workers, letting batches in flight finish for up to `graceMs`. */
  close(options?: { graceMs?: number }): Promise<void>
  /**
   * Settles the account of settlements left `settling` for `olderThanMs` (default `reconcileAfterMs`)
   * with the chain, through their schemes; resolves with how many records it ended or reopened.
   */
  reconcile(options?: { olderThanMs?: number }): Promise<number>
}

const defaults = {
  maxBodyBytes: 64 * 1024,
  verifyTtlMs: 120_000,
  pendingWaitMs: 5_000,
  settleWaitMs: 60_000,
  reconcileAfterMs: 180_000,
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
  const store = config.store ?? memoryStore()
  const queue = config.pipeline?.enabled !== false && isQueue(store) ? store : undefined
  const workers = new Map<SchemeFacilitator, PipelineWorkers>()
  const context: Context = {
    route: ({ scheme, network }) =>
      byKind.get(`${scheme} ${network}`) ?? (names.has(scheme) ? Reason.invalidNetwork : Reason.unsupportedScheme),
    store,
    now,
    verifyTtlMs: config.verifyTtlMs ?? defaults.verifyTtlMs,
    pendingWaitMs: config.pendingWaitMs ?? defaults.pendingWaitMs,
    inflight: new Map(),
    onError,
    credentials,
    queue,
    risk: config.risk,
    verified: new Set(),
    settleWaitMs: config.pipeline?.settleWaitMs ?? defaults.settleWaitMs,
    waiters: new Map(),
    wake: (scheme, network) => workers.get(scheme)?.wake(network),
  }
  if (queue) {
    const owner = config.pipeline?.owner ?? `facilitator-${crypto.randomUUID()}`
    const log = config.pipeline?.log ?? defaultLog
    for (const scheme of new Set(config.schemes)) {
      if (!scheme.pipeline) continue
      workers.set(
        scheme,
        scheme.pipeline.start(queue, {
          owner,
          finish: (payment, result) => credentials.issue(payment, result),
          recorded(keys) {
            for (const key of keys) for (const wake of context.waiters.get(key) ?? []) wake()
          },
          event(event) {
            try {
              config.pipeline?.onEvent?.(event)
            } catch (error) {
              onError(error, { operation: 'settle' })
            }
          },
          log,
        }),
      )
    }
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
      onError(error, { operation: operation === 'verify' ? 'verify' : 'settle' })
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
    enqueue: (payment, options) =>
      timed(
        'enqueue',
        payment,
        async () => {
          let cap: bigint | undefined
          try {
            cap = options?.maxUnsettled === undefined ? undefined : Money.parseAtomic(options.maxUnsettled)
          } catch {
            return {
              success: false,
              errorReason: Reason.invalidPaymentRequirements,
              errorMessage: 'maxUnsettled must be a whole number of atomic units.',
              transaction: '',
              network: payment.requirements?.network ?? '',
            }
          }
          return settle(context, payment, { kind: 'queue', cap })
        },
        (answer) => (answer.success ? 'queued' : (answer.errorReason ?? 'failed')),
      ),
  }
  const reconcileAfterMs = config.reconcileAfterMs ?? defaults.reconcileAfterMs
  async function reconcile({ olderThanMs = reconcileAfterMs }: { olderThanMs?: number } = {}): Promise<number> {
    if (!store.unfinished || !config.schemes.some((scheme) => scheme.reconcile)) return 0
    let done = 0
    for (const record of await store.unfinished(now() - olderThanMs, 500)) {
      const scheme = context.route({ ...record, maxTimeoutSeconds: 0 })
      if (typeof scheme === 'string' || !scheme.reconcile) continue
      try {
        const outcome = await scheme.reconcile(record)
        if (!outcome) continue
        const patch: SettlementPatch =
          outcome.status === 'verified'
            ? { status: 'verified', updatedAt: now() }
            : {
                status: outcome.status,
                result: outcome.result,
                transaction: outcome.result.transaction || undefined,
                errorReason: outcome.result.success ? undefined : (outcome.result.errorReason ?? undefined),
                updatedAt: now(),
              }
        if (await store.update(record.key, patch, { status: 'settling', updatedBefore: now() - olderThanMs })) done++
      } catch (error) {
        onError(error, { operation: 'settle', key: record.key })
      }
    }
    return done
  }
  const reconciling = setInterval(() => void reconcile().catch((error) => onError(error, { operation: 'settle' })), 60_000)
  reconciling.unref()
  setTimeout(() => void reconcile().catch((error) => onError(error, { operation: 'settle' })), 0).unref()

  return {
    ...(client as Required<FacilitatorClient>),
    reconcile,
    handler: createHandler(client, { maxBodyBytes: config.maxBodyBytes ?? defaults.maxBodyBytes, onError, jwks: credentials.jwks }),
    async close(options) {
      clearInterval(reconciling)
      await Promise.all([...workers.values()].map((running) => running.stop(options)))
    },
  }
}

function defaultLog(level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) {
  if (level === 'info') return
  console[level](`[x402kit pipeline] ${message}`, fields ?? '')
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
