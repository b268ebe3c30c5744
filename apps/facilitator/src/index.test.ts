import { expect, it } from 'vitest'
import * as service from './index.ts'

it('exports', () => {
  expect(Object.keys(service).sort()).toMatchInlineSnapshot(`
    [
      "ConfigError",
      "loadConfig",
      "migrate",
      "openDatabase",
      "runFacilitatorService",
      "sqlStore",
      "startFacilitatorService",
    ]
  `)
})
