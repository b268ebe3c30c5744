/**
 * The databases a store suite runs on: PGlite in a fresh folder always, and PostgreSQL when
 * `DATABASE_URL` names one (CI starts one). Each opens one connection and closes what it made.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Database, openDatabase } from './database.ts'

export type TestDatabase = { name: string; open(): Promise<{ db: Database; close(): Promise<unknown> }> }

export const testDatabases: TestDatabase[] = [
  {
    name: 'PGlite',
    async open() {
      const dir = await mkdtemp(join(tmpdir(), 'x402-store-'))
      const db = await openDatabase({ dataDir: dir })
      return { db, close: () => db.close().then(() => rm(dir, { recursive: true, force: true })) }
    },
  },
  ...(process.env.DATABASE_URL
    ? [
        {
          name: 'PostgreSQL',
          async open() {
            const db = await openDatabase({ databaseUrl: process.env.DATABASE_URL })
            return { db, close: () => db.close() }
          },
        },
      ]
    : []),
]
