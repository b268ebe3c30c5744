import { expect, it } from 'vitest'
import * as client from './index.ts'

it('exports', () => {
  expect(Object.keys(client).sort()).toMatchInlineSnapshot(`
    [
      "Budget",
      "NotPaidReason",
      "PaymentSigningError",
      "decodePaymentResponse",
      "getPaymentResult",
      "wrapFetch",
    ]
  `)
  expect(Object.keys(client.Budget).sort()).toMatchInlineSnapshot(`
    [
      "BudgetError",
      "compare",
      "from",
    ]
  `)
})
