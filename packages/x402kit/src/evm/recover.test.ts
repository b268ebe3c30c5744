import { bytesToHex, hexToBytes, keccak256, toHex, recoverAddress as viemRecoverAddress } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { describe, expect, it } from 'vitest'
import { backend, InvalidSignatureError, recoverAddress } from './recover.ts'

const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n

async function randomSignature() {
  const account = privateKeyToAccount(generatePrivateKey())
  const hash = keccak256(crypto.getRandomValues(new Uint8Array(40)))
  const signature = await account.sign({ hash })
  return { account, hash, signature }
}

/** The other valid signature of the same message: s → n − s, with the recovery bit flipped. */
function malleate(signature: `0x${string}`): `0x${string}` {
  const bytes = hexToBytes(signature)
  const s = BigInt(bytesToHex(bytes.slice(32, 64)))
  bytes.set(hexToBytes(toHex(n - s, { size: 32 })), 32)
  bytes[64] = bytes[64] === 27 ? 28 : 27
  return bytesToHex(bytes)
}

describe('recoverAddress', () => {
  it('loads the native backend here (a linux-x64 prebuild ships in the package)', () => {
    expect(backend).toBe('native')
  })

  for (const which of ['native', 'js'] as const) {
    it(`agrees with viem on random keys (${which})`, async () => {
      for (let i = 0; i < 40; i++) {
        const { account, hash, signature } = await randomSignature()
        const expected = await viemRecoverAddress({ hash, signature })
        expect(expected).toBe(account.address)
        expect(recoverAddress(hash, signature, { backend: which })).toBe(expected)
        expect(recoverAddress(hexToBytes(hash), hexToBytes(signature), { backend: which })).toBe(expected)
      }
    })

    it(`accepts v as 0/1 as well as 27/28 (${which})`, async () => {
      const { account, hash, signature } = await randomSignature()
      const bytes = hexToBytes(signature)
      bytes[64] = bytes[64]! - 27
      expect(recoverAddress(hash, bytesToHex(bytes), { backend: which })).toBe(account.address)
    })

    it(`refuses the malleated twin (n − s, flipped v) that viem accepts (${which})`, async () => {
      const { account, hash, signature } = await randomSignature()
      const twin = malleate(signature)
      // The twin is mathematically valid: plain ecrecover yields the same signer.
      expect(await viemRecoverAddress({ hash, signature: twin })).toBe(account.address)
      expect(() => recoverAddress(hash, twin, { backend: which })).toThrow(InvalidSignatureError)
      expect(() => recoverAddress(hash, twin, { backend: which })).toThrow(/upper half/)
    })
  }

  it('refuses v outside {27, 28, 0, 1}', async () => {
    const { hash, signature } = await randomSignature()
    for (const v of [2, 26, 29, 35, 255]) {
      const bytes = hexToBytes(signature)
      bytes[64] = v
      expect(() => recoverAddress(hash, bytesToHex(bytes))).toThrow(/v is/)
    }
  })

  it('refuses signatures that are not 65 bytes or not hex', async () => {
    const { hash, signature } = await randomSignature()
    expect(() => recoverAddress(hash, signature.slice(0, -2) as `0x${string}`)).toThrow(/65 bytes/)
    expect(() => recoverAddress(hash, `${signature}00`)).toThrow(/65 bytes/)
    expect(() => recoverAddress(hash, `${signature.slice(0, -1)}z` as `0x${string}`)).toThrow(/hex/)
  })

  it('refuses r = 0 and an r that is no point on the curve, on both backends', async () => {
    const { hash, signature } = await randomSignature()
    const zeroR = `0x${'00'.repeat(32)}${signature.slice(66)}` as const
    // x = 5 has no y on secp256k1 (5³ + 7 = 132 is a non-residue mod p).
    const offCurve = `0x${toHex(5n, { size: 32 }).slice(2)}${signature.slice(66)}` as const
    for (const which of ['native', 'js'] as const) {
      expect(() => recoverAddress(hash, zeroR, { backend: which })).toThrow(InvalidSignatureError)
      expect(() => recoverAddress(hash, offCurve, { backend: which })).toThrow(InvalidSignatureError)
    }
  })

  it('refuses a digest that is not 32 bytes', async () => {
    const { signature } = await randomSignature()
    expect(() => recoverAddress('0x1234', signature)).toThrow(/32 bytes/)
  })

  it('a changed digest recovers to another address', async () => {
    const { account, hash, signature } = await randomSignature()
    const other = keccak256(hash)
    expect(recoverAddress(other, signature)).not.toBe(account.address)
  })
})
