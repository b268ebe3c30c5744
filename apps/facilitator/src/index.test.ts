import { expect, it } from 'vitest'
import * as service from './index.ts'

it('exports', () => {
  expect(Object.keys(service).sort()).toMatchInlineSnapshot(`
    [
      "ConfigError",
      "StatementParameterError",
      "channelView",
      "channelsHandler",
      "channelsMigration",
      "createLogger",
      "feeFor",
      "ledgerEntries",
      "loadConfig",
      "migrate",
      "openDatabase",
      "policyFor",
      "recordLedger",
      "runFacilitatorService",
      "sqlChannelStore",
      "sqlStore",
      "startFacilitatorService",
      "statement",
      "statementHandler",
      "statementOptions",
      "statementTotals",
    ]
  `)
})
