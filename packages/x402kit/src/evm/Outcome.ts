/**
 * Outcome: how the EVM mechanisms report a check. Every check ends in `Failure` (a reason code, data)
 * or its own success; `verifyResponse` turns either, or an infrastructure fault, into the wire answer,
 * so a scheme's `verify` never throws.
 */
import { BaseError as ViemBaseError } from 'viem'
import { Reason } from '../core/Errors.ts'
import type { VerifyResponse } from '../core/Facilitator.ts'

export type Failure = { ok: false; reason: Reason; message?: string; payer?: string }

export function fail(reason: Reason, payer?: string, message?: string): Failure {
  return { ok: false, reason, ...(payer !== undefined && { payer }), ...(message !== undefined && { message }) }
}

/** An error's message, without the stack, short enough to answer with (viem's own short form where it has one). */
export function messageOf(error: unknown): string {
  if (error instanceof ViemBaseError) return (error.details ? `${error.shortMessage} ${error.details}` : error.shortMessage).slice(0, 1000)
  return (error instanceof Error ? error.message : String(error)).slice(0, 1000)
}

/** Runs a check and answers as `/verify` does; a fault of the chain or the node is `unexpected_verify_error`. */
export async function verifyResponse(check: () => Promise<Failure | { ok: true; payer: string }>, payer?: string): Promise<VerifyResponse> {
  try {
    const result = await check()
    if (result.ok) return { isValid: true, payer: result.payer }
    return {
      isValid: false,
      invalidReason: result.reason,
      ...(result.message !== undefined && { invalidMessage: result.message }),
      ...(result.payer !== undefined && { payer: result.payer }),
    }
  } catch (error) {
    return {
      isValid: false,
      invalidReason: Reason.unexpectedVerifyError,
      invalidMessage: messageOf(error),
      ...(payer !== undefined && { payer }),
    }
  }
}
