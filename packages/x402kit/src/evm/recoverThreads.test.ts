import { keccak256, toBytes } from 'viem'
import { generatePrivateKey, privateKeyToAccount, sign } from 'viem/accounts'
import { afterEach, describe, expect, it } from 'vitest'
import { InvalidSignatureError, recoverPublicKey } from './recover.ts'
import { type RecoveryThreads, recoveryThreads } from './recoverThreads.ts'

const opened: RecoveryThreads[] = []
afterEach(async () => {
  for (const pool of opened.splice(0)) await pool.close()
})
const open = (threads: number) => {
  const pool = recoveryThreads({ threads })
  opened.push(pool)
  return pool
}

async function signed(index: number) {
  const key = generatePrivateKey()
  const digest = toBytes(keccak256(toBytes(`message ${index}`)))
  const signature = toBytes(await sign({ hash: keccak256(toBytes(`message ${index}`)), privateKey: key, to: 'hex' }))
  return { digest, signature, address: privateKeyToAccount(key).address }
}

describe('public-key recovery on worker threads', () => {
  it('answers what recovery on this thread answers, for signatures sent together, and sends them in few messages', async () => {
    const pool = open(1)
    const cases = await Promise.all(Array.from({ length: 40 }, (_, index) => signed(index)))
    // Every fifth signature is over another digest: a key recovers, but not the signer's.
    const digests = cases.map(({ digest }, index) => (index % 5 === 0 ? toBytes(keccak256(toBytes(`other ${index}`))) : digest))
    const keys = await Promise.all(cases.map(({ signature }, index) => pool.recover(digests[index]!, signature)))
    expect(keys).toEqual(cases.map(({ signature }, index) => recoverPublicKey(digests[index]!, signature)))
    expect(pool.counts()).toEqual({ threads: 40, here: 0 })
  })

  it('answers undefined where no key recovers, and refuses a malformed signature before any thread sees it', async () => {
    const pool = open(1)
    const { digest, signature } = await signed(1)
    // r = 0 is no point on the curve.
    const noPoint = Uint8Array.from(signature)
    noPoint.fill(0, 0, 32)
    const answers = await Promise.all([pool.recover(digest, noPoint), pool.recover(digest, signature)])
    expect(answers[0]).toBeUndefined()
    expect(answers[1]).toHaveLength(65)
    const highS = Uint8Array.from(signature)
    highS.fill(0xff, 32, 64)
    expect(() => pool.recover(digest, highS)).toThrow(InvalidSignatureError)
    const badV = Uint8Array.from(signature)
    badV[64] = 29
    expect(() => pool.recover(digest, badV)).toThrow(InvalidSignatureError)
    expect(() => pool.recover(digest, signature.subarray(0, 64))).toThrow(InvalidSignatureError)
    expect(() => pool.recover(digest.subarray(1), signature)).toThrow(RangeError)
  })

  it('recovers a lone signature here while the threads are idle', async () => {
    const pool = open(1)
    const { digest, signature } = await signed(2)
    expect(await pool.recover(digest, signature)).toEqual(recoverPublicKey(digest, signature))
    expect(pool.counts()).toEqual({ threads: 0, here: 1 })
  })

  it('loses no answer when closed with recoveries out, and recovers here afterwards', async () => {
    const pool = open(1)
    const cases = await Promise.all(Array.from({ length: 30 }, (_, index) => signed(index)))
    const out = cases.map(({ digest, signature }) => pool.recover(digest, signature))
    await new Promise((resolve) => setImmediate(resolve))
    await pool.close()
    const keys = await Promise.all(out)
    expect(keys).toEqual(cases.map(({ digest, signature }) => recoverPublicKey(digest, signature)))
    const after = await signed(99)
    expect(await pool.recover(after.digest, after.signature)).toEqual(recoverPublicKey(after.digest, after.signature))
  })

  it('with no threads, recovers everything here', async () => {
    const pool = open(0)
    const cases = await Promise.all(Array.from({ length: 5 }, (_, index) => signed(index)))
    await Promise.all(cases.map(({ digest, signature }) => pool.recover(digest, signature)))
    expect(pool.counts()).toEqual({ threads: 0, here: 5 })
    expect(() => recoveryThreads({ threads: -1 })).toThrow(RangeError)
  })
})
