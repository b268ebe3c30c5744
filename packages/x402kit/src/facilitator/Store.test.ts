import { describe, expect, it } from 'vitest'
import { memoryStore, type SettlementRecord } from './Store.ts'

const record = (key: string, now = 1_000): SettlementRecord => ({
  key,
  network: 'eip155:8453',
  scheme: 'exact',
  payer: '0xpayer',
  amount: '1000',
  asset: '0xasset',
  payTo: '0xpayto',
  status: 'verified',
  createdAt: now,
  updatedAt: now,
})

describe('memoryStore', () => {
  it('reserves a key once and answers the holder afterwards', async () => {
    const store = memoryStore()
    expect(await store.reserve('a', record('a'))).toBeUndefined()
    expect(await store.reserve('a', { ...record('a'), payer: '0xother' })).toEqual(record('a'))
    expect(await store.get('a')).toEqual(record('a'))
    expect(await store.get('b')).toBeUndefined()
  })

  it('lets exactly one of concurrent reservations win', async () => {
    const store = memoryStore()
    const results = await Promise.all(Array.from({ length: 50 }, () => store.reserve('k', record('k'))))
    expect(results.filter((result) => result === undefined)).toHaveLength(1)
  })

  it('updates only where the condition holds, keeping key and createdAt', async () => {
    const store = memoryStore()
    await store.reserve('a', record('a'))
    expect(await store.update('a', { status: 'settling' }, { status: 'settled' })).toBeUndefined()
    expect(await store.update('a', { status: 'settling', updatedAt: 2_000 }, { status: 'verified', updatedBefore: 1_000 })).toBeUndefined()
    expect(await store.update('a', { status: 'settling', updatedAt: 2_000 }, { status: 'verified', updatedBefore: 1_001 })).toMatchObject({
      status: 'settling',
      updatedAt: 2_000,
      createdAt: 1_000,
    })
    const result = { success: true, transaction: '0xabc', network: 'eip155:8453' }
    expect(await store.update('a', { status: 'settled', transaction: '0xabc', result })).toMatchObject({ status: 'settled', result })
    expect(await store.update('missing', { status: 'failed' })).toBeUndefined()
  })

  it('answers copies, so callers cannot change what is stored', async () => {
    const store = memoryStore()
    await store.reserve('a', record('a'))
    const copy = await store.get('a')
    copy!.status = 'settled'
    expect((await store.get('a'))?.status).toBe('verified')
  })

  it('drops finished records after the retention, but never a settling one', async () => {
    let now = 0
    const store = memoryStore({ retentionMs: 1_000, now: () => now })
    await store.reserve('settled', { ...record('settled', 0), status: 'settled' })
    await store.reserve('settling', { ...record('settling', 0), status: 'settling' })
    now = 5_000
    for (let i = 0; i < 1024; i++) await store.reserve(`filler${i}`, record(`filler${i}`, now))
    expect(await store.get('settled')).toBeUndefined()
    expect(await store.get('settling')).toMatchObject({ status: 'settling' })
    expect(await store.get('filler0')).toBeDefined()
  })
})
