import { expect, it } from 'vitest'
import * as core from './index.ts'

it('exports', () => {
  expect(Object.keys(core).sort()).toMatchInlineSnapshot(`
    [
      "Base64Json",
      "BaseError",
      "Facilitator",
      "HttpHeader",
      "Money",
      "Network",
      "ParseError",
      "PaymentPayload",
      "PaymentRequired",
      "PaymentRequirements",
      "Reason",
      "isReason",
    ]
  `)
})
