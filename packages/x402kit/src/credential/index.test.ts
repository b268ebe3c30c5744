import { expect, it } from 'vitest'
import * as credential from './index.ts'

it('exports', () => {
  expect(Object.keys(credential).sort()).toMatchInlineSnapshot(`
    [
      "Credential",
      "Grant",
      "credentialKeys",
      "generateCredentialKey",
      "trustedIssuers",
    ]
  `)
  expect(Object.keys(credential.Credential).sort()).toMatchInlineSnapshot(`
    [
      "algorithms",
      "claimsSchema",
      "decode",
      "issue",
      "maxLength",
      "tokenType",
      "verify",
    ]
  `)
  expect(Object.keys(credential.Grant).sort()).toMatchInlineSnapshot(`
    [
      "fromConfig",
      "maxWindowSeconds",
      "of",
      "schema",
      "windowSeconds",
    ]
  `)
})
