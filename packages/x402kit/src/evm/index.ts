export * as Channel from './batch/Channel.ts'
export {
  type BatchSettlementEvmClient,
  type BatchSettlementEvmClientOptions,
  batchSettlementEvmClient,
  ChannelClientError,
  type ChannelSummary,
  type Channels,
  type DepositPolicy,
} from './batch/client.ts'
export type { CloseResult } from './batch/clientClose.ts'
export {
  ChannelStoreLockedError,
  filePayerChannelStore,
  memoryPayerChannelStore,
  type PayerChannelRecord,
  type PayerChannelStore,
} from './batch/clientStore.ts'
export {
  type ActionEvent,
  type ActionRecord,
  type BatchSettlementEvmFacilitator,
  type BatchSettlementEvmFacilitatorConfig,
  type BatchSettlementEvmNetworkConfig,
  type BatchSettlementStore,
  batchSettlementEvmFacilitator,
  type ChannelQuery,
  type ChannelRecord,
  type ClaimResult,
} from './batch/facilitator.ts'
export { memoryBatchSettlementStore } from './batch/facilitatorStore.ts'
export {
  type AuthorizerSigner,
  type BatchSettlementEvmSeller,
  type BatchSettlementEvmSellerOptions,
  type BatchSettlementEvmServerOptions,
  batchSettlementEvmServer,
  memorySellerChannelStore,
  type SellerChannelRecord,
  type SellerChannelStore,
  type SellerClaimResult,
  type SqlQueryable,
  sqlSellerChannelStore,
} from './batch/server.ts'
export type { ExactEvmClientOptions } from './exact/client.ts'
export { exactEvmClient } from './exact/client.ts'
export * as Eip2612 from './exact/Eip2612.ts'
export * as Eip3009 from './exact/Eip3009.ts'
export { type ExactEvmFacilitatorConfig, type ExactEvmNetworkConfig, exactEvmFacilitator } from './exact/facilitator.ts'
export type { ExactEvmServerOptions } from './exact/server.ts'
export { exactEvmServer } from './exact/server.ts'
export * as NonceManager from './NonceManager.ts'
export {
  type Backend as RecoverBackend,
  backend as recoverBackend,
  InvalidSignatureError,
  recoverAddress,
  recoverPublicKey,
} from './recover.ts'
export { defaultRecoveryThreads, type RecoveryThreads, recoveryThreads } from './recoverThreads.ts'
export { type EvmSigner, type EvmSignerSource, toEvmSigner } from './Signer.ts'
export { signTransactionProof, type TxproofClientConfig, TxproofPaymentError, txproofClient } from './txproof/client.ts'
export { type TxproofEvmFacilitatorConfig, type TxproofEvmNetworkConfig, txproofEvmFacilitator } from './txproof/facilitator.ts'
export * as TransactionProof from './txproof/Proof.ts'
export { nativeCoin, type TxproofServerOptions, txproofServer } from './txproof/server.ts'
