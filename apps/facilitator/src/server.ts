/**
 * The facilitator service: the library's facilitator over HTTP on Node, with its settlement records
 * in PGlite or PostgreSQL, and the schemes its configuration names.
 */
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import type { SchemeFacilitator } from 'x402kit'
import { type CredentialKeyRing, credentialKeys, generateCredentialKey } from 'x402kit/credential'
import type { BatchSettlementEvmFacilitator } from 'x402kit/evm'
import { createFacilitator, type Facilitator, type FacilitatorConfig } from 'x402kit/facilitator'
import { createAccessGuard } from './access/guard.ts'
import { channelsHandler } from './channels.ts'
import { type Config, ConfigError, type ConfigInput, parseConfig, variables } from './config.ts'
import { ledgerEntries, recordLedger } from './ledger/ledger.ts'
import { statementHandler } from './ledger/statement.ts'
import { createLogger, type Logger, logLevel, logRequests, requestLogger } from './log.ts'
import { serviceMetrics } from './metrics.ts'
import { createRiskScreen } from './risk/screen.ts'
import { sqlChannelStore } from './store/channels.ts'
import { type Database, openDatabase } from './store/database.ts'
import { loadCredentialKeys, rotateCredentialKeys } from './store/keys.ts'
import { migrate, sqlStore } from './store/sql.ts'

export type ServiceOptions = {
  /** Scheme parts to serve instead of those built from `config.networks`. */
  schemes?: SchemeFacilitator[]
  /** Further settings of the facilitator (TTLs, error reporting). */
  facilitator?: Omit<FacilitatorConfig, 'schemes' | 'store' | 'maxBodyBytes'>
  /** Where the service logs, one JSON line each. Default: stdout, at the level of `LOG_LEVEL` (`info`). */
  logger?: Logger
}

export type FacilitatorService = {
  /** Where it listens, e.g. `http://127.0.0.1:4020`. */
  url: string
  facilitator: Facilitator
  database: Database
  /**
   * Makes a new key sign credentials (with `credentials` configured); the old one stays published until
   * every credential it signed has expired. Other instances sharing the database take it up within 30 s.
   */
  rotateCredentialKey(): Promise<string>
  /** Stops taking connections, lets requests in progress finish (up to `graceMs`), then closes the database. */
  close(options?: { graceMs?: number }): Promise<void>
}

/**
 * Starts the facilitator service: opens and migrates the database, builds the schemes, listens.
 *
 * @example
 * ```ts
 * import { loadConfig, startFacilitatorService } from '@x402kit/facilitator'
 * const service = await startFacilitatorService(loadConfig())
 * console.log(`facilitator on ${service.url}`)
 * ```
 */
export async function startFacilitatorService(input: ConfigInput, options: ServiceOptions = {}): Promise<FacilitatorService> {
  const config = parseConfig(input)
  const logger = options.logger ?? createLogger({ level: logLevel() })
  const schemes = options.schemes ?? (await evmSchemes(config))
  if (schemes.length === 0)
    throw new ConfigError([
      `networks: none configured; set ${variables.network}, ${variables.rpcUrl} and ${variables.signers}, or list networks in a config file`,
    ])

  const database = await openDatabase(config)
  let keys: Awaited<ReturnType<typeof credentialKeyRing>>
  let risk: ReturnType<typeof createRiskScreen> | undefined
  let facilitator: Facilitator | undefined
  let channels: BatchSettlementEvmFacilitator | undefined
  try {
    await migrate(database)
    keys = await credentialKeyRing(config, database)
    const metrics = serviceMetrics({ logger })
    channels = options.schemes
      ? (schemes.find((scheme) => 'channelRecord' in scheme) as BatchSettlementEvmFacilitator | undefined)
      : await channelScheme(config, database, metrics.channels, logger)
    if (channels && !options.schemes) schemes.push(channels)
    // Claims, sweeps and refunds a stop left open are settled against the chain before anything new is sent.
    if (channels && !options.schemes)
      await channels.recover().then(
        ({ reconciled }) => reconciled > 0 && logger.info('batch-settlement transactions reconciled', { reconciled }),
        (error) => logger.warn('batch-settlement transactions could not be reconciled; they stay open for the next start', { error }),
      )
    risk = createRiskScreen({
      ...config.risk,
      database,
      onError: (error) => logger.warn('deny list could not be read; keeping the last good one', { error }),
    })
    const screen = risk
    const pipelineLog = logger.child({ component: 'pipeline' })
    facilitator = createFacilitator({
      observe: metrics.observe,
      onError: (error, { operation, key }) => requestLogger(logger).error(`${operation} failed`, { operation, settlement: key, error }),
      risk: { screen: (payment) => screen.screen(payment), accepted: (payment) => screen.record(payment) },
      pipeline: {
        ...(config.pipeline.instanceId && { owner: config.pipeline.instanceId }),
        ...(config.pipeline.settleWaitMs !== undefined && { settleWaitMs: config.pipeline.settleWaitMs }),
        onEvent: metrics.pipeline,
        log: (level, message, fields) => pipelineLog[level](message, fields),
      },
      ...options.facilitator,
      schemes,
      store: sqlStore(database, { ledger: (q, entries) => recordLedger(q, ledgerEntries(entries, config.fees)).then(() => {}) }),
      ...(config.maxBodyBytes !== undefined && { maxBodyBytes: config.maxBodyBytes }),
      ...(config.credentials &&
        keys && { credentials: { issuer: config.credentials.issuer, ttlSeconds: config.credentials.ttlSeconds, keys: keys.ring } }),
    })

    let closing: Promise<void> | undefined
    const operations: Record<string, () => Promise<Response>> = {
      '/health': () => health(database),
      // Ready: the database answers and the service is not shutting down.
      '/ready': async () => (closing ? problem(503, 'shutting_down', 'The service is shutting down.') : health(database)),
      '/metrics': () => metrics.response(),
    }
    const access = createAccessGuard(config.access ?? {})
    const keyed = (config.access?.apiKeys?.length ?? 0) > 0
    const statements = statementHandler(database, {
      // With merchant API keys, a merchant sees its own statements only: those of the payTo addresses its key names.
      authorize: (request, merchant) => {
        if (!keyed) return undefined
        const caller = access.identify(request)
        if (!caller) return problem(401, 'missing_api_key', 'Statements need the merchant API key: Authorization: Bearer <key>.')
        if (!caller.payTo?.some((address) => address.toLowerCase() === merchant))
          return problem(403, 'forbidden', 'This API key does not cover that merchant address.')
        return undefined
      },
    })
    const channelEndpoints =
      channels &&
      channelsHandler(channels, {
        // With merchant API keys, a merchant reads the channels that pay its own addresses only.
        authorize: (request, receiver) => {
          if (!keyed) return undefined
          const caller = access.identify(request)
          if (!caller) return problem(401, 'missing_api_key', 'Channels need the merchant API key: Authorization: Bearer <key>.')
          if (!receiver || !caller.payTo?.some((address) => address.toLowerCase() === receiver))
            return problem(403, 'forbidden', 'This API key does not cover that receiver; name one of its payTo addresses.')
          return undefined
        },
      })
    const handler = facilitator.handler
    const fetch = async (request: Request, clientAddress?: string) => {
      const path = new URL(request.url).pathname
      const operation = request.method === 'GET' ? operations[path] : undefined
      if (operation) return operation()
      if (path.startsWith('/statements/')) return statements(request)
      const channelAnswer = channelEndpoints && (await channelEndpoints(request))
      if (channelAnswer) return channelAnswer
      const refused = await access.guard(request, clientAddress)
      if (refused) return refused
      if (keyed && channels && request.method === 'POST' && path.replace(/\/$/, '') === '/settle') {
        const foreign = await channelActionRefusal(request, access.identify(request)?.payTo, config.maxBodyBytes ?? 64 * 1024)
        if (foreign) return foreign
      }
      return handler(request)
    }
    const logged = logRequests((request) => fetch(request, clientOf.get(request)), logger, { quiet: Object.keys(operations) })
    const clientOf = new WeakMap<Request, string>()
    const server = serve({
      fetch: (request: Request, env: { incoming?: { socket?: { remoteAddress?: string } } }) => {
        const address = env?.incoming?.socket?.remoteAddress
        if (address) clientOf.set(request, address)
        return logged(request)
      },
      port: config.port,
      hostname: config.host,
    })
    const address = await new Promise<AddressInfo>((resolve, reject) => {
      server.once('listening', () => resolve(server.address() as AddressInfo))
      server.once('error', reject)
    })
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address

    return {
      url: `http://${host}:${address.port}`,
      facilitator,
      database,
      async rotateCredentialKey() {
        if (!keys) throw new ConfigError([`credentials: not configured; set ${variables.credentialIssuer} to issue credentials`])
        return keys.rotate()
      },
      close: ({ graceMs = 10_000 } = {}) =>
        (closing ??= (async () => {
          keys?.stop()
          risk?.close()
          const closed = new Promise<void>((resolve) => server.close(() => resolve()))
          // Keep-alive connections go as soon as their request is answered, not at their idle timeout.
          const idle = setInterval(() => 'closeIdleConnections' in server && server.closeIdleConnections(), 50)
          const grace = setTimeout(() => 'closeAllConnections' in server && server.closeAllConnections(), graceMs)
          await closed
          clearInterval(idle)
          clearTimeout(grace)
          channels?.stop()
          // Batches in flight finish (or stay recorded, to be resumed at the next start) before the database goes.
          await facilitator?.close({ graceMs })
          await database.close()
        })()),
    }
  } catch (error) {
    keys?.stop()
    risk?.close()
    channels?.stop()
    await facilitator?.close({ graceMs: 0 })
    await database.close()
    throw error
  }
}

/**
 * The credential keys, kept in the database and read again every 30 s, so that a rotation by any
 * instance reaches all of them well within the minute a retired key is kept beyond its last credential.
 */
async function credentialKeyRing(config: Config, database: Database) {
  if (!config.credentials) return undefined
  const { algorithm, maxTtlSeconds } = config.credentials
  const load = () => loadCredentialKeys(database, { algorithm, maxTtlSeconds })
  const ring: CredentialKeyRing = credentialKeys({ keys: await load(), algorithm, maxTtlSeconds })
  const reload = setInterval(() => load().then(ring.replace, () => {}), 30_000)
  reload.unref()
  return {
    ring,
    async rotate() {
      const key = await generateCredentialKey(algorithm)
      await rotateCredentialKeys(database, key)
      ring.replace(await load())
      return key.kid
    },
    stop: () => clearInterval(reload),
  }
}

/** `GET /health`: 200 while the database answers, else a 503 problem. */
async function health(database: Database): Promise<Response> {
  try {
    await database.query('SELECT 1')
    return Response.json({ status: 'ok', database: database.kind })
  } catch {
    return problem(503, 'database_unavailable', 'The database does not answer.')
  }
}

function problem(status: number, code: string, detail: string): Response {
  const body = { type: 'about:blank', title: 'Service Unavailable', status, detail, code }
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/problem+json' } })
}

async function evmSchemes(config: Config): Promise<SchemeFacilitator[]> {
  if (Object.keys(config.networks).length === 0) return []
  // Loaded only when used, so a service given its schemes does not load the EVM stack.
  const { exactEvmFacilitator, txproofEvmFacilitator } = await import('x402kit/evm')
  return [
    exactEvmFacilitator({
      networks: config.networks,
      batch: {
        ...(config.pipeline.maxItems !== undefined && { maxItems: config.pipeline.maxItems }),
        ...(config.pipeline.leaseMs !== undefined && { leaseMs: config.pipeline.leaseMs }),
        ...(config.pipeline.lowBalanceWei !== undefined && { lowBalanceWei: BigInt(config.pipeline.lowBalanceWei) }),
      },
      eip6492Factories: config.eip6492Factories,
      ...(config.receiptTimeoutMs !== undefined && { receiptTimeoutMs: config.receiptTimeoutMs }),
      ...(config.replaceAfterMs !== undefined && { replaceAfterMs: config.replaceAfterMs }),
      ...(config.admission !== undefined && { admission: config.admission }),
    }),
    txproofEvmFacilitator({ networks: config.networks }),
  ]
}

/** `batch-settlement` channels, where a network configures them, their records in the service's database. */
async function channelScheme(
  config: Config,
  database: Database,
  onAction: (event: import('x402kit/evm').ActionEvent) => void,
  logger: Logger,
): Promise<BatchSettlementEvmFacilitator | undefined> {
  const entries = Object.entries(config.networks).filter(([, entry]) => entry.batchSettlement)
  if (entries.length === 0) return undefined
  const { batchSettlementEvmFacilitator } = await import('x402kit/evm')
  const settings = entries.map(([, entry]) => entry.batchSettlement!)
  const first = <key extends keyof (typeof settings)[number]>(key: key) => settings.find((entry) => entry[key] !== undefined)?.[key]
  const claimLog = logger.child({ component: 'channels' })
  return batchSettlementEvmFacilitator({
    networks: Object.fromEntries(
      entries.map(([network, entry]) => [
        network,
        {
          rpcUrl: entry.rpcUrl,
          signers: [entry.batchSettlement!.signer ?? entry.signers[0]!],
          ...(entry.batchSettlement!.escrow && { escrow: entry.batchSettlement!.escrow }),
          ...(entry.batchSettlement!.collector && { collector: entry.batchSettlement!.collector }),
        },
      ]),
    ),
    store: sqlChannelStore(database),
    ...(first('claimWindowMs') !== undefined && { claimWindowMs: first('claimWindowMs') }),
    ...(first('maxClaimsPerTransaction') !== undefined && { maxClaimsPerTransaction: first('maxClaimsPerTransaction') }),
    ...(first('claimIntervalMs') !== undefined && { claimIntervalMs: first('claimIntervalMs') }),
    onAction: (event) => {
      onAction(event)
      // Claimed value and its gas go into the ledger like settled payments, one entry per channel.
      recordLedger(database, ledgerEntries(claimEntries(event), config.fees)).catch((error) =>
        claimLog.error('claim not recorded in the ledger', { transaction: event.transaction, error }),
      )
    },
    onError: (error) => claimLog.error('batch-settlement claim failed', { error }),
  })
}

/** The ledger's view of a claim: each channel's claimed value, with an even share of the transaction's gas. */
export function claimEntries(event: import('x402kit/evm').ActionEvent): import('./store/queue.ts').SettledEntry[] {
  const count = BigInt(event.claims.length)
  if (count === 0n || !event.success) return []
  const share = event.gasUsed / count
  const settledAt = new Date()
  return event.claims.map((claim, index) => {
    const gasUsed = index === 0 ? share + (event.gasUsed - share * count) : share
    return {
      key: `batch-settlement:${event.transaction}:${claim.channelId}`,
      network: event.network,
      asset: claim.token,
      payTo: claim.receiver,
      payer: claim.payer,
      amount: claim.amount,
      gasUsed,
      gasCost: gasUsed * event.gasPrice,
      transaction: event.transaction,
      settledAt,
    }
  })
}

/**
 * With merchant API keys, a claim, sweep or refund is for channels paying the caller's own
 * addresses: no merchant can claim, sweep or refund (with this facilitator's authorizer key) the
 * channels of another. Other payloads pass to the facilitator untouched.
 */
async function channelActionRefusal(
  request: Request,
  payTo: readonly string[] | undefined,
  maxBytes: number,
): Promise<Response | undefined> {
  const text = await readCapped(request.clone(), maxBytes)
  // Past the cap the facilitator refuses the body itself; without `batch-settlement` it is no channel action.
  if (text === undefined || !text.includes('batch-settlement')) return undefined
  let payload: {
    type?: unknown
    receiver?: unknown
    channelConfig?: { receiver?: unknown }
    claims?: { voucher?: { channel?: { receiver?: unknown } } }[]
  }
  try {
    payload = JSON.parse(text)?.paymentPayload?.payload ?? {}
  } catch {
    return undefined
  }
  const receivers =
    payload.type === 'settle'
      ? [payload.receiver]
      : payload.type === 'refund'
        ? [payload.channelConfig?.receiver, ...(payload.claims ?? []).map((claim) => claim?.voucher?.channel?.receiver)]
        : payload.type === 'claim'
          ? (Array.isArray(payload.claims) ? payload.claims : []).map((claim) => claim?.voucher?.channel?.receiver)
          : undefined
  if (!receivers) return undefined
  const allowed = new Set((payTo ?? []).map((address) => address.toLowerCase()))
  if (receivers.every((receiver) => typeof receiver === 'string' && allowed.has(receiver.toLowerCase()))) return undefined
  return new Response(
    JSON.stringify({
      type: 'about:blank',
      title: 'Forbidden',
      status: 403,
      detail: 'This API key does not cover the receiver of every channel in the request.',
      code: 'forbidden',
    }),
    { status: 403, headers: { 'content-type': 'application/problem+json' } },
  )
}

/** The body as text, or `undefined` once it passes `maxBytes`: nothing larger is held in memory. */
async function readCapped(request: Request, maxBytes: number): Promise<string | undefined> {
  if (!request.body) return ''
  const reader = request.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > maxBytes) {
      await reader.cancel()
      return undefined
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}
