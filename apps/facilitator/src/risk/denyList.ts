/**
 * Deny lists of addresses the facilitator refuses to verify or settle for: a file the operator edits
 * (taken up without a restart) and a `deny_list` table shared by every instance on one database.
 * Addresses compare case-insensitively: both are kept in lower case.
 */
import { type BigIntStats, readFileSync, statSync } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { BaseError } from 'x402kit'
import type { Queryable } from '../store/sql.ts'

/** The `deny_list` table; `migrations` in store/sql.ts applies it as version 6. */
export const denyListMigration = `
  CREATE TABLE deny_list (
    address text PRIMARY KEY,
    reason text,
    created_at timestamptz NOT NULL DEFAULT now()
  );`

/**
 * Reads a deny list: one address a line with `#` comments, or a JSON array of addresses.
 * Throws on anything else, so that a half-written file never replaces a good list.
 *
 * @example
 * ```ts
 * parseDenyList('0xAbC…  # exploit, 2025-01-02\n') // Set { '0xabc…' }
 * ```
 */
export function parseDenyList(text: string): Set<string> {
  const trimmed = text.trim()
  const entries: unknown[] = trimmed.startsWith('[')
    ? parseJsonList(trimmed)
    : trimmed.split('\n').map((line) => line.replace(/#.*/, '').trim())
  const addresses = new Set<string>()
  for (const [index, entry] of entries.entries()) {
    if (entry === '') continue
    if (typeof entry !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(entry))
      throw new BaseError(`The deny list's entry ${index + 1} is not an address.`, {
        code: 'invalid_deny_list',
        hint: 'Write one address (0x and 40 hex digits) a line, with # before comments, or a JSON array of addresses.',
      })
    addresses.add(entry.toLowerCase())
  }
  return addresses
}

function parseJsonList(text: string): unknown[] {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new BaseError('The deny list starts with [ but is not a JSON array.', { code: 'invalid_deny_list' })
  }
  if (!Array.isArray(json)) throw new BaseError('The deny list is not a JSON array.', { code: 'invalid_deny_list' })
  return json
}

/**
 * Reads a deny-list file now, then again whenever its modification time, size or inode changes
 * (checked every `intervalMs`, so an editor's save-by-rename is seen too). A file that cannot be read
 * or parsed later, or is empty, keeps the last good list and goes to `onError`; one that cannot at start throws.
 *
 * @example
 * ```ts
 * const file = watchDenyListFile('/etc/x402/deny.txt', { onError: console.error })
 * file.list().has('0xabc…')
 * file.close()
 * ```
 */
export function watchDenyListFile(
  path: string,
  options: { intervalMs?: number; onError?: (error: unknown) => void; onChange?: (list: ReadonlySet<string>) => void } = {},
): { list(): ReadonlySet<string>; close(): void } {
  const { intervalMs = 1_000, onError = () => {}, onChange = () => {} } = options
  let list: ReadonlySet<string>
  let seen: string
  try {
    // The version before the text: a change between the two is read again at the first check.
    seen = version(statSync(path, { bigint: true }))
    list = parseDenyList(readFileSync(path, 'utf8'))
  } catch (error) {
    throw new BaseError(`The deny-list file ${path} cannot be used.`, {
      code: 'invalid_deny_list',
      details: error instanceof BaseError ? error.shortMessage : ((error as NodeJS.ErrnoException).code ?? String(error)),
      cause: error,
    })
  }
  let checking = false
  let failing: string | undefined

  async function check() {
    if (checking) return
    checking = true
    try {
      const current = version(await stat(path, { bigint: true }))
      if (current !== seen || failing) {
        seen = current
        const text = await readFile(path, 'utf8')
        // An empty file is most often one being rewritten (truncated, not yet written), not a cleared list.
        if (text.length === 0)
          throw new BaseError('The deny-list file is empty; to clear the list, write a comment or [].', { code: 'invalid_deny_list' })
        list = parseDenyList(text)
        failing = undefined
        onChange(list)
      }
    } catch (error) {
      // Reported once per distinct failure, not every interval while the file stays broken.
      const key = error instanceof BaseError ? error.shortMessage : ((error as NodeJS.ErrnoException).code ?? String(error))
      if (key !== failing)
        onError(
          new BaseError(`The deny-list file ${path} cannot be reloaded; the last good list stays.`, {
            code: 'invalid_deny_list',
            details: key,
            cause: error,
          }),
        )
      failing = key
    } finally {
      checking = false
    }
  }

  const timer = setInterval(check, intervalMs)
  timer.unref()
  return { list: () => list, close: () => clearInterval(timer) }
}

function version(stats: BigIntStats): string {
  return `${stats.mtimeNs}:${stats.ctimeNs}:${stats.size}:${stats.ino}`
}

/**
 * Adds an address to the database deny list (or changes its reason). Every instance takes it up at
 * its next reload.
 *
 * @example
 * ```ts
 * import { addDenied } from './risk/denyList.ts'
 * await addDenied(database, '0xAbC…', 'chargeback fraud, ticket 1234')
 * ```
 */
export async function addDenied(db: Queryable, address: string, reason?: string): Promise<void> {
  await db.query(
    `INSERT INTO deny_list (address, reason, created_at) VALUES ($1, $2, now())
     ON CONFLICT (address) DO UPDATE SET reason = EXCLUDED.reason`,
    [normalize(address), reason ?? null],
  )
}

/** Removes an address from the database deny list; answers whether it was there. */
export async function removeDenied(db: Queryable, address: string): Promise<boolean> {
  const { rows } = await db.query('DELETE FROM deny_list WHERE address = $1 RETURNING address', [normalize(address)])
  return rows.length > 0
}

/** Every address on the database deny list, in lower case. */
export async function loadDenied(db: Queryable): Promise<Set<string>> {
  const { rows } = await db.query('SELECT address FROM deny_list')
  return new Set(rows.map((row) => String(row.address).toLowerCase()))
}

function normalize(address: string): string {
  if (!/^0x[0-9a-fA-F]{40}$/.test(address))
    throw new BaseError('A deny-list entry must be an address: 0x and 40 hex digits.', { code: 'invalid_deny_list' })
  return address.toLowerCase()
}
