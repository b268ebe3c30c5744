/**
 * The service's configuration: an optional JSON file (`--config <path>` or `X402_CONFIG`), with the
 * environment over it. Checked in one place; an error names each key (and the variable it came from)
 * and what is wrong with it, never the value, as values include private keys and RPC URLs with API keys.
 */
import { readFileSync } from 'node:fs'
import type { Address, Hex } from 'viem'
import { BaseError, Network } from 'x402kit'
import { z } from 'zod'
import { hashApiKey } from './access/guard.ts'
import { feesSchema } from './ledger/fees.ts'

const privateKey = z
  .string()
  .trim()
  .regex(/^(0x)?[0-9a-fA-F]{64}$/, 'must be a private key: 32 bytes of hex, 0x and 64 hex digits')
  .transform((key) => (key.startsWith('0x') ? key : `0x${key}`) as Hex)

const address = z
  .string()
  .regex(/^0x[0-9a-fA-F]{40}$/, 'must be an address: 0x and 40 hex digits')
  .transform((value) => value as Address)

const networkConfig = z.strictObject({
  rpcUrl: z.url({ protocol: /^(https?|wss?)$/, error: 'must be an http(s) or ws(s) URL of the network’s JSON-RPC endpoint' }),
  signers: z.array(privateKey, { error: 'must be a list of private keys' }).min(1, 'needs at least one private key'),
  confirmations: z.number().int().min(0).max(64).optional(),
  /** How often receipts and blocks are polled, in ms. */
  pollingIntervalMs: z.number().int().min(10).max(60_000).optional(),
  /** A SettlementBatcher contract: with it, payments are settled in batches through the settlement pipeline. */
  batcher: address.optional(),
  /** `batch-settlement` (payment channels) on this network; present, even empty, to serve it. */
  batchSettlement: z
    .strictObject({
      /** The escrow; default the canonical `x402BatchSettlement` address. */
      escrow: address.optional(),
      /** The EIP-3009 deposit collector; default its canonical address. */
      collector: address.optional(),
      /** The key that sends deposits, claims, sweeps and refunds and is the channels' receiver authorizer; default the first of `signers`. A key of its own keeps its nonces apart from `exact` settlements. */
      signer: privateKey.optional(),
      /** How long claims from several resource servers are gathered into one transaction, in ms. Default 25. */
      claimWindowMs: z.number().int().min(0).max(60_000).optional(),
      /** Most vouchers in one claim transaction. Default 100. */
      maxClaimsPerTransaction: z.number().int().min(1).max(1_000).optional(),
      /** Claims the vouchers of requests charged here every this many ms. Default never. */
      claimIntervalMs: z.number().int().min(1_000).max(86_400_000).optional(),
    })
    .optional(),
})

/** Atomic units per asset address, written as strings: amounts of 18-decimal tokens pass 2^53. */
const amounts = z.record(
  z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'must be an asset address: 0x and 40 hex digits'),
  // A bigint too, so that a checked configuration passes the check again.
  z.union(
    [
      z.bigint().nonnegative(),
      z
        .string()
        .regex(/^\d{1,78}$/)
        .transform((value) => BigInt(value)),
    ],
    { error: 'must be an amount in the asset’s atomic units, a whole number written as a string' },
  ),
)

const risk = z.strictObject({
  /** Addresses refused as payer (and payTo): one a line with `#` comments, or a JSON array. Read again when it changes. */
  denyListFile: z.string().min(1).optional(),
  /** How often the database's `deny_list` table is read again, in ms. Default 5 s. */
  denyListReloadMs: z.number().int().min(100).max(3_600_000).optional(),
  /** Whether a deny-listed payTo is refused too. Default true. */
  denyPayTo: z.boolean().optional(),
  /** The largest single payment per asset address, in atomic units. */
  maxPaymentAmount: amounts.optional(),
  /** Limits per payer over a sliding window, counted by each instance on its own. */
  perPayer: z
    .strictObject({
      windowSeconds: z
        .number()
        .int()
        .min(1)
        .max(31 * 24 * 3600),
      maxPayments: z.number().int().min(1).optional(),
      maxAmount: amounts.optional(),
    })
    .optional(),
})

const apiKeys = z
  .array(
    z.strictObject({
      /** The key, or `sha256:` and its digest in hex; only the digest is kept. */
      key: z
        .string()
        .min(16, 'must be at least 16 characters, or sha256: and the key’s SHA-256 digest in hex')
        .max(1024, 'must be at most 1024 characters')
        .transform(hashApiKey),
      merchant: z.string().min(1).max(200),
      payTo: z.array(address).min(1).optional(),
    }),
  )
  .superRefine((entries, context) => {
    const seen = new Map<string, number>()
    for (const [index, entry] of entries.entries()) {
      // Refinements run on entries that failed their own checks too: `[null]` reaches here.
      if (typeof entry?.key !== 'string') continue
      const first = seen.get(entry.key)
      if (first !== undefined) context.addIssue({ code: 'custom', path: [index, 'key'], message: `is the same key as entry ${first}` })
      else seen.set(entry.key, index)
    }
  })

const access = z.strictObject({
  /** Merchant API keys: with any, /verify, /settle and /enqueue need `Authorization: Bearer <key>`. */
  apiKeys: apiKeys.optional(),
  /** Requests per API key, or per client address without keys. */
  rateLimit: z
    .strictObject({
      requestsPerSecond: z.number().positive().max(1_000_000),
      burst: z.number().int().min(1).max(1_000_000),
    })
    .optional(),
  /** Rate-limit buckets kept at most; past it the least recently used is dropped. Default 10 000. */
  maxClients: z.number().int().min(1).max(10_000_000).optional(),
})

export const schema = z.strictObject({
  port: z.number().int().min(0).max(65_535).default(4020),
  host: z.string().min(1).default('127.0.0.1'),
  networks: z.record(z.string().regex(/^eip155:\d{1,12}$/, 'must be a CAIP-2 network such as "eip155:8453"'), networkConfig).default({}),
  /** PostgreSQL; without it, PGlite keeps the data in `dataDir`. */
  databaseUrl: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  dataDir: z.string().min(1).default('.data/facilitator'),
  eip6492Factories: z.array(address).default([]),
  /** How long a settlement waits for its receipt before answering `settlement_pending`, in ms. */
  receiptTimeoutMs: z.number().int().min(100).max(600_000).optional(),
  /** How long a settlement transaction may go without a receipt before it is replaced with higher fees, in ms. */
  replaceAfterMs: z.number().int().min(100).max(600_000).optional(),
  maxBodyBytes: z
    .number()
    .int()
    .min(1024)
    .max(16 * 1024 * 1024)
    .optional(),
  /** Access credentials for offers that ask for them (`extra.grant`), signed with keys kept in the database. */
  credentials: z
    .strictObject({
      /** This service's public URL (servers fetch `<issuer>/.well-known/jwks.json`) or another identifier. */
      issuer: z.string().min(1).max(512),
      /** Lifetime of a credential whose grant has uses but no window. Default 1 hour. */
      ttlSeconds: z
        .number()
        .int()
        .min(1)
        .max(7 * 24 * 3600)
        .optional(),
      /** Longest credential lifetime; a retired key is published this long after it stops signing. Default 7 days. */
      maxTtlSeconds: z
        .number()
        .int()
        .min(60)
        .max(365 * 24 * 3600)
        .default(7 * 24 * 3600),
      algorithm: z.enum(['EdDSA', 'ES256']).default('EdDSA'),
    })
    .optional(),
  /**
   * Verification of an `exact` EIP-3009 payment without a chain call while its payer was seen funded
   * within `maxAgeBlocks` blocks (default 2); `false`: every verification reads the chain and simulates
   * the transfer. Settlement checks the chain in every case.
   */
  admission: z.union([z.literal(false), z.strictObject({ maxAgeBlocks: z.number().int().min(1).max(1_000).optional() })]).optional(),
  /** The settlement pipeline (networks with a `batcher`). */
  pipeline: z
    .strictObject({
      /** This instance's name in signer leases; keep it across restarts so a restarted instance takes its keys back at once. */
      instanceId: z.string().min(1).max(200).optional(),
      /** Most payments in one batch transaction. Default 300. */
      maxItems: z.number().int().min(1).max(2_000).optional(),
      /** How long a signer lease lasts without renewal, in ms. Default 30 s. */
      leaseMs: z.number().int().min(1_000).max(600_000).optional(),
      /** How long POST /settle waits for a queued payment's outcome, in ms. Default 60 s. */
      settleWaitMs: z.number().int().min(100).max(600_000).optional(),
      /** A signer with less native balance than this, in wei, is reported low. Default 5e15 (0.005 ETH). */
      lowBalanceWei: z
        .string()
        .regex(/^\d{1,78}$/, 'must be wei: a decimal integer string')
        .optional(),
    })
    .default({}),
  /** Refusals of payments by payer, payTo and amount, before they are verified or settled. */
  risk: risk.optional(),
  /** Who may call /verify, /settle and /enqueue, and how often. */
  access: access.optional(),
  /**
   * Fees per settled payment, kept in the ledger: `default` for every merchant, `merchants` by payTo
   * address for those with their own. A policy is `{ bps }` (0–10000), `{ fixed }` (atomic units) or
   * both, with an optional `minimum`.
   */
  fees: feesSchema.optional(),
})

export type Config = z.output<typeof schema>
/** A configuration as written: defaults may be left out. */
export type ConfigInput = z.input<typeof schema>

/** Where each setting comes from in the environment. */
export const variables = {
  port: 'X402_PORT',
  host: 'X402_HOST',
  network: 'X402_NETWORK',
  rpcUrl: 'X402_RPC_URL',
  signers: 'X402_SIGNER_KEYS',
  confirmations: 'X402_CONFIRMATIONS',
  databaseUrl: 'DATABASE_URL',
  dataDir: 'X402_DATA_DIR',
  eip6492Factories: 'X402_EIP6492_FACTORIES',
  maxBodyBytes: 'X402_MAX_BODY_BYTES',
  credentialIssuer: 'X402_CREDENTIAL_ISSUER',
  batcher: 'X402_BATCHER',
  /** `1` or `true` serves `batch-settlement` on the network of X402_NETWORK. */
  batchSettlement: 'X402_BATCH_SETTLEMENT',
  batchEscrow: 'X402_BATCH_ESCROW',
  batchCollector: 'X402_BATCH_COLLECTOR',
  batchSigner: 'X402_BATCH_SIGNER_KEY',
  instanceId: 'X402_INSTANCE_ID',
  denyListFile: 'X402_DENY_LIST_FILE',
  denyListReloadMs: 'X402_DENY_LIST_RELOAD_MS',
  /** `merchant=key` entries, comma-separated; a key may be given as `sha256:` and its digest. */
  apiKeys: 'X402_API_KEYS',
  rateLimitRequestsPerSecond: 'X402_RATE_LIMIT_RPS',
  rateLimitBurst: 'X402_RATE_LIMIT_BURST',
  config: 'X402_CONFIG',
} as const

export class ConfigError extends BaseError {
  override name = 'ConfigError'
  readonly issues: string[]
  constructor(issues: string[]) {
    super(`Invalid facilitator configuration:\n${issues.map((issue) => `  - ${issue}`).join('\n')}`, {
      code: 'invalid_config',
      hint: `Set it in the environment (${variables.network}, ${variables.rpcUrl}, ${variables.signers}, …) or in a JSON file given by --config or ${variables.config}.`,
    })
    this.issues = issues
  }
}

/**
 * Reads and checks the configuration.
 *
 * @example
 * ```ts
 * import { loadConfig, startFacilitatorService } from '@x402kit/facilitator'
 * const service = await startFacilitatorService(loadConfig())
 * ```
 */
export function loadConfig(options: { env?: Record<string, string | undefined>; argv?: readonly string[] } = {}): Config {
  const env = options.env ?? process.env
  const argv = options.argv ?? process.argv.slice(2)
  const file = configPath(argv) ?? (env[variables.config] || undefined)
  const raw = file ? readConfigFile(file) : {}
  const sources = new Map<string, string>()
  const set = (path: string, variable: string, value: unknown) => {
    raw[path] = value
    sources.set(path, variable)
  }
  const issues: string[] = []

  const scalar = { port: 'number', host: 'string', databaseUrl: 'string', dataDir: 'string', maxBodyBytes: 'number' } as const
  for (const [key, kind] of Object.entries(scalar)) {
    const value = env[variables[key as keyof typeof scalar]]
    if (value) set(key, variables[key as keyof typeof scalar], kind === 'number' ? number(value) : value)
  }
  if (env[variables.eip6492Factories]) set('eip6492Factories', variables.eip6492Factories, list(env[variables.eip6492Factories]))
  const nested = (path: [string, ...string[]], variable: string, value: unknown) => {
    let parent = raw
    for (const key of path.slice(0, -1)) parent = parent[key] = isRecord(parent[key]) ? { ...parent[key] } : {}
    parent[path.at(-1)!] = value
    sources.set(path.join('.'), variable)
  }
  const instanceId = env[variables.instanceId]
  if (instanceId) nested(['pipeline', 'instanceId'], variables.instanceId, instanceId)
  const issuer = env[variables.credentialIssuer]
  if (issuer) nested(['credentials', 'issuer'], variables.credentialIssuer, issuer)
  const denyListFile = env[variables.denyListFile]
  if (denyListFile) nested(['risk', 'denyListFile'], variables.denyListFile, denyListFile)
  const denyListReloadMs = env[variables.denyListReloadMs]
  if (denyListReloadMs) nested(['risk', 'denyListReloadMs'], variables.denyListReloadMs, number(denyListReloadMs))
  const keys = env[variables.apiKeys]
  if (keys) {
    const entries = list(keys).map((entry) => {
      const at = entry.indexOf('=')
      return { merchant: entry.slice(0, Math.max(at, 0)).trim(), key: entry.slice(at + 1).trim() }
    })
    // Only the position: the entry is a secret.
    for (const [index, entry] of entries.entries())
      if (!entry.merchant) issues.push(`${variables.apiKeys}: entry ${index + 1} must be merchant=key`)
    nested(['access', 'apiKeys'], variables.apiKeys, entries)
  }
  const requestsPerSecond = env[variables.rateLimitRequestsPerSecond]
  if (requestsPerSecond)
    nested(['access', 'rateLimit', 'requestsPerSecond'], variables.rateLimitRequestsPerSecond, decimal(requestsPerSecond))
  const burst = env[variables.rateLimitBurst]
  if (burst) nested(['access', 'rateLimit', 'burst'], variables.rateLimitBurst, number(burst))

  // Network keys may be given as version 1 names ("base"); they are stored as CAIP-2.
  const networks: Record<string, Record<string, unknown>> = {}
  if (isRecord(raw.networks))
    for (const [key, value] of Object.entries(raw.networks)) networks[caip2(key)] = value as Record<string, unknown>
  else if (raw.networks !== undefined) issues.push('networks: must be an object of CAIP-2 network to { rpcUrl, signers }')
  const network = env[variables.network]
  if (network) {
    const key = caip2(network)
    const entry = { ...networks[key] }
    const rpcUrl = env[variables.rpcUrl]
    const signers = env[variables.signers]
    const confirmations = env[variables.confirmations]
    const batcher = env[variables.batcher]
    if (batcher) entry.batcher = batcher
    if (rpcUrl) entry.rpcUrl = rpcUrl
    if (signers) entry.signers = list(signers)
    if (confirmations) entry.confirmations = number(confirmations)
    const channels = env[variables.batchSettlement]
    const channelSettings = {
      escrow: env[variables.batchEscrow],
      collector: env[variables.batchCollector],
      signer: env[variables.batchSigner],
    }
    if (channels && !/^(1|true|0|false)$/i.test(channels.trim())) issues.push(`${variables.batchSettlement} must be 1, true, 0 or false`)
    if (/^(1|true)$/i.test(channels?.trim() ?? '') || Object.values(channelSettings).some(Boolean)) {
      const batchSettlement = isRecord(entry.batchSettlement) ? { ...entry.batchSettlement } : {}
      for (const [name, value] of Object.entries(channelSettings)) if (value) batchSettlement[name] = value
      entry.batchSettlement = batchSettlement
    }
    networks[key] = entry
    sources.set(`networks.${key}.batchSettlement.escrow`, variables.batchEscrow)
    sources.set(`networks.${key}.batchSettlement.collector`, variables.batchCollector)
    sources.set(`networks.${key}.batchSettlement.signer`, variables.batchSigner)
    sources.set(`networks.${key}.rpcUrl`, variables.rpcUrl)
    sources.set(`networks.${key}.signers`, variables.signers)
    sources.set(`networks.${key}.confirmations`, variables.confirmations)
    sources.set(`networks.${key}.batcher`, variables.batcher)
    sources.set(`networks.${key}`, variables.network)
  } else
    for (const variable of [
      variables.rpcUrl,
      variables.signers,
      variables.confirmations,
      variables.batcher,
      variables.batchSettlement,
      variables.batchEscrow,
      variables.batchCollector,
      variables.batchSigner,
    ])
      if (env[variable]) issues.push(`${variable} is set, but ${variables.network} (the CAIP-2 network it is for) is not`)
  if (raw.networks !== undefined || network) raw.networks = networks

  const parsed = schema.safeParse(raw)
  if (parsed.success && issues.length === 0) return parsed.data
  for (const issue of parsed.error?.issues ?? []) issues.push(describe(issue, sources, file))
  throw new ConfigError(issues)
}

/** Checks a configuration given in code, filling in defaults. */
export function parseConfig(input: ConfigInput): Config {
  const parsed = schema.safeParse(input)
  if (parsed.success) return parsed.data
  throw new ConfigError(parsed.error.issues.map((issue) => describe(issue, new Map(), undefined)))
}

function describe(issue: z.core.$ZodIssue, sources: Map<string, string>, file: string | undefined): string {
  const path = issue.path.map(String).join('.')
  const message = issue.code === 'invalid_key' ? (issue.issues[0]?.message ?? issue.message) : issue.message
  // The most specific source: `networks.eip155:8453.signers.0` came from the signers variable.
  let source: string | undefined
  for (let prefix = path; prefix && !source; prefix = prefix.includes('.') ? prefix.slice(0, prefix.lastIndexOf('.')) : '')
    source = sources.get(prefix)
  const from = source ? ` (from ${source})` : file ? ` (in ${file})` : ''
  return `${path || 'configuration'}${from}: ${message}`
}

function configPath(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--config') {
      const next = argv[i + 1]
      if (!next || next.startsWith('--')) throw new ConfigError(['--config needs a file path'])
      return next
    }
    if (arg.startsWith('--config=')) return arg.slice('--config='.length)
  }
  return undefined
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    throw new ConfigError([`cannot read the config file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`])
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    // Only the position: the parser's message quotes the text around it, which may be a private key.
    const position = /position (\d+)/.exec((error as Error).message)?.[1]
    throw new ConfigError([`the config file ${file} is not JSON${position ? ` (at character ${position})` : ''}`])
  }
  if (!isRecord(json)) throw new ConfigError([`the config file ${file} must hold a JSON object`])
  return { ...json }
}

function caip2(network: string): string {
  return Network.find(network)?.network ?? network
}

function number(value: string): number | string {
  return /^\d+$/.test(value.trim()) ? Number(value) : value
}

function decimal(value: string): number | string {
  return /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : value
}

function list(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean)
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
