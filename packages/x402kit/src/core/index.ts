export * as Base64Json from './Base64Json.ts'
export { BaseError, isReason, ParseError, Reason } from './Errors.ts'
export type { EnqueueOptions, FacilitatorClient, Payment, SettleResponse, SupportedResponse, VerifyResponse } from './Facilitator.ts'
export * as Facilitator from './Facilitator.ts'
export { HttpHeader } from './HttpHeader.ts'
export type { Price } from './Money.ts'
export * as Money from './Money.ts'
export type { Asset } from './Network.ts'
export * as Network from './Network.ts'
export * as PaymentPayload from './PaymentPayload.ts'
export * as PaymentRequired from './PaymentRequired.ts'
export * as PaymentRequirements from './PaymentRequirements.ts'
export type {
  PipelineEvent,
  PipelineHooks,
  PipelineWorkers,
  SchemeClient,
  SchemeFacilitator,
  SchemePipeline,
  SchemeServer,
} from './Scheme.ts'
