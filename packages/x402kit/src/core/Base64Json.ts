/**
 * Base64 JSON: the encoding of every x402 header (`PAYMENT-REQUIRED`, `PAYMENT-SIGNATURE`,
 * `PAYMENT-RESPONSE`, and version 1's `X-PAYMENT`). Standard base64 of UTF-8 JSON.
 *
 * Decoding checks size before any work, then base64 form, then JSON, then the schema, and each
 * failure is a `ParseError` saying which step failed.
 */
import type { z } from 'zod'
import { ParseError } from './Errors.ts'

/** Default cap on an encoded header: generous for any scheme's payload, small enough to refuse abuse. */
export const defaultMaxLength = 16 * 1024

const base64 = /^[A-Za-z0-9+/]*={0,2}$/

/** Encodes a value as base64 of its UTF-8 JSON. `bigint`s are written as decimal strings. */
export function encode(value: unknown): string {
  return Buffer.from(
    JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v)),
    'utf8',
  ).toString('base64')
}

/**
 * Decodes and validates a base64 JSON value.
 *
 * @example
 * ```ts
 * import { Base64Json, PaymentPayload } from 'x402kit'
 * const payload = Base64Json.decode(header, PaymentPayload.schema)
 * ```
 */
export function decode<schema extends z.ZodType>(
  text: string,
  schema: schema,
  options: { maxLength?: number; what?: string } = {},
): z.output<schema> {
  const what = options.what ?? 'header'
  const maxLength = options.maxLength ?? defaultMaxLength
  if (typeof text !== 'string') throw new ParseError(`The ${what} is not a string.`)
  if (text.length > maxLength)
    throw new ParseError(`The ${what} is ${text.length} characters; the limit is ${maxLength}.`, { code: 'payment_header_too_large' })
  const trimmed = text.trim()
  if (trimmed.length === 0 || trimmed.length % 4 === 1 || !base64.test(trimmed))
    throw new ParseError(`The ${what} is not base64.`, { hint: 'Encode the JSON as UTF-8, then standard base64.' })
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(trimmed, 'base64').toString('utf8'))
  } catch (cause) {
    throw new ParseError(`The ${what} is not base64 of JSON.`, { cause })
  }
  return parse(json, schema, what)
}

/** Validates an already-parsed JSON value against a schema, with a readable error. */
export function parse<schema extends z.ZodType>(json: unknown, schema: schema, what = 'value'): z.output<schema> {
  const result = schema.safeParse(json)
  if (result.success) return result.data
  const issue = result.error.issues[0]
  const where = issue?.path.length ? ` at ${issue.path.join('.')}` : ''
  throw new ParseError(`The ${what} does not match the schema${where}: ${issue?.message ?? 'invalid'}.`, { cause: result.error })
}
