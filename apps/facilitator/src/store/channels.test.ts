import { randomBytes, randomUUID } from 'node:crypto'
import type { Hex } from 'viem'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type ActionRecord, type BatchSettlementStore, type ChannelRecord, memoryBatchSettlementStore } from 'x402kit/evm'
import { sqlChannelStore } from './channels.ts'
import { testDatabases } from './databases.testing.ts'
import { migrate } from './sql.ts'

const hex = (bytes: number) => `0x${randomBytes(bytes).toString('hex')}` as Hex

function channel(receiver: Hex, payer: Hex, overrides: Partial<ChannelRecord> = {}): ChannelRecord {
  return {
    id: hex(32),
    network: 'eip155:31337',
    config: {
      payer,
      payerAuthorizer: payer,
      receiver,
      receiverAuthorizer: hex(20),
      token: hex(20),
      withdrawDelay: 900,
      salt: `0x${'00'.repeat(32)}`,
    },
    balance: 100_000n,
    claimed: 0n,
    charged: 3_000n,
    signedMax: 3_000n,
    signature: hex(65),
    withdrawal: 0n,
    withdrawRequestedAt: 0,
    refundNonce: 0n,
    updatedAt: Date.now(),
    ...overrides,
  }
}

function action(channelId: Hex, overrides: Partial<ActionRecord> = {}): ActionRecord {
  return {
    id: randomUUID(),
    network: 'eip155:31337',
    kind: 'claim',
    status: 'open',
    transaction: undefined,
    channels: [{ channelId, amount: 3_000n }],
    count: 1,
    amount: 0n,
    receiver: undefined,
    token: undefined,
    gasUsed: undefined,
    errorReason: undefined,
    createdAt: Date.now(),
    updatedAt: Date.now(),
    ...overrides,
  }
}

const backends: { name: string; open(): Promise<{ store: BatchSettlementStore; close(): Promise<unknown> }> }[] = [
  { name: 'memory', open: async () => ({ store: memoryBatchSettlementStore(), close: async () => {} }) },
  ...testDatabases.map((database) => ({
    name: database.name,
    async open() {
      const { db, close } = await database.open()
      await migrate(db)
      return { store: sqlChannelStore(db), close }
    },
  })),
]

for (const backend of backends)
  describe(`the batch-settlement store on ${backend.name}`, () => {
    let store: BatchSettlementStore
    let close: () => Promise<unknown>
    // Addresses unique to this run, so a shared PostgreSQL can hold earlier runs' rows.
    const receiver = hex(20)
    const payer = hex(20)
    beforeAll(async () => {
      ;({ store, close } = await backend.open())
    })
    afterAll(() => close?.())

    it('keeps a channel, and never moves its claimed total, charge or best voucher back', async () => {
      const record = channel(receiver, payer)
      await store.putChannel(record)
      expect(await store.getChannel(record.id)).toEqual(record)
      expect(await store.getChannel(record.id.toUpperCase().replace('0X', '0x') as Hex)).toEqual(record)

      const claimed = { ...record, claimed: 3_000n, balance: 90_000n, refundNonce: 1n, updatedAt: record.updatedAt + 1 }
      await store.putChannel(claimed)
      expect(await store.getChannel(record.id)).toEqual(claimed)
      if (backend.name === 'memory') return
      // An older view written late (another instance) does not undo the claim or the better voucher.
      await store.putChannel({ ...record, signedMax: 2_000n, signature: hex(65), charged: 2_000n, updatedAt: record.updatedAt + 2 })
      expect(await store.getChannel(record.id)).toMatchObject({
        claimed: 3_000n,
        charged: 3_000n,
        signedMax: 3_000n,
        signature: record.signature,
        refundNonce: 1n,
      })
    })

    it('lists channels by receiver or payer, newest first, in pages', async () => {
      const other = hex(20)
      const now = Date.now()
      const records = [0, 1, 2].map((index) => channel(receiver, index === 2 ? other : payer, { updatedAt: now + 10 + index }))
      for (const record of records) await store.putChannel(record)
      const first = await store.listChannels({ receiver, limit: 2, offset: 0 })
      expect(first.total).toBe(4)
      expect(first.items.map((item) => item.id)).toEqual([records[2]!.id, records[1]!.id])
      const second = await store.listChannels({ receiver: receiver.toUpperCase().replace('0X', '0x'), limit: 2, offset: 2 })
      expect(second.items).toHaveLength(2)
      expect((await store.listChannels({ payer: other, limit: 10, offset: 0 })).items.map((item) => item.id)).toEqual([records[2]!.id])
      expect(await store.listChannels({ receiver: hex(20), limit: 10, offset: 0 })).toEqual({ items: [], total: 0 })
    })

    it('records transactions before they are sent and finds those a stop left open', async () => {
      const target = hex(32)
      const open = action(target)
      await store.putAction(open)
      expect(await store.openActions('eip155:31337')).toContainEqual(open)
      const transaction = hex(32)
      await store.updateAction(open.id, { transaction, updatedAt: open.updatedAt + 1 })
      await store.updateAction(open.id, { status: 'confirmed', amount: 3_000n, gasUsed: 61_000n, updatedAt: open.updatedAt + 2 })
      expect((await store.openActions('eip155:31337')).map((entry) => entry.id)).not.toContain(open.id)
      const sweep = action(target, { kind: 'settle', status: 'failed', receiver, errorReason: 'x', createdAt: open.createdAt + 1 })
      await store.putAction(sweep)
      expect(await store.actions({ channelId: target, limit: 10 })).toEqual([
        { ...sweep, receiver: receiver.toLowerCase() },
        { ...open, transaction, status: 'confirmed', amount: 3_000n, gasUsed: 61_000n, updatedAt: open.updatedAt + 2 },
      ])
      expect(await store.actions({ channelId: hex(32), limit: 10 })).toEqual([])
    })
  })
