import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { pgliteThread, type SqlThread, SqlThreadError } from './pgliteThread.ts'

const open: SqlThread[] = []
afterEach(async () => {
  for (const db of open.splice(0)) await db.close()
})

async function start(options?: { dataDir?: string }) {
  const db = await pgliteThread(options)
  open.push(db)
  return db
}

describe('PGlite on a worker thread', () => {
  it('runs statements with parameters and answers rows, exact for numbers past 2^53', async () => {
    const db = await start()
    await db.query('CREATE TABLE t (id text PRIMARY KEY, amount numeric(78, 0) NOT NULL)')
    const big = (2n ** 200n + 7n).toString()
    await db.query('INSERT INTO t SELECT * FROM unnest($1::text[], $2::numeric[])', [
      ['a', 'b'],
      ['1', big],
    ])
    const { rows } = await db.query('SELECT id, amount::text FROM t WHERE amount > $1 ORDER BY id', ['0'])
    expect(rows).toEqual([
      { id: 'a', amount: '1' },
      { id: 'b', amount: big },
    ])
  })

  it('runs statements in the order they were sent', async () => {
    const db = await start()
    await db.query('CREATE TABLE log (at serial PRIMARY KEY, value int NOT NULL)')
    await Promise.all(Array.from({ length: 50 }, (_, value) => db.query('INSERT INTO log (value) VALUES ($1)', [value])))
    const { rows } = await db.query('SELECT value FROM log ORDER BY at')
    expect(rows.map((row) => row.value)).toEqual(Array.from({ length: 50 }, (_, value) => value))
  })

  it('turns a database error into a SqlThreadError with its SQLSTATE, and goes on serving', async () => {
    const db = await start()
    await db.query('CREATE TABLE u (id text PRIMARY KEY)')
    await db.query("INSERT INTO u VALUES ('x')")
    const duplicate = await db.query("INSERT INTO u VALUES ('x')").catch((error: unknown) => error)
    expect(duplicate).toBeInstanceOf(SqlThreadError)
    expect((duplicate as SqlThreadError).sqlState).toBe('23505')
    await expect(db.query('SELEC 1')).rejects.toMatchObject({ sqlState: '42601' })
    expect((await db.query('SELECT count(*)::int AS n FROM u')).rows).toEqual([{ n: 1 }])
  })

  it('keeps what was written in its data directory across a close and a reopen', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'x402kit-pglite-thread-'))
    try {
      const first = await pgliteThread({ dataDir })
      await first.query('CREATE TABLE kept (value text)')
      await first.query("INSERT INTO kept VALUES ('still here')")
      await first.close()
      await expect(first.query('SELECT 1')).rejects.toThrow(SqlThreadError)
      const second = await start({ dataDir })
      expect((await second.query('SELECT value FROM kept')).rows).toEqual([{ value: 'still here' }])
    } finally {
      await rm(dataDir, { recursive: true, force: true })
    }
  })

  it('refuses to open where the data directory cannot be made', async () => {
    await expect(pgliteThread({ dataDir: '/proc/x402kit-not-writable' })).rejects.toThrow()
  })
})
