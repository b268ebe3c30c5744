import { expect, it } from 'vitest'
import * as facilitator from './index.ts'

it('exports', () => {
  expect(Object.keys(facilitator).sort()).toMatchInlineSnapshot(`
    [
      "FacilitatorUnavailableError",
      "createFacilitator",
      "exposureKey",
      "httpFacilitator",
      "isQueue",
      "memoryStore",
    ]
  `)
})
