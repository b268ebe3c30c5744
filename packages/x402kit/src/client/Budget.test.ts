import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Network from '../core/Network.ts'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import * as Budget from './Budget.ts'

const baseUsdc = '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913'
const unknownToken = '0x1111111111111111111111111111111111111111'

function offer(amount: string, asset = baseUsdc, network = 'eip155:8453'): PaymentRequirements {
  return { scheme: 'exact', network, amount, asset, payTo: '0x2222222222222222222222222222222222222222', maxTimeoutSeconds: 60 }
}

describe('Budget.from', () => {
  it('compares dollars exactly at the asset precision', () => {
    const budget = Budget.from({ perRequest: '$0.05' })
    expect(budget.check(offer('50000'))).toEqual({ ok: true, usd: { amount: 50000n, decimals: 6 } })
    expect(budget.check(offer('50001'))).toMatchInlineSnapshot(`
      {
        "message": "The offer costs $0.050001; the limit per request is $0.05.",
        "ok": false,
        "reason": "over_budget",
      }
    `)
  })

  it.each([['0.05'], [0.05], [' $0.050 ']])('reads %j as five cents', (perRequest) => {
    const budget = Budget.from({ perRequest })
    expect(budget.check(offer('50000')).ok).toBe(true)
    expect(budget.check(offer('50001')).ok).toBe(false)
  })

  it('looks up the asset case-insensitively and by version 1 network name', () => {
    const budget = Budget.from({ perRequest: '$1' })
    expect(budget.check(offer('1', baseUsdc.toLowerCase())).ok).toBe(true)
    expect(budget.check(offer('1', baseUsdc, 'base')).ok).toBe(true)
  })

  it('never pays an asset it cannot value without a limit in atomic units', () => {
    const budget = Budget.from({ perRequest: '$100' })
    expect(budget.check(offer('1', unknownToken))).toMatchObject({ ok: false, reason: 'asset_not_in_budget' })
    // USDC's address on Base means nothing on another chain.
    expect(budget.check(offer('1', baseUsdc, 'eip155:999999'))).toMatchObject({ ok: false, reason: 'asset_not_in_budget' })
  })

  it('pays other assets within `perRequestAtomic`, by address or by network and address', () => {
    const byAddress = Budget.from({ perRequestAtomic: { [unknownToken.toUpperCase().replace('0X', '0x')]: '1000' } })
    expect(byAddress.check(offer('1000', unknownToken))).toEqual({ ok: true, usd: undefined })
    expect(byAddress.check(offer('1001', unknownToken))).toMatchObject({ ok: false, reason: 'over_budget' })
    expect(byAddress.check(offer('1000', unknownToken, 'eip155:1'))).toMatchObject({ ok: true })

    const byNetwork = Budget.from({ perRequestAtomic: { [`eip155:8453/${unknownToken}`]: 10n } })
    expect(byNetwork.check(offer('10', unknownToken))).toMatchObject({ ok: true })
    expect(byNetwork.check(offer('10', unknownToken, 'eip155:1'))).toMatchObject({ ok: false, reason: 'asset_not_in_budget' })
  })

  it('applies both limits where both apply', () => {
    const budget = Budget.from({ perRequest: '$1', perRequestAtomic: { [baseUsdc]: '500' } })
    expect(budget.check(offer('500')).ok).toBe(true)
    expect(budget.check(offer('501'))).toMatchObject({ ok: false, reason: 'over_budget' })
  })

  it('values extra assets given to it, and only dollar stablecoins in dollars', () => {
    const assets = [
      { network: 'eip155:31337', address: unknownToken, decimals: 18, symbol: 'USDS' },
      { network: 'eip155:31337', address: baseUsdc, decimals: 18, symbol: 'WETH' },
    ]
    const budget = Budget.from({ perRequest: '$0.05' }, { assets })
    expect(budget.check(offer('50000000000000000', unknownToken, 'eip155:31337')).ok).toBe(true)
    expect(budget.check(offer('50000000000000001', unknownToken, 'eip155:31337')).ok).toBe(false)
    expect(budget.check(offer('1', baseUsdc, 'eip155:31337'))).toMatchObject({ ok: false, reason: 'asset_not_in_budget' })
  })

  it('sees assets registered after it was made', () => {
    const address = '0x3333333333333333333333333333333333333333'
    const budget = Budget.from({ perRequest: '$0.01' })
    expect(budget.check(offer('1', address, 'eip155:31337')).ok).toBe(false)
    Network.registerAsset('eip155:31337', 31337, { address, name: 'USDC', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' })
    expect(budget.check(offer('10000', address, 'eip155:31337')).ok).toBe(true)
  })

  it.each([
    ['no limit', {}, /sets no limit/],
    ['a dollar amount that does not parse', { perRequest: '$abc' }, /not an amount of dollars/],
    ['a bigint in dollars', { perRequest: 5n }, /in dollars/],
    ['atomic units in dollars', { perRequest: { atomic: '5' } }, /in dollars/],
    ['a fraction of an atomic unit', { perRequestAtomic: { [baseUsdc]: '0.5' } }, /not an amount of atomic units/],
  ])('refuses %s', (_, limits, message) => {
    expect(() => Budget.from(limits as Budget.Limits)).toThrow(message)
  })

  it('pays exactly the offers at or under the limit', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 10n ** 12n }), fc.bigInt({ min: 0n, max: 10n ** 12n }), (cents, amount) => {
        const budget = Budget.from({ perRequest: `$${cents / 100n}.${String(cents % 100n).padStart(2, '0')}` })
        expect(budget.check(offer(String(amount))).ok).toBe(amount <= cents * 10_000n)
      }),
    )
  })
})

describe('Budget.compare', () => {
  it('compares across decimals', () => {
    expect(Budget.compare({ amount: 1n, decimals: 0 }, { amount: 1_000_000n, decimals: 6 })).toBe(0)
    expect(Budget.compare({ amount: 10n ** 16n + 1n, decimals: 18 }, { amount: 10_000n, decimals: 6 })).toBe(1)
    expect(Budget.compare({ amount: 9_999n, decimals: 6 }, { amount: 10n ** 16n, decimals: 18 })).toBe(-1)
  })
})
