import { expect, it } from 'vitest'
import * as evm from './index.ts'

it('exports', () => {
  expect(Object.keys(evm).sort()).toMatchInlineSnapshot(`
    [
      "Eip2612",
      "Eip3009",
      "InvalidSignatureError",
      "NonceManager",
      "TransactionProof",
      "TxproofPaymentError",
      "exactEvmClient",
      "exactEvmFacilitator",
      "exactEvmServer",
      "nativeCoin",
      "recoverAddress",
      "recoverBackend",
      "signTransactionProof",
      "toEvmSigner",
      "txproofClient",
      "txproofEvmFacilitator",
      "txproofServer",
    ]
  `)
})
