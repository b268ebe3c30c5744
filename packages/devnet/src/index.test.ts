import { expect, it } from 'vitest'
import * as devnet from './index.ts'

it('exports', () => {
  expect(Object.keys(devnet).sort()).toMatchInlineSnapshot(`
    [
      "ANVIL_MNEMONIC",
      "FIAT_TOKEN_ABI",
      "PERMIT_TOKEN_ABI",
      "PERMIT_TOKEN_DOMAIN",
      "SETTLEMENT_BATCHER_ADDRESS",
      "USDC_ABI",
      "startDevnet",
      "usdcAsset",
    ]
  `)
})
