import { expect, it } from 'vitest'
import * as evm from './index.ts'

it('exports', () => {
  expect(Object.keys(evm).sort()).toMatchInlineSnapshot(`
    [
      "Channel",
      "ChannelClientError",
      "ChannelStoreLockedError",
      "Eip2612",
      "Eip3009",
      "InvalidSignatureError",
      "NonceManager",
      "TransactionProof",
      "TxproofPaymentError",
      "batchSettlementEvmClient",
      "batchSettlementEvmFacilitator",
      "batchSettlementEvmServer",
      "defaultRecoveryThreads",
      "exactEvmClient",
      "exactEvmFacilitator",
      "exactEvmServer",
      "filePayerChannelStore",
      "memoryBatchSettlementStore",
      "memoryPayerChannelStore",
      "memorySellerChannelStore",
      "nativeCoin",
      "recoverAddress",
      "recoverBackend",
      "recoverPublicKey",
      "recoveryThreads",
      "signTransactionProof",
      "sqlSellerChannelStore",
      "toEvmSigner",
      "txproofClient",
      "txproofEvmFacilitator",
      "txproofServer",
    ]
  `)
})
