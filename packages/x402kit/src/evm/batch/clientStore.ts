/**
 * PayerChannelStore: what a payer keeps of its channels between restarts. The client writes a channel's
 * record before a voucher or deposit leaves (write-ahead), so a restarted client knows every deposit it
 * signed and the highest voucher it ever signed: it neither loses a deposit nor signs past what it owes.
 */
import { unlinkSync } from 'node:fs'
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Hex } from 'viem'
import { z } from 'zod'
import { BaseError } from '../../core/Errors.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import * as Channel from './Channel.ts'

/** A channel as its payer knows it; amounts in the token's atomic units. */
export type PayerChannelRecord = {
  id: Hex
  network: string
  escrow: Hex
  config: Channel.ChannelConfig
  /** The offer the channel was last used for, and a resource behind it (a cooperative refund is sent there). */
  offer: PaymentRequirements
  resource: string
  /** Deposited and confirmed (by the server's answer or the escrow), less what was refunded or withdrawn. */
  balance: bigint
  /** The highest voucher the payer has signed: nobody can claim more. */
  signed: bigint
  /** What the server has charged, as far as the payer has confirmed. */
  charged: bigint
  /** Claimed on chain, as last read. */
  claimed: bigint
  /** A deposit signed and sent, whose outcome is not known yet. */
  pendingDeposit?: { amount: bigint; salt: Hex; validBefore: bigint } | undefined
  /** A withdrawal started on chain: the amount and when it may be finished (seconds since the epoch). */
  withdrawal?: { amount: bigint; finalizeAfter: number } | undefined
  /** The channel was refunded or withdrawn; it is paid into again only by a new deposit. */
  closed?: boolean | undefined
}

export type PayerChannelStore = {
  get(id: Hex): Promise<PayerChannelRecord | undefined>
  /** Writes a record; when it resolves, the record survives a crash. */
  put(record: PayerChannelRecord): Promise<void>
  list(): Promise<PayerChannelRecord[]>
  delete(id: Hex): Promise<void>
}

/**
 * A store in memory: the channels are forgotten with the process (the escrow and the server still know
 * them, and the client recovers what it can from both).
 *
 * @example
 * ```ts
 * import { batchSettlementEvmClient, memoryPayerChannelStore } from 'x402kit/evm'
 * const channels = batchSettlementEvmClient(signer, { store: memoryPayerChannelStore() })
 * ```
 */
export function memoryPayerChannelStore(): PayerChannelStore {
  const records = new Map<string, string>()
  return {
    get: async (id) => {
      const json = records.get(id.toLowerCase())
      return json === undefined ? undefined : decode(json)
    },
    put: async (record) => {
      records.set(record.id.toLowerCase(), encode(record))
    },
    list: async () => [...records.values()].map(decode),
    delete: async (id) => {
      records.delete(id.toLowerCase())
    },
  }
}

export class ChannelStoreLockedError extends BaseError {
  override name = 'ChannelStoreLockedError'
  constructor(directory: string, holder: string) {
    super(`The channel store in ${directory} is in use by ${holder}.`, {
      code: 'channel_store_locked',
      hint: 'A channel store is for one process: two would sign vouchers for the same increment. Give each its own folder.',
    })
  }
}

/** Folders this process holds the lock of. */
const held = new Set<string>()

/**
 * Takes the folder's lock file (`.lock`, holding the process id) or throws `ChannelStoreLockedError`
 * when another live process holds it. A lock whose process is gone is taken over; the lock goes with
 * the process. Within one process the lock is shared: a store opened again after a restart of the
 * client (not of the process) goes on where the first left off.
 */
async function lock(directory: string): Promise<void> {
  const where = resolve(directory)
  if (held.has(where)) return
  const file = join(where, '.lock')
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await open(file, 'wx')
      try {
        await handle.writeFile(String(process.pid))
        await handle.sync()
      } finally {
        await handle.close()
      }
      held.add(where)
      process.once('exit', () => {
        try {
          unlinkSync(file)
        } catch {}
      })
      return
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const pid = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10)
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid))
      throw new ChannelStoreLockedError(directory, `process ${pid}`)
    // Left by a process that is gone (a process id reused by this one included): taken over.
    await unlink(file).catch(() => {})
  }
  throw new ChannelStoreLockedError(directory, 'a process racing for it')
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * A store in a folder, one JSON file per channel. A write goes to a temporary file that is flushed to
 * disk (fsync), renamed over the old one and the folder flushed: a crash leaves the old record or the
 * new one, never a torn one. The folder is locked to one process (`.lock`): a store on it in another
 * process fails with `ChannelStoreLockedError` rather than sign a voucher for the same increment.
 *
 * @example
 * ```ts
 * import { batchSettlementEvmClient, filePayerChannelStore } from 'x402kit/evm'
 * const channels = batchSettlementEvmClient(signer, { store: filePayerChannelStore('./.x402/channels') })
 * ```
 */
export function filePayerChannelStore(directory: string): PayerChannelStore {
  let ready: Promise<unknown> | undefined
  const folder = () => (ready ??= mkdir(directory, { recursive: true }).then(() => lock(directory)))
  const path = (id: Hex) => join(directory, `${id.toLowerCase()}.json`)
  let sequence = 0
  return {
    async get(id) {
      await folder()
      try {
        return decode(await readFile(path(id), 'utf8'))
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        throw error
      }
    },
    async put(record) {
      await folder()
      const target = path(record.id)
      const temporary = `${target}.${process.pid}.${sequence++}.tmp`
      const file = await open(temporary, 'w')
      try {
        await file.writeFile(encode(record))
        await file.sync()
      } finally {
        await file.close()
      }
      await rename(temporary, target)
      const dir = await open(directory, 'r')
      try {
        await dir.sync()
      } finally {
        await dir.close()
      }
    },
    async list() {
      await folder()
      const names = (await readdir(directory)).filter((name) => /^0x[0-9a-f]{64}\.json$/.test(name))
      return Promise.all(names.map(async (name) => decode(await readFile(join(directory, name), 'utf8'))))
    },
    async delete(id) {
      await folder()
      await unlink(path(id)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error
      })
    },
  }
}

const atomic = z
  .string()
  .regex(/^\d{1,78}$/)
  .transform((value) => BigInt(value))
const hex = z.string().regex(/^0x[0-9a-fA-F]*$/) as unknown as z.ZodType<Hex>

const stored = z.object({
  id: hex,
  network: z.string(),
  escrow: hex,
  config: Channel.channelConfig,
  offer: z.looseObject({
    scheme: z.string(),
    network: z.string(),
    amount: z.string(),
    asset: z.string(),
    payTo: z.string(),
    maxTimeoutSeconds: z.number(),
    extra: z.record(z.string(), z.unknown()).optional(),
  }),
  resource: z.string(),
  balance: atomic,
  signed: atomic,
  charged: atomic,
  claimed: atomic,
  pendingDeposit: z.object({ amount: atomic, salt: hex, validBefore: atomic }).optional(),
  withdrawal: z.object({ amount: atomic, finalizeAfter: z.number() }).optional(),
  closed: z.boolean().optional(),
})

function encode(record: PayerChannelRecord): string {
  return JSON.stringify(record, (_, value) => (typeof value === 'bigint' ? value.toString() : value))
}

function decode(json: string): PayerChannelRecord {
  return stored.parse(JSON.parse(json)) as PayerChannelRecord
}
