import { describe, expect, it, vi } from 'vitest'
import { createFacilitator } from './createFacilitator.ts'
import { fakeScheme, network, payer, payment, requirements } from './internal/fakeScheme.ts'
import { memoryStore, type SettlementStore } from './Store.ts'

const quiet = () => {}

describe('routing', () => {
  it('answers an unknown scheme unsupported_scheme and an unknown network invalid_network', async () => {
    const scheme = fakeScheme()
    const facilitator = createFacilitator({ schemes: [scheme] })
    expect(await facilitator.verify(payment('0x1', { scheme: 'upto' }))).toMatchObject({
      isValid: false,
      invalidReason: 'unsupported_scheme',
    })
    expect(await facilitator.verify(payment('0x1', { network: 'eip155:1' }))).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_network',
    })
    expect(await facilitator.settle(payment('0x1', { network: 'eip155:1' }))).toMatchObject({
      success: false,
      errorReason: 'invalid_network',
      transaction: '',
      network: 'eip155:1',
    })
    expect(scheme.calls).toEqual({ verify: 0, settle: 0 })
  })

  it('refuses two schemes for one (scheme, network)', () => {
    expect(() => createFacilitator({ schemes: [fakeScheme(), fakeScheme()] })).toThrow(
      /Two schemes are registered for "exact" on eip155:84532/,
    )
  })

  it('lists kinds in both versions, extra and signers in /supported', async () => {
    const facilitator = createFacilitator({ schemes: [fakeScheme({ networks: [network, 'eip155:42161'] })] })
    expect(await facilitator.supported()).toMatchInlineSnapshot(`
      {
        "extensions": [],
        "kinds": [
          {
            "extra": {
              "feePayer": "0x1111111111111111111111111111111111111111",
            },
            "network": "eip155:84532",
            "scheme": "exact",
            "x402Version": 2,
          },
          {
            "extra": {
              "feePayer": "0x1111111111111111111111111111111111111111",
            },
            "network": "base-sepolia",
            "scheme": "exact",
            "x402Version": 1,
          },
          {
            "extra": {
              "feePayer": "0x1111111111111111111111111111111111111111",
            },
            "network": "eip155:42161",
            "scheme": "exact",
            "x402Version": 2,
          },
        ],
        "signers": {
          "eip155:*": [
            "0x1111111111111111111111111111111111111111",
          ],
        },
      }
    `)
  })
})

describe('verify', () => {
  it('answers the scheme verdict and reserves the key as verified', async () => {
    const store = memoryStore()
    const facilitator = createFacilitator({ schemes: [fakeScheme()], store })
    expect(await facilitator.verify(payment('0x1'))).toEqual({ isValid: true, payer })
    const key = `${network}:${requirements.asset}:${payer}:0x1`.toLowerCase()
    expect(await store.get(key)).toMatchObject({ key, status: 'verified', payer, amount: '1000', payTo: requirements.payTo })
  })

  it('accepts exactly one of two concurrent verifications of one authorization', async () => {
    const facilitator = createFacilitator({ schemes: [fakeScheme()] })
    const results = await Promise.all([facilitator.verify(payment('0x2')), facilitator.verify(payment('0x2'))])
    expect(results.filter((result) => result.isValid)).toHaveLength(1)
    expect(results.find((result) => !result.isValid)).toMatchObject({ invalidReason: 'invalid_exact_evm_nonce_already_used', payer })
  })

  it('accepts exactly one of 20 concurrent verifications, with a slow scheme', async () => {
    const scheme = fakeScheme({
      verify: async () => {
        await sleep(20)
        return { isValid: true, payer }
      },
    })
    const facilitator = createFacilitator({ schemes: [scheme] })
    const results = await Promise.all(Array.from({ length: 20 }, () => facilitator.verify(payment('0x3'))))
    expect(results.filter((result) => result.isValid)).toHaveLength(1)
  })

  it('refuses a verified authorization again within the TTL and accepts it after', async () => {
    let now = 1_000_000
    const facilitator = createFacilitator({ schemes: [fakeScheme()], now: () => now, verifyTtlMs: 120_000 })
    expect((await facilitator.verify(payment('0x4'))).isValid).toBe(true)
    now += 119_000
    expect(await facilitator.verify(payment('0x4'))).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_exact_evm_nonce_already_used',
    })
    now += 2_000
    expect((await facilitator.verify(payment('0x4'))).isValid).toBe(true)
    // The retry renewed the reservation.
    expect((await facilitator.verify(payment('0x4'))).isValid).toBe(false)
  })

  it('gives an expired reservation to exactly one of concurrent retries', async () => {
    let now = 0
    const facilitator = createFacilitator({ schemes: [fakeScheme()], now: () => now })
    await facilitator.verify(payment('0x5'))
    now += 500_000
    const results = await Promise.all(Array.from({ length: 10 }, () => facilitator.verify(payment('0x5'))))
    expect(results.filter((result) => result.isValid)).toHaveLength(1)
  })

  it('refuses a settled authorization', async () => {
    const facilitator = createFacilitator({ schemes: [fakeScheme()] })
    await facilitator.settle(payment('0x6'))
    expect(await facilitator.verify(payment('0x6'))).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_exact_evm_nonce_already_used',
    })
  })

  it('does not reserve the key of an invalid payment', async () => {
    const store = memoryStore()
    const scheme = fakeScheme({ verify: async () => ({ isValid: false, invalidReason: 'invalid_exact_evm_signature' }) })
    const facilitator = createFacilitator({ schemes: [scheme], store })
    expect(await facilitator.verify(payment('0x7'))).toEqual({ isValid: false, invalidReason: 'invalid_exact_evm_signature' })
    expect(await store.get(scheme.settlementKey(payment('0x7'))!)).toBeUndefined()
  })

  it('answers unexpected_verify_error when the scheme throws', async () => {
    const onError = vi.fn()
    const scheme = fakeScheme({
      verify: async () => {
        throw new Error('rpc down at https://rpc.example/secret-key')
      },
    })
    const result = await createFacilitator({ schemes: [scheme], onError }).verify(payment('0x8'))
    expect(result).toEqual({ isValid: false, invalidReason: 'unexpected_verify_error' })
    expect(onError).toHaveBeenCalledOnce()
  })
})

describe('settle', () => {
  it('settles a verified payment and records it', async () => {
    const store = memoryStore()
    const scheme = fakeScheme()
    const facilitator = createFacilitator({ schemes: [scheme], store })
    await facilitator.verify(payment('0x10'))
    const result = await facilitator.settle(payment('0x10'))
    expect(result).toEqual({ success: true, payer, transaction: `0x${'1'.padStart(64, '0')}`, network })
    expect(await store.get(scheme.settlementKey(payment('0x10'))!)).toMatchObject({
      status: 'settled',
      transaction: result.transaction,
      result,
    })
  })

  it('settles 20 concurrent duplicates once, and all get the one transaction', async () => {
    const scheme = fakeScheme({ settleMs: 200 })
    const facilitator = createFacilitator({ schemes: [scheme] })
    await facilitator.verify(payment('0x11'))
    const results = await Promise.all(Array.from({ length: 20 }, () => facilitator.settle(payment('0x11'))))
    expect(scheme.calls.settle).toBe(1)
    expect(new Set(results.map((result) => result.transaction))).toEqual(new Set([`0x${'1'.padStart(64, '0')}`]))
    expect(results.every((result) => result.success)).toBe(true)
  })

  it('settles 20 concurrent duplicates once without a prior verify', async () => {
    const scheme = fakeScheme({ settleMs: 50 })
    const facilitator = createFacilitator({ schemes: [scheme] })
    const results = await Promise.all(Array.from({ length: 20 }, () => facilitator.settle(payment('0x12'))))
    expect(scheme.calls.settle).toBe(1)
    expect(new Set(results.map((result) => result.transaction)).size).toBe(1)
  })

  it('answers a settled payment again with the stored result, without the chain', async () => {
    const scheme = fakeScheme()
    const facilitator = createFacilitator({ schemes: [scheme] })
    const first = await facilitator.settle(payment('0x13'))
    const second = await facilitator.settle(payment('0x13'))
    expect(second).toEqual(first)
    expect(scheme.calls.settle).toBe(1)
  })

  it('answers a settled payment from the store to another instance', async () => {
    const store = memoryStore()
    const one = fakeScheme()
    const two = fakeScheme()
    const first = await createFacilitator({ schemes: [one], store }).settle(payment('0x14'))
    expect(await createFacilitator({ schemes: [two], store }).settle(payment('0x14'))).toEqual(first)
    expect(two.calls.settle).toBe(0)
  })

  it('never hands a stored result to the same authorization against another offer', async () => {
    const scheme = fakeScheme()
    const facilitator = createFacilitator({ schemes: [scheme] })
    await facilitator.settle(payment('0x15'))
    const other = await facilitator.settle(payment('0x15', { payTo: '0x000000000000000000000000000000000000dEaD' }))
    expect(other).toMatchObject({ success: false, errorReason: 'invalid_exact_evm_nonce_already_used', transaction: '' })
    expect(scheme.calls.settle).toBe(1)
  })

  it('answers a stored or running settlement only to the payload that claimed it', async () => {
    const scheme = fakeScheme({ settleMs: 50 })
    const facilitator = createFacilitator({ schemes: [scheme] })
    // The key (here the nonce) can be public; a different payload over it is someone else.
    const [first, racing] = await Promise.all([facilitator.settle(payment('0x17')), facilitator.settle(forged('0x17'))])
    expect(first).toMatchObject({ success: true })
    expect(racing).toMatchObject({ success: false, errorReason: 'invalid_exact_evm_nonce_already_used', transaction: '' })
    expect(await facilitator.settle(forged('0x17'))).toMatchObject({ success: false, errorReason: 'invalid_exact_evm_nonce_already_used' })
    expect(await facilitator.settle(payment('0x17'))).toEqual(first)
    expect(scheme.calls.settle).toBe(1)
  })

  it('answers unexpected_settle_error when the scheme throws, and puts the payment back to be settled again', async () => {
    const store = memoryStore()
    const onError = vi.fn()
    let fail = true
    const scheme = fakeScheme({
      settle: async () => {
        if (fail) throw new Error('connection reset')
        return { success: true, transaction: '0xfeed', network }
      },
    })
    const facilitator = createFacilitator({ schemes: [scheme], store, onError })
    await facilitator.verify(payment('0x16'))
    const result = await facilitator.settle(payment('0x16'))
    expect(result).toEqual({
      success: false,
      errorReason: 'unexpected_settle_error',
      errorMessage: 'The settlement failed unexpectedly.',
      transaction: '',
      network,
    })
    // Nothing was sent, so a passing fault does not spend the payment: it is `verified` again.
    expect(await store.get(scheme.settlementKey(payment('0x16'))!)).toMatchObject({ status: 'verified' })
    expect(onError).toHaveBeenCalledWith(expect.any(Error), { operation: 'settle', key: scheme.settlementKey(payment('0x16')) })
    // Another payload for the same key still gets nothing.
    expect(await facilitator.settle(forged('0x16'))).toMatchObject({ success: false, errorReason: 'invalid_exact_evm_nonce_already_used' })
    fail = false
    expect(await facilitator.settle(payment('0x16'))).toMatchObject({ success: true, transaction: '0xfeed' })
    expect(scheme.calls.settle).toBe(2)
  })

  it('records a failure the scheme reports', async () => {
    const store = memoryStore()
    const scheme = fakeScheme({
      settle: async () => ({ success: false, errorReason: 'invalid_exact_evm_insufficient_balance', transaction: '', network }),
    })
    const facilitator = createFacilitator({ schemes: [scheme], store })
    expect(await facilitator.settle(payment('0x17'))).toMatchObject({
      success: false,
      errorReason: 'invalid_exact_evm_insufficient_balance',
    })
    expect(await store.get(scheme.settlementKey(payment('0x17'))!)).toMatchObject({
      status: 'failed',
      errorReason: 'invalid_exact_evm_insufficient_balance',
    })
  })

  it('marks the record settling before the scheme sends', async () => {
    const store = memoryStore()
    let seen: string | undefined
    const scheme = fakeScheme({
      settle: async (paid) => {
        seen = (await store.get(scheme.settlementKey(paid)!))?.status
        return { success: true, transaction: '0xabc', network }
      },
    })
    await createFacilitator({ schemes: [scheme], store }).settle(payment('0x18'))
    expect(seen).toBe('settling')
  })

  it('waits for another instance settling the payment and answers its result', async () => {
    const store = memoryStore()
    const slow = fakeScheme({ settleMs: 150 })
    const other = fakeScheme()
    const first = createFacilitator({ schemes: [slow], store }).settle(payment('0x19'))
    await sleep(20)
    const second = await createFacilitator({ schemes: [other], store, pendingWaitMs: 2_000 }).settle(payment('0x19'))
    expect(second).toEqual(await first)
    expect(other.calls.settle).toBe(0)
  })

  it('answers settlement_pending when another instance takes too long', async () => {
    const store = memoryStore()
    const first = createFacilitator({ schemes: [fakeScheme({ settleMs: 300 })], store }).settle(payment('0x20'))
    await sleep(20)
    const other = fakeScheme()
    const second = await createFacilitator({ schemes: [other], store, pendingWaitMs: 50 }).settle(payment('0x20'))
    expect(second).toMatchObject({ success: false, errorReason: 'settlement_pending', transaction: '', network })
    expect(other.calls.settle).toBe(0)
    expect((await first).success).toBe(true)
  })

  it('keeps a sent but unconfirmed settlement settling, with its transaction, and never sends it again', async () => {
    const store = memoryStore()
    const scheme = fakeScheme({
      settle: async () => ({ success: false, errorReason: 'settlement_pending', transaction: '0xbeef', network }),
    })
    const facilitator = createFacilitator({ schemes: [scheme], store, pendingWaitMs: 20 })
    expect(await facilitator.settle(payment('0x24'))).toMatchObject({
      success: false,
      errorReason: 'settlement_pending',
      transaction: '0xbeef',
    })
    expect(await store.get(scheme.settlementKey(payment('0x24'))!)).toMatchObject({ status: 'settling', transaction: '0xbeef' })
    expect(await facilitator.settle(payment('0x24'))).toMatchObject({
      success: false,
      errorReason: 'settlement_pending',
      transaction: '0xbeef',
    })
    expect(scheme.calls.settle).toBe(1)
  })

  it('settles once when two instances race from verified', async () => {
    const store = memoryStore()
    const one = fakeScheme({ settleMs: 30 })
    const two = fakeScheme({ settleMs: 30 })
    await createFacilitator({ schemes: [one], store }).verify(payment('0x21'))
    const results = await Promise.all([
      createFacilitator({ schemes: [one], store }).settle(payment('0x21')),
      createFacilitator({ schemes: [two], store }).settle(payment('0x21')),
    ])
    expect(one.calls.settle + two.calls.settle).toBe(1)
    expect(results[0]).toEqual(results[1])
  })

  it('answers the outcome even when the store cannot record it, and leaves the key settling', async () => {
    const inner = memoryStore()
    let failWrites = false
    const store: SettlementStore = {
      ...inner,
      update: async (key, patch, when) => {
        if (failWrites) throw new Error('database down')
        return inner.update(key, patch, when)
      },
    }
    const onError = vi.fn()
    const scheme = fakeScheme({
      settle: async () => {
        failWrites = true
        return { success: true, transaction: '0xfeed', network }
      },
    })
    const facilitator = createFacilitator({ schemes: [scheme], store, onError, pendingWaitMs: 20 })
    expect(await facilitator.settle(payment('0x22'))).toMatchObject({ success: true, transaction: '0xfeed' })
    expect(onError).toHaveBeenCalledOnce()
    expect(await facilitator.settle(payment('0x22'))).toMatchObject({ success: false, errorReason: 'settlement_pending' })
    expect(scheme.calls.settle).toBe(1)
  })

  it('throws, without settling, when the store cannot claim the key', async () => {
    const scheme = fakeScheme()
    const store: SettlementStore = {
      ...memoryStore(),
      reserve: async () => {
        throw new Error('database down')
      },
    }
    await expect(createFacilitator({ schemes: [scheme], store, onError: quiet }).settle(payment('0x23'))).rejects.toThrow('database down')
    expect(scheme.calls.settle).toBe(0)
  })
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The same settlement key as `payment(nonce)`, with another payload (as an attacker would send). */
function forged(nonce: string) {
  const original = payment(nonce)
  return { ...original, payload: { ...original.payload, payload: { ...original.payload.payload, signature: '0xbeef' } } }
}
