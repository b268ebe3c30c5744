export * as Budget from './Budget.ts'
export { type Fetch, type PaymentEvent, PaymentSigningError, type WrapFetchConfig, wrapFetch } from './fetch.ts'
export { decodePaymentResponse, getPaymentResult, NotPaidReason, type PaymentResult } from './PaymentResult.ts'
export type { Rejection } from './select.ts'
