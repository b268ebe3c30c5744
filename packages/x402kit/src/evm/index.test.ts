import { expect, it } from 'vitest'
import * as evm from './index.ts'

it('exports', () => {
  expect(Object.keys(evm).sort()).toMatchInlineSnapshot(`
    [
      "Channel",
      "Eip2612",
      "Eip3009",
      "InvalidSignatureError",
      "NonceManager",
      "TransactionProof",
      "TxproofPaymentError",
      "batchSettlementEvmFacilitator",
      "batchSettlementEvmServer",
      "exactEvmClient",
      "exactEvmFacilitator",
      "exactEvmServer",
      "memoryChannelStore",
      "nativeCoin",
      "recoverAddress",
      "recoverBackend",
      "recoverPublicKey",
      "signTransactionProof",
      "sqlChannelStore",
      "toEvmSigner",
      "txproofClient",
      "txproofEvmFacilitator",
      "txproofServer",
    ]
  `)
})
