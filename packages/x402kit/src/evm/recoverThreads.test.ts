import { encodeAbiParameters, getTypesForEIP712Domain, hashDomain, hashTypedData, keccak256, toBytes } from 'viem'
import { generatePrivateKey, privateKeyToAccount, sign } from 'viem/accounts'
import { afterEach, describe, expect, it } from 'vitest'
import { addressOfKey, InvalidSignatureError, recoverPublicKey } from './recover.ts'
import { type RecoveryThreads, recoveryThreads, typedDigest } from './recoverThreads.ts'

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

  it('hashes typed data where it recovers, as viem hashes it, mixed in one batch with plain digests', async () => {
    const pool = open(1)
    const domain = {
      name: 'Escrow',
      version: '1',
      chainId: 84532,
      verifyingContract: '0x00000000000000000000000000000000000b0b0b',
    } as const
    const types = {
      Voucher: [
        { name: 'channelId', type: 'bytes32' },
        { name: 'maxClaimableAmount', type: 'uint128' },
      ],
    } as const
    const keys = Array.from({ length: 12 }, () => generatePrivateKey())
    const separator = toBytes(hashDomain({ domain, types: { EIP712Domain: getTypesForEIP712Domain({ domain }) } } as never))
    const cases = await Promise.all(
      keys.map(async (key, index) => {
        const message = { channelId: keccak256(toBytes(`channel ${index}`)), maxClaimableAmount: BigInt(index) * 10n ** 30n }
        const signature = await privateKeyToAccount(key).signTypedData({ domain, types, primaryType: 'Voucher', message })
        const struct = toBytes(
          encodeAbiParameters(
            [{ type: 'bytes32' }, { type: 'bytes32' }, { type: 'uint128' }],
            [keccak256(toBytes('Voucher(bytes32 channelId,uint128 maxClaimableAmount)')), message.channelId, message.maxClaimableAmount],
          ),
        )
        expect(typedDigest(separator, struct)).toEqual(toBytes(hashTypedData({ domain, types, primaryType: 'Voucher', message })))
        return { struct, signature: toBytes(signature), address: privateKeyToAccount(key).address }
      }),
    )
    const plain = await signed(7)
    const answers = await Promise.all([
      ...cases.map(({ struct, signature }) => pool.recoverTyped(separator, struct, signature)),
      pool.recover(plain.digest, plain.signature),
    ])
    expect(answers.slice(0, -1).map((key) => addressOfKey(key!))).toEqual(cases.map(({ address }) => address))
    expect(addressOfKey(answers.at(-1)!)).toBe(plain.address)
    expect(pool.counts().threads).toBe(13)
    expect(() => pool.recoverTyped(separator.subarray(1), cases[0]!.struct, cases[0]!.signature)).toThrow(RangeError)
    expect(() => pool.recoverTyped(separator, cases[0]!.struct.subarray(1), cases[0]!.signature)).toThrow(RangeError)
  })

  it('with no threads, recovers everything here', async () => {
    const pool = open(0)
    const cases = await Promise.all(Array.from({ length: 5 }, (_, index) => signed(index)))
    await Promise.all(cases.map(({ digest, signature }) => pool.recover(digest, signature)))
    expect(pool.counts()).toEqual({ threads: 0, here: 5 })
    expect(() => recoveryThreads({ threads: -1 })).toThrow(RangeError)
  })
})
