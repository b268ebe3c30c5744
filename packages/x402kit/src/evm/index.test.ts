import { expect, it } from 'vitest'
import * as evm from './index.ts'

it('exports', () => {
  expect(Object.keys(evm).sort()).toMatchInlineSnapshot(`
    [
      "Eip3009",
      "InvalidSignatureError",
      "NonceManager",
      "exactEvmClient",
      "exactEvmFacilitator",
      "exactEvmServer",
      "recoverAddress",
      "recoverBackend",
      "toEvmSigner",
    ]
  `)
})
