/**
 * Money: exact conversion between human amounts and atomic units.
 *
 * `"$0.001"`, `"0.001"`, `0.001` (a JS number, converted through its shortest decimal string) and
 * atomic units (`bigint`, or `{ atomic: "1000" }`) all become a `bigint` of the asset's smallest unit.
 * Parsing never goes through floating point, and more decimals than the asset has is an error, not
 * a silent rounding.
 */
import { BaseError } from './Errors.ts'

export type Price = string | number | bigint | { atomic: string | bigint }

export class MoneyError extends BaseError {
  override name = 'MoneyError'
  constructor(shortMessage: string, hint?: string) {
    super(shortMessage, { code: 'invalid_amount', hint })
  }
}

const decimalPattern = /^(\d{1,78})(?:\.(\d{1,78}))?$/
const atomicPattern = /^\d{1,78}$/
const maxUint256 = 2n ** 256n - 1n

/**
 * Parses a price into atomic units of an asset with `decimals` decimals.
 *
 * @example
 * ```ts
 * import { Money } from 'x402kit'
 * Money.parse('$0.001', 6) // 1000n
 * Money.parse({ atomic: '1000' }, 6) // 1000n
 * ```
 */
export function parse(price: Price, decimals: number): bigint {
  if (!Number.isInteger(decimals) || decimals < 0 || decimals > 77)
    throw new MoneyError(`Invalid decimals ${decimals}.`, 'Decimals must be an integer from 0 to 77.')
  if (typeof price === 'bigint') return checkRange(price, String(price))
  if (typeof price === 'object' && price !== null && 'atomic' in price) return parseAtomic(price.atomic)
  if (typeof price === 'number') {
    if (!Number.isFinite(price) || price < 0) throw new MoneyError(`Invalid amount ${price}.`)
    // String(n) is the shortest decimal that round-trips; exponent forms are refused below.
    return parseDecimal(String(price), decimals, String(price))
  }
  if (typeof price !== 'string') throw new MoneyError(`Invalid amount of type ${typeof price}.`)
  const trimmed = price.trim()
  const text = trimmed.startsWith('$') ? trimmed.slice(1) : trimmed
  return parseDecimal(text.replaceAll('_', ''), decimals, price)
}

/** Parses a decimal string of atomic units, as on the wire (`amount`, `value`). */
export function parseAtomic(value: string | bigint): bigint {
  if (typeof value === 'bigint') return checkRange(value, String(value))
  if (typeof value !== 'string' || !atomicPattern.test(value))
    throw new MoneyError(`Invalid atomic amount "${String(value).slice(0, 80)}".`, 'Use a decimal string of digits.')
  return checkRange(BigInt(value), value)
}

function parseDecimal(text: string, decimals: number, original: string): bigint {
  const match = decimalPattern.exec(text)
  if (!match) throw new MoneyError(`Invalid amount "${original.slice(0, 80)}".`, 'Use a form like "$0.001", "0.001" or { atomic: "1000" }.')
  const whole = match[1] ?? '0'
  const fraction = match[2] ?? ''
  if (fraction.length > decimals)
    throw new MoneyError(
      `Amount "${original.slice(0, 80)}" has ${fraction.length} decimals; the asset has ${decimals}.`,
      'Round the price to the asset precision, or give atomic units.',
    )
  return checkRange(BigInt(whole + fraction.padEnd(decimals, '0')), original)
}

function checkRange(value: bigint, original: string): bigint {
  if (value < 0n) throw new MoneyError(`Negative amount ${original.slice(0, 80)}.`)
  if (value > maxUint256) throw new MoneyError(`Amount ${original.slice(0, 80)} exceeds uint256.`)
  return value
}

/**
 * Formats atomic units as a decimal string, without trailing zeros.
 *
 * @example
 * ```ts
 * Money.format(1000n, 6) // '0.001'
 * ```
 */
export function format(atomic: bigint, decimals: number): string {
  const negative = atomic < 0n
  const digits = (negative ? -atomic : atomic).toString().padStart(decimals + 1, '0')
  const whole = digits.slice(0, digits.length - decimals)
  const fraction = digits.slice(digits.length - decimals).replace(/0+$/, '')
  return `${negative ? '-' : ''}${whole}${fraction ? `.${fraction}` : ''}`
}

/**
 * Splits `total` atomic units into `parts` whole shares that add up to it exactly: the first
 * `total % parts` shares take one unit more. Used to share one transaction's gas among its payments.
 *
 * @example
 * ```ts
 * Money.apportion(100n, 3) // [34n, 33n, 33n]
 * ```
 */
export function apportion(total: bigint, parts: number): bigint[] {
  if (!Number.isSafeInteger(parts) || parts < 1)
    throw new MoneyError(`An amount is shared among 1 or more parts, not ${parts}.`, 'Pass a whole number of parts.')
  if (total < 0n) throw new MoneyError(`A shared amount is 0 or more, not ${total}.`, 'Pass a non-negative amount.')
  const share = total / BigInt(parts)
  const remainder = Number(total % BigInt(parts))
  return Array.from({ length: parts }, (_, index) => (index < remainder ? share + 1n : share))
}
