import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { BaseError } from './Errors.ts'
import * as Money from './Money.ts'

describe('Money.parse', () => {
  it.each([
    ['$0.001', 6, 1000n],
    ['0.001', 6, 1000n],
    ['$1', 6, 1_000_000n],
    ['1.5', 6, 1_500_000n],
    [' $2.25 ', 6, 2_250_000n],
    ['1_000', 2, 100_000n],
    ['0', 6, 0n],
    ['0.000001', 6, 1n],
    ['123456789.123456789012345678', 18, 123456789123456789012345678n],
    [0.001, 6, 1000n],
    [0.1, 18, 100000000000000000n],
    [1234n, 6, 1234n],
    [{ atomic: '1000' }, 6, 1000n],
    [{ atomic: 7n }, 6, 7n],
  ] as const)('parses %s with %i decimals', (price, decimals, atomic) => {
    expect(Money.parse(price as Money.Price, decimals)).toBe(atomic)
  })

  it.each([
    ['0.0000001', 6, /has 7 decimals; the asset has 6/],
    ['$', 6, /Invalid amount/],
    ['', 6, /Invalid amount/],
    ['-1', 6, /Invalid amount/],
    ['1e3', 6, /Invalid amount/],
    ['0x10', 6, /Invalid amount/],
    ['1.2.3', 6, /Invalid amount/],
    ['NaN', 6, /Invalid amount/],
    ['１', 6, /Invalid amount/],
    [Number.NaN, 6, /Invalid amount/],
    [Number.POSITIVE_INFINITY, 6, /Invalid amount/],
    [-0.5, 6, /Invalid amount/],
    [1e-7, 6, /Invalid amount/],
    [-5n, 6, /Negative amount/],
    [2n ** 256n, 6, /exceeds uint256/],
    [{ atomic: '1.5' }, 6, /Invalid atomic amount/],
    [{ atomic: '-1' }, 6, /Invalid atomic amount/],
    ['1', 78, /Invalid decimals/],
    ['1', 1.5, /Invalid decimals/],
  ] as const)('refuses %s with %s decimals', (price, decimals, message) => {
    expect(() => Money.parse(price as Money.Price, decimals)).toThrow(message)
  })

  it('errors carry a stable code and a hint', () => {
    try {
      Money.parse('0.0000001', 6)
      expect.unreachable()
    } catch (error) {
      expect(error).toBeInstanceOf(BaseError)
      expect((error as BaseError).code).toBe('invalid_amount')
      expect((error as BaseError).hint).toMatch(/atomic units/)
    }
  })
})

describe('Money.format', () => {
  it.each([
    [1000n, 6, '0.001'],
    [1_000_000n, 6, '1'],
    [1_500_000n, 6, '1.5'],
    [0n, 6, '0'],
    [1n, 18, '0.000000000000000001'],
    [-1500n, 3, '-1.5'],
    [42n, 0, '42'],
  ] as const)('formats %s with %i decimals', (atomic, decimals, text) => {
    expect(Money.format(atomic, decimals)).toBe(text)
  })
})

describe('Money properties', () => {
  it('format then parse is the identity for any amount and precision', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 256n - 1n }), fc.integer({ min: 0, max: 30 }), (atomic, decimals) => {
        expect(Money.parse(Money.format(atomic, decimals), decimals)).toBe(atomic)
        expect(Money.parse(`$${Money.format(atomic, decimals)}`, decimals)).toBe(atomic)
      }),
    )
  })

  it('garbage never crashes: it parses or throws a BaseError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.double(), fc.bigInt(), fc.anything()), fc.integer({ min: -2, max: 80 }), (input, decimals) => {
        try {
          const value = Money.parse(input as Money.Price, decimals)
          expect(typeof value).toBe('bigint')
          expect(value >= 0n).toBe(true)
        } catch (error) {
          expect(error).toBeInstanceOf(BaseError)
        }
      }),
      { numRuns: 2000 },
    )
  })
})

describe('Money.apportion', () => {
  it('splits an amount so the parts sum to it exactly, the remainder to the first parts', () => {
    expect(Money.apportion(100n, 3)).toEqual([34n, 33n, 33n])
    expect(Money.apportion(101n, 3)).toEqual([34n, 34n, 33n])
    expect(Money.apportion(2n, 5)).toEqual([1n, 1n, 0n, 0n, 0n])
    expect(Money.apportion(0n, 2)).toEqual([0n, 0n])
    expect(Money.apportion(21_000n, 1)).toEqual([21_000n])
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 128n }), fc.integer({ min: 1, max: 500 }), (total, parts) => {
        const shares = Money.apportion(total, parts)
        expect(shares).toHaveLength(parts)
        expect(shares.reduce((sum, share) => sum + share, 0n)).toBe(total)
        expect(shares[0]! - shares.at(-1)! <= 1n).toBe(true)
      }),
    )
  })

  it('refuses what cannot be split', () => {
    expect(() => Money.apportion(100n, 0)).toThrow(BaseError)
    expect(() => Money.apportion(100n, 1.5)).toThrow(BaseError)
    expect(() => Money.apportion(-1n, 2)).toThrow(BaseError)
  })
})
