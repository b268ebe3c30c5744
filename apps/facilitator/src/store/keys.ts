/**
 * The credential signing keys, kept in the database beside the settlement records: a restart keeps
 * the key that signed the credentials already out, and every instance sharing the database signs
 * with the same key and publishes the same key set. Whoever can read this table can mint
 * credentials, as whoever can write `payments` can forge settlements: the database is the secret.
 */
import type { Algorithm, CredentialKey } from 'x402kit/credential'
import { generateCredentialKey } from 'x402kit/credential'
import type { Queryable } from './sql.ts'

/** The migration that creates the table (see `migrations` in `sql.ts`). */
export const credentialKeysMigration = `
  CREATE TABLE credential_keys (
    position bigserial NOT NULL,
    kid text PRIMARY KEY,
    alg text NOT NULL,
    private_jwk jsonb NOT NULL,
    public_jwk jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    retired_at timestamptz
  );`

/**
 * The keys, oldest first, so that instances starting together on an empty table all sign with the
 * first key written; one is generated and written when there is none that signs. Keys retired more
 * than `maxTtlSeconds` (and a minute) ago, whose credentials have all expired, are deleted.
 */
export async function loadCredentialKeys(
  db: Queryable,
  options: { algorithm?: Algorithm; maxTtlSeconds: number; now?: number },
): Promise<CredentialKey[]> {
  const now = options.now ?? Date.now()
  await db.query('DELETE FROM credential_keys WHERE retired_at < $1', [new Date(now - options.maxTtlSeconds * 1000 - 60_000)])
  let keys = await readKeys(db)
  if (keys.some((key) => key.retiredAt === undefined)) return keys
  const key = await generateCredentialKey(options.algorithm, now)
  await insert(db, key)
  keys = await readKeys(db)
  return keys
}

/** Retires every key that signs and makes `key` the one that does, in one statement. */
export async function rotateCredentialKeys(db: Queryable, key: CredentialKey, at = Date.now()): Promise<void> {
  await db.query(
    `WITH retired AS (UPDATE credential_keys SET retired_at = $6 WHERE retired_at IS NULL)
     INSERT INTO credential_keys (kid, alg, private_jwk, public_jwk, created_at) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)
     ON CONFLICT (kid) DO NOTHING`,
    [...values(key).slice(0, 5), new Date(at)],
  )
}

async function insert(db: Queryable, key: CredentialKey): Promise<void> {
  await db.query(
    `INSERT INTO credential_keys (kid, alg, private_jwk, public_jwk, created_at, retired_at)
     VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6) ON CONFLICT (kid) DO NOTHING`,
    values(key),
  )
}

function values(key: CredentialKey): unknown[] {
  return [
    key.kid,
    key.alg,
    JSON.stringify(key.privateJwk),
    JSON.stringify(key.publicJwk),
    new Date(key.createdAt),
    key.retiredAt === undefined ? null : new Date(key.retiredAt),
  ]
}

async function readKeys(db: Queryable): Promise<CredentialKey[]> {
  const { rows } = await db.query('SELECT kid, alg, private_jwk, public_jwk, created_at, retired_at FROM credential_keys ORDER BY position')
  return rows.map((row) => ({
    kid: row.kid as string,
    alg: row.alg as Algorithm,
    privateJwk: row.private_jwk as CredentialKey['privateJwk'],
    publicJwk: row.public_jwk as CredentialKey['publicJwk'],
    createdAt: (row.created_at as Date).getTime(),
    retiredAt: row.retired_at ? (row.retired_at as Date).getTime() : undefined,
  }))
}
