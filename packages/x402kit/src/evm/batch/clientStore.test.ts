import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import * as Channel from './Channel.ts'
import {
  ChannelStoreLockedError,
  filePayerChannelStore,
  memoryPayerChannelStore,
  type PayerChannelRecord,
  type PayerChannelStore,
} from './clientStore.ts'

const config: Channel.ChannelConfig = {
  payer: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
  payerAuthorizer: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
  receiver: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC',
  receiverAuthorizer: '0x90F79bf6EB2c4f870365E785982E1f101E93b906',
  token: '0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0',
  withdrawDelay: 900,
  salt: `0x${'00'.repeat(32)}`,
}

const record = (overrides: Partial<PayerChannelRecord> = {}): PayerChannelRecord => ({
  id: Channel.id(config, 31337),
  network: 'eip155:31337',
  escrow: Channel.escrowAddress,
  config,
  offer: {
    scheme: 'batch-settlement',
    network: 'eip155:31337',
    amount: '1000',
    asset: config.token,
    payTo: config.receiver,
    maxTimeoutSeconds: 300,
    extra: { name: 'USD Coin', version: '2', receiverAuthorizer: config.receiverAuthorizer },
  },
  resource: 'http://127.0.0.1/quote',
  balance: 1_000_000n,
  signed: 7_000n,
  charged: 6_000n,
  claimed: 0n,
  pendingDeposit: { amount: 5n * 10n ** 30n, salt: `0x${'ab'.repeat(32)}`, validBefore: 1_900_000_000n },
  ...overrides,
})

describe.each([
  ['memory', async () => memoryPayerChannelStore()],
  ['file', async () => filePayerChannelStore(await mkdtemp(join(tmpdir(), 'channel-store-')))],
] as [string, () => Promise<PayerChannelStore>][])('%s channel store', (_, create) => {
  it('keeps amounts exactly, returns copies, lists and deletes', async () => {
    const store = await create()
    const written = record()
    await store.put(written)
    written.signed = 999n // a later change in memory is not in the store until it is put
    expect(await store.get(record().id)).toEqual(record())
    expect(await store.get(record().id.toUpperCase().replace('0X', '0x') as never)).toEqual(record())
    await store.put(record({ signed: 8_000n, pendingDeposit: undefined }))
    expect(await store.list()).toEqual([record({ signed: 8_000n, pendingDeposit: undefined })])
    await store.delete(record().id)
    expect(await store.get(record().id)).toBeUndefined()
    expect(await store.list()).toEqual([])
  })
})

describe('file channel store', () => {
  it('writes through a temporary file and leaves only the record', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'channel-store-'))
    const store = filePayerChannelStore(directory)
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.put(record({ signed: BigInt(i) }))))
    expect((await readdir(directory)).sort()).toEqual(['.lock', `${record().id}.json`])
    expect(JSON.parse(await readFile(join(directory, `${record().id}.json`), 'utf8')).balance).toBe('1000000')
  })

  it('ignores a temporary file a crash left behind, and refuses a record that does not parse', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'channel-store-'))
    const store = filePayerChannelStore(directory)
    await store.put(record())
    await writeFile(join(directory, `${record().id}.json.123.0.tmp`), '{"torn":')
    expect(await store.list()).toEqual([record()])
    await writeFile(join(directory, `${record().id}.json`), '{"id":"0x12"}')
    await expect(store.get(record().id)).rejects.toThrow()
  })

  it('is refused while another live process holds its folder, writing nothing, and taken over once that process is gone', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'channel-store-'))
    const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
    try {
      await writeFile(join(directory, '.lock'), String(other.pid))
      const store = filePayerChannelStore(directory)
      const refused = await store.put(record()).catch((error: unknown) => error)
      expect(refused).toBeInstanceOf(ChannelStoreLockedError)
      expect((refused as ChannelStoreLockedError).message).toContain(`process ${other.pid}`)
      await expect(store.list()).rejects.toThrow(ChannelStoreLockedError)
      expect(await readdir(directory)).toEqual(['.lock'])
    } finally {
      other.kill('SIGKILL')
      await once(other, 'exit')
    }
    // The holder is gone: a new store takes the folder over and writes.
    const store = filePayerChannelStore(directory)
    await store.put(record())
    expect(await store.list()).toEqual([record()])
    expect(await readFile(join(directory, '.lock'), 'utf8')).toBe(String(process.pid))
  })
})
