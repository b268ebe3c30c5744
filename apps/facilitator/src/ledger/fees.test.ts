import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FeeError, feeFor, feesSchema, policyFor } from './fees.ts'

const merchant = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'

describe('feeFor', () => {
  it('takes nothing without a policy or at 0 bps', () => {
    expect(feeFor(1_000_000n, undefined)).toBe(0n)
    expect(feeFor(1_000_000n, { bps: 0 })).toBe(0n)
    expect(feeFor(0n, { bps: 250 })).toBe(0n)
  })

  it('takes the whole amount at 10000 bps', () => {
    expect(feeFor(1_000_000n, { bps: 10_000 })).toBe(1_000_000n)
    expect(feeFor(1n, { bps: 10_000 })).toBe(1n)
  })

  it('rounds the bps share half up, to the nearest atomic unit', () => {
    expect(feeFor(1_000_000n, { bps: 250 })).toBe(25_000n)
    // 1 × 4999 / 10000 = 0.4999 → 0; 1 × 5000 / 10000 = 0.5 → 1; 3 × 5000 / 10000 = 1.5 → 2
    expect(feeFor(1n, { bps: 4_999 })).toBe(0n)
    expect(feeFor(1n, { bps: 5_000 })).toBe(1n)
    expect(feeFor(3n, { bps: 5_000 })).toBe(2n)
    expect(feeFor(149n, { bps: 100 })).toBe(1n) // 1.49
    expect(feeFor(150n, { bps: 100 })).toBe(2n) // 1.5
    expect(feeFor(2n ** 256n - 1n, { bps: 1 })).toBe(((2n ** 256n - 1n) * 1n + 5_000n) / 10_000n)
  })

  it('adds a fixed fee to the share, raises it to the minimum, and never takes more than the amount', () => {
    expect(feeFor(1_000_000n, { fixed: '10000' })).toBe(10_000n)
    expect(feeFor(1_000_000n, { bps: 100, fixed: '10000' })).toBe(20_000n)
    expect(feeFor(5_000n, { fixed: '10000' })).toBe(5_000n)
    expect(feeFor(1_000n, { bps: 10, minimum: '50' })).toBe(50n)
    expect(feeFor(20n, { bps: 10, minimum: '50' })).toBe(20n)
    expect(feeFor(1_000_000n, { bps: 10, minimum: '50' })).toBe(1_000n)
  })

  it('stays between 0 and the amount, and grows with the amount', () => {
    const policy = fc.record(
      { bps: fc.integer({ min: 0, max: 10_000 }), fixed: fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String) },
      { requiredKeys: ['bps'] },
    )
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 256n - 1n }), fc.bigInt({ min: 0n, max: 10n ** 20n }), policy, (amount, more, p) => {
        const fee = feeFor(amount, p)
        expect(fee >= 0n && fee <= amount).toBe(true)
        expect(feeFor(amount + more, p) >= fee).toBe(true)
      }),
    )
  })

  it('refuses a policy or an amount it cannot use', () => {
    expect(() => feeFor(-1n, { bps: 1 })).toThrow(FeeError)
    expect(() => feeFor(1n, { bps: 1.5 })).toThrow(/1\.5 basis points/)
    expect(() => feeFor(1n, { bps: 10_001 })).toThrow(FeeError)
    expect(() => feeFor(1n, { fixed: '0.5' })).toThrow(/fixed fee/)
  })
})

describe('policyFor', () => {
  const fees = feesSchema.parse({ default: { bps: 100 }, merchants: { [merchant]: { fixed: '500' } } })

  it('gives a merchant its own policy, in place of the default, whatever the case of its address', () => {
    expect(fees.merchants).toEqual({ [merchant.toLowerCase()]: { fixed: '500' } })
    expect(policyFor(fees, merchant)).toEqual({ fixed: '500' })
    expect(policyFor(fees, merchant.toUpperCase().replace('0X', '0x'))).toEqual({ fixed: '500' })
    expect(feeFor(1_000_000n, policyFor(fees, merchant))).toBe(500n)
  })

  it('gives other merchants the default, and none without one', () => {
    expect(policyFor(fees, `0x${'1'.repeat(40)}`)).toEqual({ bps: 100 })
    expect(policyFor({ merchants: fees.merchants }, `0x${'1'.repeat(40)}`)).toBeUndefined()
    expect(policyFor(undefined, merchant)).toBeUndefined()
  })
})
