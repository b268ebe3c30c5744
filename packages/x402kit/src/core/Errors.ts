/**
 * Errors: one `BaseError` for thrown faults, and one registry of payment reason codes.
 *
 * Thrown errors are for programmer and infrastructure faults (bad config, RPC down). A payment that
 * is merely not acceptable is data: `{ isValid: false, invalidReason }` with a code from `Reason`.
 */

export type BaseErrorOptions = {
  /** Longer explanation, shown after the short message. */
  details?: string
  /** What the caller can do about it. */
  hint?: string
  /** A stable, machine-readable code. */
  code?: string
  cause?: unknown
}

/**
 * The base of every error x402kit throws.
 *
 * @example
 * ```ts
 * import { BaseError } from 'x402kit'
 * try { Money.parse('1.0000001', 6) } catch (e) { if (e instanceof BaseError) console.log(e.code) }
 * ```
 */
export class BaseError extends Error {
  override name = 'X402Error'
  readonly shortMessage: string
  readonly details: string | undefined
  readonly hint: string | undefined
  readonly code: string

  constructor(shortMessage: string, options: BaseErrorOptions = {}) {
    const lines = [shortMessage]
    if (options.details) lines.push(`Details: ${options.details}`)
    if (options.hint) lines.push(`Hint: ${options.hint}`)
    super(lines.join('\n'), options.cause === undefined ? undefined : { cause: options.cause })
    this.shortMessage = shortMessage
    this.details = options.details
    this.hint = options.hint
    this.code = options.code ?? 'x402_error'
  }
}

/** Input that could not be parsed: a header, a body, a config value. */
export class ParseError extends BaseError {
  override name = 'ParseError'
  constructor(shortMessage: string, options: BaseErrorOptions = {}) {
    super(shortMessage, { code: 'invalid_payload', ...options })
  }
}

/**
 * Every reason code x402kit emits, in one place. The strings of the reference implementation are used
 * exactly where it has them; codes for features it lacks follow its style. A shipped code never changes.
 */
export const Reason = {
  // spec-wide
  invalidNetwork: 'invalid_network',
  invalidPayload: 'invalid_payload',
  invalidPaymentRequirements: 'invalid_payment_requirements',
  invalidScheme: 'invalid_scheme',
  unsupportedScheme: 'unsupported_scheme',
  invalidX402Version: 'invalid_x402_version',
  unexpectedVerifyError: 'unexpected_verify_error',
  unexpectedSettleError: 'unexpected_settle_error',
  invalidTransactionState: 'invalid_transaction_state',
  settlementPending: 'settlement_pending',
  /** The payer's queued, unsettled value to the payee would pass the cap the seller set (`enqueue`). */
  unsettledCap: 'payer_unsettled_cap',
  /** The payment's authorization was used on chain by another transaction, which did not pay this offer. */
  authorizationUsedElsewhere: 'authorization_used_elsewhere',
  unsupportedPayloadType: 'unsupported_payload_type',
  assetNotDeployedContract: 'asset_not_deployed_contract',
  eip6492FactoryNotAllowed: 'eip6492_factory_not_allowed',
  // evm exact (EIP-3009)
  exactScheme: 'invalid_exact_evm_scheme',
  exactNetworkMismatch: 'invalid_exact_evm_network_mismatch',
  exactMissingEip712Domain: 'invalid_exact_evm_missing_eip712_domain',
  exactRecipientMismatch: 'invalid_exact_evm_recipient_mismatch',
  exactSignature: 'invalid_exact_evm_signature',
  exactValidBefore: 'invalid_exact_evm_payload_authorization_valid_before',
  exactValidAfter: 'invalid_exact_evm_payload_authorization_valid_after',
  exactAuthorizationValue: 'invalid_exact_evm_authorization_value',
  exactValueMismatch: 'invalid_exact_evm_payload_authorization_value_mismatch',
  exactUndeployedSmartWallet: 'invalid_exact_evm_payload_undeployed_smart_wallet',
  exactTransactionFailed: 'invalid_exact_evm_transaction_failed',
  exactTokenNameMismatch: 'invalid_exact_evm_token_name_mismatch',
  exactTokenVersionMismatch: 'invalid_exact_evm_token_version_mismatch',
  exactEip3009NotSupported: 'invalid_exact_evm_eip3009_not_supported',
  exactNonceAlreadyUsed: 'invalid_exact_evm_nonce_already_used',
  exactInsufficientBalance: 'invalid_exact_evm_insufficient_balance',
  exactSimulationFailed: 'invalid_exact_evm_transaction_simulation_failed',
  exactFailedToParseSignature: 'invalid_exact_evm_failed_to_parse_signature',
  exactTransferEventMismatch: 'invalid_exact_evm_transfer_event_mismatch',
  // evm batch-settlement (channels); the reference's strings, plus ours where it has none
  batchScheme: 'invalid_batch_settlement_evm_scheme',
  batchNetworkMismatch: 'invalid_batch_settlement_evm_network_mismatch',
  batchPayloadType: 'invalid_batch_settlement_evm_payload_type',
  batchMissingEip712Domain: 'invalid_batch_settlement_evm_missing_eip712_domain',
  batchChannelIdMismatch: 'invalid_batch_settlement_evm_channel_id_mismatch',
  batchReceiverMismatch: 'invalid_batch_settlement_evm_receiver_mismatch',
  batchReceiverAuthorizerMismatch: 'invalid_batch_settlement_evm_receiver_authorizer_mismatch',
  batchTokenMismatch: 'invalid_batch_settlement_evm_token_mismatch',
  batchWithdrawDelayMismatch: 'invalid_batch_settlement_evm_withdraw_delay_mismatch',
  batchVoucherSignature: 'invalid_batch_settlement_evm_voucher_signature',
  /** The voucher is lower than one the channel already accepted. */
  batchCumulativeBelowClaimed: 'invalid_batch_settlement_evm_cumulative_below_claimed',
  /** The voucher does not cover the price on top of what the channel has already been charged. */
  batchCumulativeAmountMismatch: 'invalid_batch_settlement_evm_cumulative_amount_mismatch',
  /** The voucher is above what the channel holds (under-funded). */
  batchCumulativeExceedsBalance: 'invalid_batch_settlement_evm_cumulative_exceeds_balance',
  batchChannelNotFound: 'invalid_batch_settlement_evm_channel_not_found',
  batchValidBefore: 'invalid_batch_settlement_evm_payload_authorization_valid_before',
  batchValidAfter: 'invalid_batch_settlement_evm_payload_authorization_valid_after',
  batchReceiveAuthorizationSignature: 'invalid_batch_settlement_evm_receive_authorization_signature',
  batchDepositSimulationFailed: 'invalid_batch_settlement_evm_deposit_simulation_failed',
  batchDepositTransactionFailed: 'invalid_batch_settlement_evm_deposit_transaction_failed',
  batchRpcReadFailed: 'invalid_batch_settlement_evm_rpc_read_failed',
  /** The payer has started a withdrawal: the channel takes no more vouchers (ours). */
  batchChannelClosing: 'invalid_batch_settlement_evm_channel_closing',
  /** This exact voucher was already spent (ours). */
  batchVoucherAlreadyUsed: 'invalid_batch_settlement_evm_voucher_already_used',
  batchClaimSimulationFailed: 'invalid_batch_settlement_evm_claim_simulation_failed',
  batchClaimTransactionFailed: 'invalid_batch_settlement_evm_claim_transaction_failed',
  batchSettleSimulationFailed: 'invalid_batch_settlement_evm_settle_simulation_failed',
  batchSettleTransactionFailed: 'invalid_batch_settlement_evm_settle_transaction_failed',
  batchNothingToSettle: 'invalid_batch_settlement_evm_nothing_to_settle',
  batchRefundPayload: 'invalid_batch_settlement_evm_refund_payload',
  batchRefundNoBalance: 'invalid_batch_settlement_evm_refund_no_balance',
  batchRefundSimulationFailed: 'invalid_batch_settlement_evm_refund_simulation_failed',
  batchRefundTransactionFailed: 'invalid_batch_settlement_evm_refund_transaction_failed',
  batchAuthorizerAddressMismatch: 'invalid_batch_settlement_evm_authorizer_address_mismatch',
  /** A claim row asks for more than its voucher allows (ours). */
  batchClaimExceedsVoucher: 'invalid_batch_settlement_evm_claim_exceeds_voucher',
  /** The claim batch is not signed by the channels' receiver authorizer (ours). */
  batchClaimAuthorizerSignature: 'invalid_batch_settlement_evm_claim_authorizer_signature',
  /** The refund is not signed by the channel's receiver authorizer (ours). */
  batchRefundAuthorizerSignature: 'invalid_batch_settlement_evm_refund_authorizer_signature',
  batchChannelBusy: 'invalid_batch_settlement_evm_channel_busy',
  batchDepositBelowMinDeposit: 'invalid_batch_settlement_evm_deposit_below_min_deposit',
  batchRefundAmountInvalid: 'invalid_batch_settlement_evm_refund_amount_invalid',
  /** The seller holds as many channels as it may and opens no more (ours). */
  batchChannelLimit: 'invalid_batch_settlement_evm_channel_limit',
  // evm exact with EIP-2612 permit (ours)
  permitSignature: 'invalid_exact_evm_permit_signature',
  permitSpenderMismatch: 'invalid_exact_evm_permit_spender_mismatch',
  permitValueMismatch: 'invalid_exact_evm_permit_value_mismatch',
  permitDeadline: 'invalid_exact_evm_permit_deadline',
  permitNonce: 'invalid_exact_evm_permit_nonce',
  permitNotSupported: 'invalid_exact_evm_permit_not_supported',
  // evm pay-by-transaction (ours)
  txproofSignature: 'invalid_txproof_evm_signature',
  txproofNotFound: 'invalid_txproof_evm_transaction_not_found',
  txproofReverted: 'invalid_txproof_evm_transaction_reverted',
  txproofTransferMismatch: 'invalid_txproof_evm_transfer_mismatch',
  txproofConfirmations: 'invalid_txproof_evm_insufficient_confirmations',
  txproofOutsideWindow: 'invalid_txproof_evm_outside_time_window',
  txproofAlreadyUsed: 'invalid_txproof_evm_transaction_already_used',
  // access credentials (ours)
  credentialInvalid: 'invalid_credential',
  credentialExpired: 'credential_expired',
  credentialUntrustedIssuer: 'credential_untrusted_issuer',
  credentialAlgorithm: 'credential_algorithm_not_allowed',
  credentialAudienceMismatch: 'credential_audience_mismatch',
  credentialScopeMismatch: 'credential_scope_mismatch',
  credentialUsesExhausted: 'credential_uses_exhausted',
  // resource server (ours)
  paymentRequired: 'payment_required',
  paymentHeaderTooLarge: 'payment_header_too_large',
  offerMismatch: 'payment_offer_mismatch',
  facilitatorUnavailable: 'facilitator_unavailable',
  invalidPath: 'invalid_path',
  methodOverrideRefused: 'method_override_refused',
  // facilitator risk controls (ours)
  payerDenied: 'payer_denied',
  payToDenied: 'pay_to_denied',
  paymentAmountTooLarge: 'payment_amount_too_large',
  payerRateLimited: 'payer_rate_limited',
  payerAmountLimited: 'payer_amount_limit_exceeded',
} as const

export type Reason = (typeof Reason)[keyof typeof Reason]

const known = new Set<string>(Object.values(Reason))

/** Whether a string is one of the reason codes x402kit knows. */
export function isReason(value: string): value is Reason {
  return known.has(value)
}
