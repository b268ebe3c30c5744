/**
 * Logs: one JSON line per event on stdout, `{"time","level","msg",...fields}`, and request ids with
 * one access line per HTTP request. Secrets never reach a line: fields named like keys, secrets,
 * tokens, authorization or RPC URLs are redacted, and every URL in a string is cut to its origin, as
 * RPC providers put API keys in the path or the query and database URLs carry passwords.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { randomUUID } from 'node:crypto'
import { ConfigError } from './config.ts'

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

export type Logger = {
  readonly level: LogLevel
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
  /** A logger that adds `fields` to each of its lines. */
  child(fields: Record<string, unknown>): Logger
}

export type LoggerOptions = {
  /** The least severe level written. Default `info`. */
  level?: LogLevel
  /** Takes each line, without its newline. Default: stdout. */
  write?: (line: string) => void
  /** Fields on every line. */
  base?: Record<string, unknown>
}

const severity = { debug: 10, info: 20, warn: 30, error: 40 } as const satisfies Record<LogLevel, number>
const reserved = new Set(['time', 'level', 'msg'])

/**
 * Creates a logger of JSON lines.
 *
 * @example
 * ```ts
 * import { createLogger, logLevel } from './log.ts'
 * const logger = createLogger({ level: logLevel() })
 * logger.child({ network: 'eip155:8453' }).warn('signer balance low', { address, balanceWei: 10n ** 15n })
 * // {"time":"2025-01-01T00:00:00.000Z","level":"warn","msg":"signer balance low","network":"eip155:8453",...}
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? 'info'
  const write = options.write ?? ((line: string) => process.stdout.write(`${line}\n`))
  const stack = level === 'debug'
  const make = (base: Record<string, unknown>): Logger => {
    const log = (at: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
      if (severity[at] < severity[level]) return
      const line: Record<string, unknown> = { time: new Date().toISOString(), level: at, msg: scrub(msg) }
      for (const source of [base, fields ?? {}])
        for (const [name, value] of Object.entries(source)) {
          if (reserved.has(name)) continue
          line[name] = isSecretName(name) ? redacted : clean(value, { stack, seen: new WeakSet(), depth: 0 })
        }
      try {
        write(JSON.stringify(line))
      } catch {
        // A logger that throws would turn a log line into an outage.
      }
    }
    return {
      level,
      debug: log('debug'),
      info: log('info'),
      warn: log('warn'),
      error: log('error'),
      child: (fields) => make({ ...base, ...fields }),
    }
  }
  return make(options.base ?? {})
}

/** The level set by `LOG_LEVEL` (`debug`, `info`, `warn` or `error`), `info` when unset. */
export function logLevel(env: Record<string, string | undefined> = process.env): LogLevel {
  const value = env.LOG_LEVEL?.trim().toLowerCase()
  if (!value) return 'info'
  if (value in severity) return value as LogLevel
  throw new ConfigError([`LOG_LEVEL: must be one of ${Object.keys(severity).join(', ')}`])
}

const requests = new AsyncLocalStorage<Logger>()

/**
 * Wraps a fetch handler: each request gets an id (its `X-Request-Id` when sane, else a new one), echoed
 * in the response's `X-Request-Id`, and one access line once answered: method, path, status, ms and
 * request id, never a body, a query or a header. Paths in `quiet` (probes, scrapes) log at `debug`
 * unless they fail. Within the handler, `requestLogger` gives a logger carrying the request id.
 *
 * @example
 * ```ts
 * import { serve } from '@hono/node-server'
 * serve({ fetch: logRequests(facilitator.handler, logger, { quiet: ['/health', '/metrics'] }) })
 * ```
 */
export function logRequests(
  handler: (request: Request) => Response | Promise<Response>,
  logger: Logger,
  options: { quiet?: readonly string[] } = {},
): (request: Request) => Promise<Response> {
  const quiet = new Set(options.quiet)
  return async (request) => {
    const started = performance.now()
    const requestId = requestIdOf(request.headers.get('x-request-id'))
    const log = logger.child({ requestId })
    let response: Response
    try {
      response = await requests.run(log, () => handler(request))
    } catch (error) {
      log.error('request failed', { error })
      response = new Response(
        JSON.stringify({ type: 'about:blank', title: 'Internal Server Error', status: 500, code: 'internal_error', requestId }),
        { status: 500, headers: { 'content-type': 'application/problem+json' } },
      )
    }
    response = withHeader(response, 'x-request-id', requestId)
    const path = pathOf(request.url)
    const at = response.status >= 500 ? 'error' : quiet.has(path) && response.status < 400 ? 'debug' : 'info'
    log[at]('request', {
      method: request.method,
      path,
      status: response.status,
      ms: Math.round((performance.now() - started) * 10) / 10,
    })
    return response
  }
}

/** The logger of the request being answered (with its `requestId`), else `fallback`. */
export function requestLogger(fallback: Logger): Logger {
  return requests.getStore() ?? fallback
}

function requestIdOf(header: string | null): string {
  return header && /^[A-Za-z0-9._-]{1,128}$/.test(header) ? header : randomUUID()
}

function pathOf(url: string): string {
  try {
    return new URL(url).pathname
  } catch {
    return '/'
  }
}

function withHeader(response: Response, name: string, value: string): Response {
  try {
    response.headers.set(name, value)
    return response
  } catch {
    // Immutable headers (a response passed through from `fetch`): copy it.
    const copy = new Response(response.body, response)
    copy.headers.set(name, value)
    return copy
  }
}

const redacted = '[redacted]'
const maxString = 4096
const maxDepth = 6

/** Names whose values are never logged: keys, secrets, tokens, credentials in headers, RPC and database URLs. */
function isSecretName(name: string): boolean {
  const plain = name.toLowerCase().replace(/[^a-z0-9]/g, '')
  return /keys?$|secret|passw|passphrase|token|authori[sz]ation|cookie|mnemonic|rpcurl|databaseurl|^signers$|^xpayment$|paymentsignature|^dsn$/.test(
    plain,
  )
}

/** Cuts every URL in `text` to its origin: credentials, path, query and fragment may each hold a secret. */
function scrub(text: string): string {
  const short = text.length > maxString ? `${text.slice(0, maxString)}…` : text
  return short.replace(/\b([a-z][a-z0-9+.-]*):\/\/[^\s"'<>(){}[\]]+/gi, (match, scheme: string) => {
    // Punctuation that ends a sentence ends the URL too.
    const [, link = match, end = ''] = /^(.*?)([.,;:!?]*)$/s.exec(match) ?? []
    try {
      const url = new URL(link)
      const rest = url.pathname.replace(/^\/$/, '') || url.search || url.hash
      return `${url.protocol}//${url.host}${rest ? '/…' : ''}${end}`
    } catch {
      return `${scheme}://${redacted}${end}`
    }
  })
}

type Walk = { stack: boolean; seen: WeakSet<object>; depth: number }

function clean(value: unknown, walk: Walk): unknown {
  switch (typeof value) {
    case 'string':
      return scrub(value)
    case 'bigint':
      return value.toString()
    case 'number':
    case 'boolean':
      return value
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined
  }
  if (value === null) return null
  const object = value as object
  if (object instanceof Date) return Number.isNaN(object.getTime()) ? null : object.toISOString()
  if (object instanceof URL) return scrub(object.href)
  if (walk.seen.has(object)) return '[circular]'
  if (walk.depth >= maxDepth) return '[…]'
  walk.seen.add(object)
  const inner = { ...walk, depth: walk.depth + 1 }
  try {
    if (object instanceof Error) return errorFields(object, inner)
    if (Array.isArray(object)) return object.slice(0, 100).map((item) => clean(item, inner))
    const entries = object instanceof Headers || object instanceof Map ? [...object.entries()] : Object.entries(object)
    const fields: Record<string, unknown> = {}
    for (const [name, item] of entries) fields[String(name)] = isSecretName(String(name)) ? redacted : clean(item, inner)
    return fields
  } finally {
    walk.seen.delete(object)
  }
}

/** Name, message and code; the stack only when logging at `debug`; the cause likewise. Never other properties. */
function errorFields(error: Error, walk: Walk): Record<string, unknown> {
  const { code } = error as { code?: unknown }
  return {
    name: scrub(String(error.name)),
    message: scrub(String(error.message)),
    ...((typeof code === 'string' || typeof code === 'number') && { code }),
    ...(walk.stack && error.stack && { stack: scrub(error.stack) }),
    ...(error.cause !== undefined && { cause: clean(error.cause, walk) }),
  }
}
