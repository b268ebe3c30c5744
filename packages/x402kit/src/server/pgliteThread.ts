/**
 * PGlite on a worker thread. PGlite is PostgreSQL compiled to WebAssembly: in the server's own
 * thread every statement, and now and then a pause of several milliseconds for its own upkeep, stops
 * the event loop and every request waiting on it. On a thread of its own, the server only passes
 * statements and rows.
 *
 * The answer has `query(sql, params)` and so fits every store that takes a SQL database
 * (`sqlSellerChannelStore`, for one). Statements run one at a time, in the order they were sent.
 */
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { BaseError } from '../core/Errors.ts'

export type SqlThread = {
  query(sql: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>
  /** Closes the database and stops the thread; statements sent afterwards fail. */
  close(): Promise<void>
}

export class SqlThreadError extends BaseError {
  override name = 'SqlThreadError'
  /** The PostgreSQL error code (SQLSTATE), when the database gave one. */
  readonly sqlState: string | undefined
  constructor(message: string, sqlState?: string) {
    super(message, { code: 'sql_thread_error', details: sqlState && `SQLSTATE ${sqlState}` })
    this.sqlState = sqlState
  }
}

// Plain CommonJS, evaluated by the worker: it must not depend on how the host loads TypeScript.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads')
const { PGlite } = require(workerData.module)
const opened = PGlite.create(workerData.dataDir === undefined ? {} : { dataDir: workerData.dataDir })
opened.catch(() => {})
parentPort.on('message', async ({ id, sql, params, close }) => {
  try {
    const db = await opened
    if (close) {
      await db.close()
      parentPort.postMessage({ id })
      return
    }
    const { rows } = await db.query(sql, params)
    parentPort.postMessage({ id, rows })
  } catch (error) {
    parentPort.postMessage({ id, error: { message: String(error && error.message ? error.message : error), code: error && error.code } })
  }
})
`

type Pending = { resolve(rows: Record<string, unknown>[]): void; reject(error: Error): void }

/**
 * Opens PGlite on a worker thread: in `dataDir` (created if missing), or in memory without one.
 * Needs the `@electric-sql/pglite` package. Resolves once the database is open; rejects if it
 * cannot be.
 *
 * @example
 * ```ts
 * import { sqlSellerChannelStore } from 'x402kit/evm'
 * import { pgliteThread } from 'x402kit/server'
 * const db = await pgliteThread({ dataDir: '.data/seller' })
 * const store = sqlSellerChannelStore(db)
 * ```
 */
export async function pgliteThread(options: { dataDir?: string } = {}): Promise<SqlThread> {
  let module: string
  try {
    module = createRequire(import.meta.url).resolve('@electric-sql/pglite')
  } catch (cause) {
    throw new BaseError('PGlite is not installed.', { cause, hint: 'npm install @electric-sql/pglite' })
  }
  const worker = new Worker(workerSource, { eval: true, workerData: { module, dataDir: options.dataDir } })
  const pending = new Map<number, Pending>()
  let nextId = 0
  let stopped: Error | undefined

  const failAll = (error: Error) => {
    stopped ??= error
    for (const { reject } of pending.values()) reject(error)
    pending.clear()
  }
  worker.on('message', (message: { id: number; rows?: Record<string, unknown>[]; error?: { message: string; code?: unknown } }) => {
    const waiting = pending.get(message.id)
    if (!waiting) return
    pending.delete(message.id)
    if (pending.size === 0) worker.unref()
    if (message.error)
      waiting.reject(new SqlThreadError(message.error.message, typeof message.error.code === 'string' ? message.error.code : undefined))
    else waiting.resolve(message.rows ?? [])
  })
  worker.on('error', (error) => failAll(new SqlThreadError(`The database thread failed: ${error.message}`)))
  worker.on('exit', () => failAll(new SqlThreadError('The database thread has stopped.')))
  worker.unref()

  const send = (message: { sql?: string; params?: unknown[]; close?: true }) =>
    new Promise<Record<string, unknown>[]>((resolve, reject) => {
      if (stopped) return reject(stopped)
      const id = nextId++
      pending.set(id, { resolve, reject })
      // Referenced while a statement is out, so a process waiting only on the database does not end.
      worker.ref()
      worker.postMessage({ id, ...message })
    })

  let closing: Promise<void> | undefined
  const thread: SqlThread = {
    query: async (sql, params) => ({ rows: await send({ sql, params: params ?? [] }) }),
    close: () =>
      (closing ??= send({ close: true })
        .catch(() => {})
        .then(async () => {
          stopped ??= new SqlThreadError('The database is closed.')
          await worker.terminate()
        })),
  }
  try {
    await thread.query('SELECT 1')
  } catch (error) {
    await worker.terminate()
    throw error
  }
  return thread
}
