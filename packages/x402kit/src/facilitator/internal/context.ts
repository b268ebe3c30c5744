import { Reason } from '../../core/Errors.ts'
import type { Payment, SettleResponse, VerifyResponse } from '../../core/Facilitator.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import type { SchemeFacilitator } from '../../core/Scheme.ts'
import type { CredentialIssuer } from '../credentials.ts'
import type { SettlementRecord, SettlementStatus, SettlementStore } from '../Store.ts'

/** What the verify and settle steps share within one facilitator. */
export type Context = {
  route(requirements: PaymentRequirements): SchemeFacilitator | typeof Reason.unsupportedScheme | typeof Reason.invalidNetwork
  store: SettlementStore
  now(): number
  verifyTtlMs: number
  pendingWaitMs: number
  /** Settlements running in this process, by settlement key. */
  inflight: Map<string, { requirements: PaymentRequirements; result: Promise<SettleResponse> }>
  onError(error: unknown, context: { operation: 'verify' | 'settle'; key?: string }): void
  /** Checks and honours `extra.grant`: access credentials issued once a payment settles. */
  credentials: CredentialIssuer
}

export function newRecord(
  key: string,
  { requirements }: Payment,
  status: SettlementStatus,
  payer: string | null | undefined,
  now: number,
): SettlementRecord {
  return {
    key,
    network: requirements.network,
    scheme: requirements.scheme,
    payer: payer ?? undefined,
    amount: requirements.amount,
    asset: requirements.asset,
    payTo: requirements.payTo,
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
