import { describe, expect, it } from 'vitest'
import * as Credential from './Credential.ts'
import { type CredentialKeyRing, credentialKeys } from './Keys.ts'
import { trustedIssuers } from './Trust.ts'

const issuer = 'https://facilitator.test'
const audience = 'https://api.test'

function claims(): Credential.Claims {
  const iat = Math.floor(Date.now() / 1000)
  return {
    iss: issuer,
    aud: audience,
    sub: '0xpayer',
    scope: 'GET /feed/*',
    paid: { scheme: 'exact', network: 'eip155:84532', asset: '0xasset', amount: '1', payTo: '0xpayto', transaction: '0x1' },
    iat,
    exp: iat + 600,
    jti: crypto.randomUUID(),
  }
}

/** The issuer's key set endpoint, counting requests, optionally slow or failing. */
function publisher(keys: CredentialKeyRing, options: { delayMs?: number } = {}) {
  const requests: string[] = []
  const state = { status: 200, body: undefined as string | undefined }
  const fetch = (async (input: RequestInfo | URL) => {
    requests.push(String(input))
    if (options.delayMs) await new Promise((resolve) => setTimeout(resolve, options.delayMs))
    return new Response(state.body ?? JSON.stringify(await keys.jwks()), { status: state.status })
  }) as typeof globalThis.fetch
  return { fetch, requests, state }
}

function clock() {
  let time = Date.now()
  return {
    now: () => time,
    advance: (ms: number) => {
      time += ms
    },
  }
}

describe('trustedIssuers', () => {
  it('fetches an issuer’s keys once, from issuer + /.well-known/jwks.json, and serves from the cache', async () => {
    const keys = credentialKeys()
    const site = publisher(keys)
    const trust = trustedIssuers([{ issuer: `${issuer}/` }], { fetch: site.fetch })
    const tokens = await Promise.all(
      Array.from({ length: 5 }, async () => Credential.issue(await keys.signer(), { ...claims(), iss: `${issuer}/` })),
    )
    const results = await Promise.all(tokens.map((token) => Credential.verify(token, { trust, audience })))
    expect(results.every((result) => result.ok)).toBe(true)
    for (const token of tokens) expect((await Credential.verify(token, { trust, audience })).ok).toBe(true)
    expect(site.requests).toEqual([`${issuer}/.well-known/jwks.json`])
  })

  it('refreshes on an unknown key id at most once per cooldown, however many made-up ids arrive', async () => {
    const keys = credentialKeys()
    const site = publisher(keys)
    const time = clock()
    const trust = trustedIssuers([{ issuer, jwksUrl: 'https://keys.test/jwks' }], {
      fetch: site.fetch,
      now: time.now,
      refreshCooldownMs: 30_000,
    })
    expect(await trust.key(issuer, { alg: 'EdDSA', kid: (await keys.signer()).kid })).toBeDefined()
    expect(site.requests).toHaveLength(1)

    time.advance(31_000)
    const garbage = await Promise.all(Array.from({ length: 200 }, (_, i) => trust.key(issuer, { alg: 'EdDSA', kid: `made-up-${i}` })))
    expect(garbage.every((key) => key === undefined)).toBe(true)
    for (let i = 0; i < 100; i++) expect(await trust.key(issuer, { alg: 'EdDSA', kid: `more-${i}` })).toBeUndefined()
    expect(site.requests).toHaveLength(2)

    time.advance(29_000)
    await trust.key(issuer, { alg: 'EdDSA', kid: 'again' })
    expect(site.requests).toHaveLength(2)
    time.advance(2_000)
    await trust.key(issuer, { alg: 'EdDSA', kid: 'again' })
    expect(site.requests).toHaveLength(3)
    expect(trust.fetches).toEqual({ [issuer]: 3 })
  })

  it('takes up a rotated key on its first credential, and every concurrent request waits for that one fetch', async () => {
    const keys = credentialKeys()
    const site = publisher(keys, { delayMs: 20 })
    const time = clock()
    const trust = trustedIssuers([{ issuer }], { fetch: site.fetch, now: time.now })
    expect((await Credential.verify(await Credential.issue(await keys.signer(), claims()), { trust, audience })).ok).toBe(true)
    const version = trust.version

    await keys.rotate()
    time.advance(31_000)
    const token = await Credential.issue(await keys.signer(), claims())
    const results = await Promise.all(Array.from({ length: 20 }, () => Credential.verify(token, { trust, audience })))
    expect(results.map((result) => result.ok)).toEqual(Array(20).fill(true))
    expect(site.requests).toHaveLength(2)
    expect(trust.version).toBeGreaterThan(version)
  })

  it('refreshes stale keys in the background while the cached ones keep serving', async () => {
    const keys = credentialKeys()
    const site = publisher(keys)
    const time = clock()
    const trust = trustedIssuers([{ issuer }], { fetch: site.fetch, now: time.now, maxAgeMs: 60_000 })
    const kid = (await keys.signer()).kid
    await trust.key(issuer, { alg: 'EdDSA', kid })
    time.advance(61_000)
    site.state.status = 503
    expect(await trust.key(issuer, { alg: 'EdDSA', kid })).toBeDefined()
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(site.requests).toHaveLength(2)
    expect(await trust.key(issuer, { alg: 'EdDSA', kid })).toBeDefined()
  })

  it.each([
    ['a failed request', { status: 500 }],
    ['a body that is not JSON', { body: '<html>' }],
    ['a key with its private part', { body: JSON.stringify({ keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'AA', d: 'AA', kid: 'k' }] }) }],
    ['a symmetric key', { body: JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: 'k' }] }) }],
    ['an oversized key set', { body: JSON.stringify({ keys: [], pad: 'x'.repeat(70_000) }) }],
  ])('trusts no key from %s', async (_, answer) => {
    const keys = credentialKeys()
    const site = publisher(keys)
    Object.assign(site.state, answer)
    const trust = trustedIssuers([{ issuer }], { fetch: site.fetch })
    const token = await Credential.issue(await keys.signer(), claims())
    expect(await Credential.verify(token, { trust, audience })).toMatchObject({ ok: false, reason: 'invalid_credential' })
  })

  it('never fetches for an issuer it does not trust', async () => {
    const keys = credentialKeys()
    const site = publisher(keys)
    const trust = trustedIssuers([{ issuer }], { fetch: site.fetch })
    const token = await Credential.issue(await keys.signer(), { ...claims(), iss: 'https://evil.test' })
    expect(await Credential.verify(token, { trust, audience })).toMatchObject({ reason: 'credential_untrusted_issuer' })
    expect(site.requests).toHaveLength(0)
  })

  it('refuses a key set URL that is not http(s)', () => {
    expect(() => trustedIssuers([{ issuer: 'did:example:123' }])).toThrow(/not an http\(s\) URL/)
    expect(() => trustedIssuers([{ issuer: 'x', jwksUrl: 'file:///etc/passwd' }])).toThrow(/not an http\(s\) URL/)
    expect(() => trustedIssuers([{ issuer: '' }])).toThrow(/needs an `issuer`/)
  })
})
