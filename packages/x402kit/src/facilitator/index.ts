export {
  createFacilitator,
  type Facilitator,
  type FacilitatorConfig,
  type Observation,
  type RiskControls,
  type RiskInput,
} from './createFacilitator.ts'
export type { CredentialIssuerConfig, IssuedCredential } from './credentials.ts'
export { FacilitatorUnavailableError, type HttpFacilitatorOptions, httpFacilitator } from './http.ts'
export {
  type Batch,
  type BatchTransaction,
  type EnqueueResult,
  type Exposure,
  exposureKey,
  isQueue,
  type PaymentOutcome,
  type QueuedPayment,
  type SettlementQueue,
} from './Queue.ts'
export {
  memoryStore,
  type SettlementCondition,
  type SettlementPatch,
  type SettlementRecord,
  type SettlementStatus,
  type SettlementStore,
} from './Store.ts'
