import { describe, expect, it } from 'vitest'
import * as Credential from '../credential/Credential.ts'
import { credentialKeys } from '../credential/Keys.ts'
import { trustedIssuers } from '../credential/Trust.ts'
import { createFacilitator } from './createFacilitator.ts'
import { fakeScheme, network, payer, payment, requirements } from './internal/fakeScheme.ts'

const issuer = 'https://facilitator.test'
const audience = 'https://api.test'
const grant = { audience, scope: 'GET /feed/*', uses: 3 }
const quiet = () => {}

function setup(options: { ttlSeconds?: number; maxTtlSeconds?: number; settleMs?: number } = {}) {
  const scheme = fakeScheme({ settleMs: options.settleMs })
  const keys = credentialKeys({ maxTtlSeconds: options.maxTtlSeconds })
  const facilitator = createFacilitator({
    schemes: [scheme],
    credentials: { issuer, keys, ttlSeconds: options.ttlSeconds },
    onError: quiet,
  })
  const trust = trustedIssuers([{ issuer }], { fetch: (async (url: string) => facilitator.handler(new Request(url))) as typeof fetch })
  return { scheme, facilitator, keys, trust }
}

const granting = (nonce: string, terms: Record<string, unknown> = grant) =>
  payment(nonce, { extra: { ...requirements.extra, grant: terms } })
const tokenOf = (result: { extensions?: Record<string, unknown> | null }) =>
  (result.extensions?.credential as { token: string } | undefined)?.token ?? ''

describe('credentials from the facilitator', () => {
  it('issues a credential on the grant’s terms once the payment settles, signed by a key it publishes', async () => {
    const { facilitator, trust } = setup()
    expect(await facilitator.verify(granting('0x1'))).toMatchObject({ isValid: true })
    const result = await facilitator.settle(granting('0x1'))
    expect(result).toMatchObject({
      success: true,
      extensions: { credential: { token: expect.any(String), expiresAt: expect.any(String) } },
    })
    const verified = await Credential.verify(tokenOf(result), { trust, audience })
    expect(verified).toMatchObject({
      ok: true,
      claims: {
        iss: issuer,
        aud: audience,
        sub: payer,
        scope: 'GET /feed/*',
        uses: 3,
        paid: {
          scheme: 'exact',
          network,
          asset: requirements.asset,
          amount: '1000',
          payTo: requirements.payTo,
          transaction: result.transaction,
        },
      },
    })
    if (!verified.ok) return
    expect(verified.claims.exp - verified.claims.iat).toBe(3600)
    const expiresAt = (result.extensions?.credential as { expiresAt?: string } | undefined)?.expiresAt ?? 0
    expect(new Date(expiresAt).getTime()).toBe(verified.claims.exp * 1000)
  })

  it('answers a repeated or concurrent settle with the one credential it stored, never a new one', async () => {
    const { facilitator, scheme } = setup({ settleMs: 30 })
    const concurrent = await Promise.all(Array.from({ length: 5 }, () => facilitator.settle(granting('0x2'))))
    const again = await facilitator.settle(granting('0x2'))
    expect(new Set([...concurrent, again].map(tokenOf)).size).toBe(1)
    expect(scheme.calls.settle).toBe(1)
  })

  it('lives for the grant’s window, for ttlSeconds with uses only, and never beyond the key ring’s maximum', async () => {
    const { facilitator, trust } = setup({ ttlSeconds: 600, maxTtlSeconds: 7200 })
    const life = async (nonce: string, terms: Record<string, unknown>) => {
      const result = await Credential.verify(tokenOf(await facilitator.settle(granting(nonce, terms))), { trust, audience })
      return result.ok ? result.claims.exp - result.claims.iat : result.reason
    }
    expect(await life('0x3', { audience, scope: '/a', windowSeconds: 3600 })).toBe(3600)
    expect(await life('0x4', { audience, scope: '/a', uses: 2 })).toBe(600)
    expect(await life('0x5', { audience, scope: '/a', windowSeconds: 86_400 })).toBe(7200)
  })

  it('issues nothing for an offer without a grant, or a payment that fails', async () => {
    const { facilitator } = setup()
    expect((await facilitator.settle(payment('0x6'))).extensions).toBeUndefined()
    const failing = createFacilitator({
      schemes: [
        fakeScheme({
          settle: async () => ({ success: false, errorReason: 'invalid_exact_evm_transaction_failed', transaction: '', network }),
        }),
      ],
      credentials: { issuer },
      onError: quiet,
    })
    expect(await failing.settle(granting('0x7'))).toEqual({
      success: false,
      errorReason: 'invalid_exact_evm_transaction_failed',
      transaction: '',
      network,
    })
  })

  it('refuses a malformed grant before any money moves', async () => {
    const { facilitator, scheme } = setup()
    const bad = granting('0x8', { audience, scope: 'GET /a/../admin' })
    expect(await facilitator.verify(bad)).toMatchObject({ isValid: false, invalidReason: 'invalid_payment_requirements' })
    expect(await facilitator.settle(bad)).toMatchObject({ success: false, errorReason: 'invalid_payment_requirements', transaction: '' })
    expect(await facilitator.settle(granting('0x9', { audience, scope: '/a', uses: 0 }))).toMatchObject({
      errorReason: 'invalid_payment_requirements',
    })
    expect(scheme.calls).toEqual({ verify: 0, settle: 0 })
  })

  it('refuses a grant when it issues no credentials, rather than take money for what it cannot give', async () => {
    const scheme = fakeScheme()
    const facilitator = createFacilitator({ schemes: [scheme] })
    expect(await facilitator.verify(granting('0xa'))).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_payment_requirements',
      invalidMessage: 'This facilitator does not issue access credentials (extra.grant).',
    })
    expect((await facilitator.handler(new Request('http://f.test/.well-known/jwks.json'))).status).toBe(404)
    expect((await facilitator.supported()).extensions).toEqual([])
    expect(scheme.calls.verify).toBe(0)
  })

  it('publishes its keys at /.well-known/jwks.json, briefly cacheable, and says so in /supported', async () => {
    const { facilitator, keys } = setup()
    const response = await facilitator.handler(new Request('http://f.test/.well-known/jwks.json'))
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toBe('application/jwk-set+json')
    expect(response.headers.get('cache-control')).toBe('public, max-age=60')
    const body = await response.json()
    expect(body).toEqual(await keys.jwks())
    expect(JSON.stringify(body)).not.toContain('"d"')
    expect((await facilitator.handler(new Request('http://f.test/.well-known/jwks.json', { method: 'POST' }))).status).toBe(405)
    expect((await facilitator.supported()).extensions).toEqual(['credential'])
  })

  it('answers the settlement without a credential when signing fails', async () => {
    const errors: unknown[] = []
    const keys = { ...credentialKeys(), signer: async () => Promise.reject(new Error('HSM down')) }
    const facilitator = createFacilitator({
      schemes: [fakeScheme()],
      credentials: { issuer, keys },
      onError: (error) => errors.push(error),
    })
    const result = await facilitator.settle(granting('0xb'))
    expect(result).toMatchObject({ success: true })
    expect(result.extensions).toBeUndefined()
    expect(errors).toEqual([new Error('HSM down')])
  })
})
