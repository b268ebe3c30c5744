import { expect, it } from 'vitest'
import * as service from './index.ts'

it('exports', () => {
  expect(Object.keys(service).sort()).toMatchInlineSnapshot(`
    [
      "ConfigError",
      "StatementParameterError",
      "createLogger",
      "feeFor",
      "ledgerEntries",
      "loadConfig",
      "migrate",
      "openDatabase",
      "policyFor",
      "recordLedger",
      "runFacilitatorService",
      "sqlStore",
      "startFacilitatorService",
      "statement",
      "statementHandler",
      "statementOptions",
      "statementTotals",
    ]
  `)
})
