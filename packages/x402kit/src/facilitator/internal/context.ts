import { keccak256, stringToBytes } from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { Payment, SettleResponse, VerifyResponse } from '../../core/Facilitator.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import type { SchemeFacilitator } from '../../core/Scheme.ts'
import type { RiskControls, RiskInput } from '../createFacilitator.ts'
import type { CredentialIssuer } from '../credentials.ts'
import type { SettlementQueue } from '../Queue.ts'
import type { SettlementRecord, SettlementStatus, SettlementStore } from '../Store.ts'

/** What the verify and settle steps share within one facilitator. */
export type Context = {
  route(requirements: PaymentRequirements): SchemeFacilitator | typeof Reason.unsupportedScheme | typeof Reason.invalidNetwork
  store: SettlementStore
  now(): number
  verifyTtlMs: number
  pendingWaitMs: number
  /** Settlements running in this process, by settlement key. */
  inflight: Map<string, { requirements: PaymentRequirements; payloadHash: string; result: Promise<SettleResponse> }>
  onError(error: unknown, context: { operation: 'verify' | 'settle'; key?: string }): void
  /** Checks and honours `extra.grant`: access credentials issued once a payment settles. */
  credentials: CredentialIssuer
  /** The store as a settlement queue, when it is one: payments a scheme's pipeline accepts are settled through it. */
  queue: SettlementQueue | undefined
  /** How long a settle waits for a queued payment's outcome before answering `settlement_pending`. */
  settleWaitMs: number
  /** Requests waiting for a queued payment's outcome, by settlement key. */
  waiters: Map<string, Set<() => void>>
  /** Risk controls, asked before a valid payment is accepted. */
  risk: RiskControls | undefined
  /** Keys this process verified and reserved lately, oldest first: their settlement skips straight to the queue. */
  verified: Set<string>
  /** Tells the pipeline of a network that a payment was queued. */
  wake(scheme: SchemeFacilitator, network: string): void
}

export function newRecord(
  key: string,
  payment: Payment,
  status: SettlementStatus,
  payer: string | null | undefined,
  now: number,
): SettlementRecord {
  const { requirements } = payment
  return {
    key,
    network: requirements.network,
    scheme: requirements.scheme,
    payer: payer ?? undefined,
    amount: requirements.amount,
    asset: requirements.asset,
    payTo: requirements.payTo,
    payloadHash: payloadHash(payment),
    status,
    createdAt: now,
    updatedAt: now,
  }
}

// EVM addresses compare case-insensitively; other chains' addresses (base58) do not.
const hex = /^0x[0-9a-fA-F]*$/
const same = (a: string, b: string) => a === b || (hex.test(a) && hex.test(b) && a.toLowerCase() === b.toLowerCase())

/**
 * Whether a payment asks for the money movement a record (or another request) describes. A stored
 * result is only ever handed to a request for the same offer, never to the same authorization
 * presented against a different one.
 */
export function sameOffer(record: Pick<SettlementRecord, 'scheme' | 'network' | 'amount' | 'asset' | 'payTo'>, offer: PaymentRequirements) {
  return (
    record.scheme === offer.scheme &&
    record.network === offer.network &&
    record.amount === offer.amount &&
    same(record.asset, offer.asset) &&
    same(record.payTo, offer.payTo)
  )
}

/** Digests already taken, by payload object: one request asks for its payload's digest several times. */
const digests = new WeakMap<object, string>()

/**
 * A digest of the scheme payload, over its JSON with keys in a fixed order. A payment handed to the
 * facilitator is not changed afterwards (the HTTP handler parses a fresh one per request), so the
 * digest of a payload object is taken once.
 */
export function payloadHash(payment: Payment): string {
  const payload = payment.payload.payload
  if (payload === null || typeof payload !== 'object') return keccak256(stringToBytes(canonical(payload)))
  let digest = digests.get(payload)
  if (digest === undefined) {
    digest = keccak256(stringToBytes(canonical(payload)))
    digests.set(payload, digest)
  }
  return digest
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`
  if (value !== null && typeof value === 'object')
    return `{${Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonical((value as Record<string, unknown>)[key])}`)
      .join(',')}}`
  return JSON.stringify(value) ?? 'null'
}

/** Whether a payment is the one a record (or a running settlement) holds: the same offer and the same payload. */
export function samePayment(
  held: Pick<SettlementRecord, 'scheme' | 'network' | 'amount' | 'asset' | 'payTo' | 'payloadHash'>,
  payment: Payment,
) {
  return held.payloadHash !== undefined && held.payloadHash === payloadHash(payment) && sameOffer(held, payment.requirements)
}

export function invalid(invalidReason: string, invalidMessage?: string, payer?: string): VerifyResponse {
  return { isValid: false, invalidReason, ...(invalidMessage && { invalidMessage }), ...(payer && { payer }) }
}

export function failure(errorReason: string, network: string, errorMessage?: string, payer?: string): SettleResponse {
  return { success: false, errorReason, ...(errorMessage && { errorMessage }), ...(payer && { payer }), transaction: '', network }
}

/** The answer to a payment whose key is already taken. */
export const alreadyUsed = {
  reason: Reason.exactNonceAlreadyUsed,
  message: 'This authorization has already been verified or settled.',
}

/**
 * Asks the risk controls about a valid payment: the refusal's reason and message, or `undefined` to
 * accept it. A payment whose payer the scheme could not name is screened by its payee and amount.
 */
export async function screen(context: Context, payment: Payment, payer: string | null | undefined) {
  if (!context.risk) return undefined
  const { payTo, asset, network, amount } = payment.requirements
  const input: RiskInput = { payer: payer ?? '', payTo, asset, network, amount: BigInt(amount) }
  const refusal = await context.risk.screen(input)
  return refusal ? { refusal, input } : { input }
}

/** Tells the risk controls a payment was accepted (for their per-payer counts). */
export function accepted(context: Context, input: RiskInput | undefined) {
  if (input) context.risk?.accepted?.(input)
}
