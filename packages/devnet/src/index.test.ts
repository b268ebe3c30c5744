import { expect, it } from 'vitest'
import * as devnet from './index.ts'

it('exports', () => {
  expect(Object.keys(devnet).sort()).toMatchInlineSnapshot(`
    [
      "ANVIL_MNEMONIC",
      "FIAT_TOKEN_ABI",
      "USDC_ABI",
      "startDevnet",
    ]
  `)
})
