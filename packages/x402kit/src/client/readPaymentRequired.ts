/**
 * Reading a 402 answer (specs/transports-v2/http.md): the `PAYMENT-REQUIRED` header in version 2, or
 * the JSON body in version 1. Everything here is server input: it is size-capped and schema-checked,
 * and a failure is a message, never a throw.
 */
import { z } from 'zod'
import * as Base64Json from '../core/Base64Json.ts'
import { readBody } from '../core/Body.ts'
import { BaseError } from '../core/Errors.ts'
import { HttpHeader } from '../core/HttpHeader.ts'
import * as PaymentRequired from '../core/PaymentRequired.ts'
import * as PaymentRequirements from '../core/PaymentRequirements.ts'

/** Cap on a version 1 JSON body read for its offers or error. */
export const maxBodyLength = 64 * 1024

export type Asked =
  | {
      x402Version: 2
      offers: PaymentRequirements.PaymentRequirements[]
      resource: PaymentRequired.ResourceInfo
      extensions: Record<string, unknown> | undefined
    }
  | {
      x402Version: 1
      offers: PaymentRequirements.PaymentRequirements[]
      /** The offers as the server sent them, index for index with `offers`, to answer in version 1. */
      v1Offers: PaymentRequirements.PaymentRequirementsV1[]
    }

/** The offers of a 402, or why they could not be read. The response itself is left unread. */
export async function readPaymentRequired(response: Response): Promise<{ ok: true; asked: Asked } | { ok: false; error: string }> {
  try {
    const header = response.headers.get(HttpHeader.paymentRequired)
    if (header !== null) {
      const required = PaymentRequired.decode(header)
      return {
        ok: true,
        asked: { x402Version: 2, offers: required.accepts, resource: required.resource, extensions: required.extensions ?? undefined },
      }
    }
    const json = await readJson(response)
    if (json === undefined || typeof json !== 'object' || json === null || (json as { x402Version?: unknown }).x402Version !== 1)
      return { ok: false, error: 'The 402 has neither a PAYMENT-REQUIRED header nor a version 1 JSON body.' }
    const required = Base64Json.parse(json, PaymentRequired.schemaV1, '402 body')
    const offers: PaymentRequirements.PaymentRequirements[] = []
    const v1Offers: PaymentRequirements.PaymentRequirementsV1[] = []
    for (const v1 of required.accepts) {
      // An offer on a network without a version 2 name cannot be paid, as no scheme knows it.
      const offer = PaymentRequirements.fromV1(v1)
      if (!offer) continue
      offers.push(offer)
      v1Offers.push(v1)
    }
    return { ok: true, asked: { x402Version: 1, offers, v1Offers } }
  } catch (error) {
    return { ok: false, error: messageOf(error) }
  }
}

const withError = z.looseObject({ error: z.string().max(4096).nullish() })

/** The error a server gives with a 402 refusing a payment, from its header or version 1 body. */
export async function readServerError(response: Response): Promise<string | undefined> {
  try {
    const header = response.headers.get(HttpHeader.paymentRequired)
    if (header !== null) return Base64Json.decode(header, withError, { maxLength: 64 * 1024 }).error ?? undefined
    const json = await readJson(response)
    return json === undefined ? undefined : (withError.safeParse(json).data?.error ?? undefined)
  } catch {
    return undefined
  }
}

export function messageOf(error: unknown): string {
  if (error instanceof BaseError) return error.shortMessage
  return error instanceof Error ? error.message : String(error)
}

/** Parses the body of a copy of the response as JSON; `undefined` when empty, too long or not JSON. */
async function readJson(response: Response): Promise<unknown> {
  const text = await readText(response.clone(), maxBodyLength)
  if (!text) return undefined
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

async function readText(response: Response, limit: number): Promise<string | undefined> {
  try {
    return await readBody(response.body, limit, response.headers.get('content-length'))
  } catch {
    return undefined
  }
}

/**
 * Lets go of a body without reading it. Not awaited: cancelling one branch of a cloned (teed) body
 * settles only once the other branch is cancelled too.
 */
export function discard(response: Response): void {
  response.body?.cancel().catch(() => {})
}
