/**
 * The database behind the store: PostgreSQL when a URL is given (instances share it), else PGlite,
 * PostgreSQL compiled to WebAssembly running in this process with its data in a local folder.
 */
import { mkdirSync } from 'node:fs'
import { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import type { Transactional } from './sql.ts'

export type Database = Transactional & {
  readonly kind: 'postgres' | 'pglite'
  close(): Promise<void>
}

/**
 * Opens PostgreSQL at `databaseUrl`, or PGlite in `dataDir` (one process at a time per folder).
 *
 * @example
 * ```ts
 * import { migrate, openDatabase, sqlStore } from '@x402kit/facilitator'
 * const db = await openDatabase({ dataDir: '.data/facilitator' })
 * await migrate(db)
 * const store = sqlStore(db)
 * ```
 */
export async function openDatabase(options: { databaseUrl?: string | undefined; dataDir?: string | undefined }): Promise<Database> {
  if (options.databaseUrl) {
    const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 10, connectionTimeoutMillis: 5_000 })
    // An idle client losing its connection is reported here; without a listener it would end the process.
    pool.on('error', () => {})
    let ended: Promise<void> | undefined
    return {
      kind: 'postgres',
      query: (sql, params) => pool.query(sql, params),
      async transaction(run) {
        const client = await pool.connect()
        let broken = false
        try {
          await client.query('BEGIN')
          const result = await run({ query: (sql, params) => client.query(sql, params) })
          await client.query('COMMIT')
          return result
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {
            broken = true
          })
          throw error
        } finally {
          // A connection that could not even roll back is not handed to the next caller.
          client.release(broken)
        }
      },
      close: () => (ended ??= pool.end()),
    }
  }
  let db: PGlite
  if (options.dataDir) {
    mkdirSync(options.dataDir, { recursive: true })
    db = await PGlite.create(options.dataDir)
  } else db = await PGlite.create()
  let closed: Promise<void> | undefined
  return {
    kind: 'pglite',
    query: (sql, params) => db.query(sql, params),
    transaction: (run) => db.transaction((tx) => run({ query: (sql, params) => tx.query(sql, params) })),
    close: () => (closed ??= db.close()),
  }
}
