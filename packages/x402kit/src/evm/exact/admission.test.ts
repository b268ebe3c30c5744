import type { Address } from 'viem'
import { describe, expect, it } from 'vitest'
import { admissionOf, admitFromCache, admitFromRead, ended } from './admission.ts'
import type { NetworkState } from './state.ts'

const asset = '0x036CbD53842c5426634e7929541eC2318f3dCF7e' as Address
const payer = '0x1111111111111111111111111111111111111111' as Address

function admission(maxAgeBlocks = 2) {
  return admissionOf({} as NetworkState, { maxAgeBlocks })!
}

describe('admission from a cached balance', () => {
  it('admits against a balance read fewer than maxAgeBlocks blocks ago, never past it', () => {
    const state = admission(2)
    admitFromRead(state, { asset, payer, value: 10n, key: 'a', balance: 100n, block: 7n })
    expect(admitFromCache(state, { asset, payer, value: 10n, key: 'b', head: 7n })).toBe(true)
    expect(admitFromCache(state, { asset, payer, value: 10n, key: 'c', head: 8n })).toBe(true)
    expect(admitFromCache(state, { asset, payer, value: 10n, key: 'd', head: 9n })).toBe(false)
    // No head known, or a payer never read: the chain is read.
    expect(admitFromCache(state, { asset, payer, value: 10n, key: 'e', head: undefined })).toBe(false)
    expect(admitFromCache(state, { asset, payer: asset, value: 10n, key: 'f', head: 7n })).toBe(false)
  })

  it('counts every pending payment of the payer against the balance, to the last atomic unit', () => {
    const state = admission()
    admitFromRead(state, { asset, payer, value: 40n, key: 'a', balance: 100n, block: 1n })
    expect(admitFromCache(state, { asset, payer, value: 40n, key: 'b', head: 1n })).toBe(true)
    expect(admitFromCache(state, { asset, payer, value: 21n, key: 'c', head: 1n })).toBe(false)
    expect(admitFromCache(state, { asset, payer, value: 20n, key: 'c', head: 1n })).toBe(true)
    expect(admitFromCache(state, { asset, payer, value: 1n, key: 'd', head: 1n })).toBe(false)
  })

  it('a payment pending when the balance was read counts against it; one that settled later still does', () => {
    const state = admission()
    admitFromRead(state, { asset, payer, value: 60n, key: 'a', balance: 100n, block: 1n })
    // Read again while `a` is unmined: the new balance has not paid it yet.
    admitFromRead(state, { asset, payer, value: 30n, key: 'b', balance: 100n, block: 2n })
    expect(admitFromCache(state, { asset, payer, value: 11n, key: 'c', head: 2n })).toBe(false)
    // `a` settles: the balance read at block 2 still holds its 60, so it still counts there.
    ended(state, 'a')
    expect(admitFromCache(state, { asset, payer, value: 11n, key: 'c', head: 2n })).toBe(false)
    expect(admitFromCache(state, { asset, payer, value: 10n, key: 'c', head: 2n })).toBe(true)
    // A balance read after it ended counts only what is still pending (b and c).
    admitFromRead(state, { asset, payer, value: 5n, key: 'd', balance: 40n, block: 3n })
    expect(admitFromCache(state, { asset, payer, value: 1n, key: 'e', head: 3n })).toBe(false)
  })

  it('a payment that ended here is never admitted again from cache', () => {
    const state = admission()
    admitFromRead(state, { asset, payer, value: 1n, key: 'a', balance: 100n, block: 1n })
    ended(state, 'a')
    expect(admitFromCache(state, { asset, payer, value: 1n, key: 'a', head: 1n })).toBe(false)
  })

  it('is off with `admission: false`', () => {
    expect(admissionOf({} as NetworkState, false)).toBeUndefined()
  })
})
