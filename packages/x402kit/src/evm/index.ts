export { exactEvmClient } from './exact/client.ts'
export * as Eip3009 from './exact/Eip3009.ts'
export { exactEvmServer } from './exact/server.ts'
export { type EvmSigner, type EvmSignerSource, toEvmSigner } from './Signer.ts'
