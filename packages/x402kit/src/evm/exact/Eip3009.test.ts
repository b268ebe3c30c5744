import fc from 'fast-check'
import { type Hex, hashTypedData } from 'viem'
import { describe, expect, it } from 'vitest'
import * as Eip3009 from './Eip3009.ts'

const hex = (bytes: number) =>
  fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => `0x${Buffer.from(b).toString('hex')}` as Hex)
const uint = fc.bigInt({ min: 0n, max: 2n ** 256n - 1n }).map(String)

describe('Eip3009.digest', () => {
  it('equals the EIP-712 hash of the typed data a payer signs, for any authorization and domain', () => {
    fc.assert(
      fc.property(
        fc.record({ name: fc.string(), version: fc.string(), chainId: fc.integer({ min: 1, max: 2 ** 40 }), verifyingContract: hex(20) }),
        fc.record({ from: hex(20), to: hex(20), value: uint, validAfter: uint, validBefore: uint, nonce: hex(32) }),
        fc.boolean(),
        (domain, authorization, upper) => {
          // Addresses in any case: the digest is over their bytes.
          const from = upper ? (`0x${authorization.from.slice(2).toUpperCase()}` as Hex) : authorization.from
          const auth = { ...authorization, from }
          expect(Eip3009.digest(domain, auth)).toBe(hashTypedData(Eip3009.typedData(domain, auth)))
        },
      ),
      { numRuns: 300 },
    )
  })
})
