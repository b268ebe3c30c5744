import { describe, expect, it } from 'vitest'
import * as Credential from './Credential.ts'
import { credentialKeys, generateCredentialKey } from './Keys.ts'
import { trustedIssuers } from './Trust.ts'

const issuer = 'https://facilitator.test'
const audience = 'https://api.test'
const day = 24 * 3600

function claims(iat: number, ttl: number): Credential.Claims {
  return {
    iss: issuer,
    aud: audience,
    sub: '0xpayer',
    scope: 'GET /feed/*',
    paid: { scheme: 'exact', network: 'eip155:84532', asset: '0xasset', amount: '1', payTo: '0xpayto', transaction: '0x1' },
    iat,
    exp: iat + ttl,
    jti: crypto.randomUUID(),
  }
}

/** A clock the test moves. */
function clock(start = Date.now()) {
  let time = start
  return {
    now: () => time,
    advance: (seconds: number) => {
      time += seconds * 1000
    },
  }
}

describe('credentialKeys', () => {
  it('generates one key on first use, shared by concurrent callers, published without its private part', async () => {
    const keys = credentialKeys()
    const signers = await Promise.all([keys.signer(), keys.signer(), keys.signer()])
    expect(new Set(signers.map((signer) => signer.kid)).size).toBe(1)
    const { keys: published } = await keys.jwks()
    expect(published).toHaveLength(1)
    expect(published[0]).toEqual({ kty: 'OKP', crv: 'Ed25519', x: expect.any(String), kid: signers[0]!.kid, alg: 'EdDSA', use: 'sig' })
    expect(keys.list()[0]?.privateJwk.d).toEqual(expect.any(String))
  })

  it('keeps credentials signed before a rotation valid, and signs new ones with the new key', async () => {
    const time = clock()
    const keys = credentialKeys({ maxTtlSeconds: day, now: time.now })
    const iat = Math.floor(time.now() / 1000)
    const before = await Credential.issue(await keys.signer(), claims(iat, 3600))
    const old = (await keys.signer()).kid
    const fresh = await keys.rotate()
    expect((await keys.signer()).kid).toBe(fresh.kid)
    expect(fresh.kid).not.toBe(old)
    const after = await Credential.issue(await keys.signer(), claims(iat, 3600))

    const trust = trustedIssuers([{ issuer, jwks: await keys.jwks() }], { now: time.now })
    expect((await keys.jwks()).keys.map((key) => key.kid)).toEqual([old, fresh.kid])
    expect(await Credential.verify(before, { trust, audience, now: time.now })).toMatchObject({ ok: true, kid: old })
    expect(await Credential.verify(after, { trust, audience, now: time.now })).toMatchObject({ ok: true, kid: fresh.kid })
    expect(keys.list().map((key) => [key.kid, key.retiredAt === undefined])).toEqual([
      [old, false],
      [fresh.kid, true],
    ])
  })

  it('drops a retired key once every credential it can have signed has expired', async () => {
    const time = clock()
    const keys = credentialKeys({ maxTtlSeconds: day, now: time.now })
    const old = (await keys.signer()).kid
    const longest = await Credential.issue(await keys.signer(), claims(Math.floor(time.now() / 1000), day))
    await keys.rotate()
    time.advance(day)
    expect((await keys.jwks()).keys.map((key) => key.kid)).toContain(old)
    time.advance(61)
    expect((await keys.jwks()).keys.map((key) => key.kid)).not.toContain(old)
    expect(keys.list()).toHaveLength(1)
    // Nothing is lost: the longest-lived credential the old key signed had already expired.
    const trust = trustedIssuers([{ issuer, jwks: { keys: [keys.list()[0]!.publicJwk] } }])
    expect(await Credential.verify(longest, { trust, audience, now: time.now })).toMatchObject({ ok: false })
    expect(Credential.decode(longest)!.exp * 1000).toBeLessThan(time.now())
  })

  it('signs on with persisted keys: the same kid after a restart', async () => {
    const first = credentialKeys()
    const kid = (await first.signer()).kid
    const restarted = credentialKeys({ keys: first.list() })
    expect((await restarted.signer()).kid).toBe(kid)
    expect(await restarted.jwks()).toEqual(await first.jwks())
  })

  it('makes the first key not retired sign, as instances starting together agree', async () => {
    const [a, b] = await Promise.all([generateCredentialKey(), generateCredentialKey()])
    expect((await credentialKeys({ keys: [a!, b!] }).signer()).kid).toBe(a!.kid)
    expect((await credentialKeys({ keys: [{ ...a!, retiredAt: Date.now() }, b!] }).signer()).kid).toBe(b!.kid)
  })

  it('generates ES256 keys, and refuses other algorithms and lifetimes', async () => {
    const key = await generateCredentialKey('ES256')
    expect(key.publicJwk).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256' })
    await expect(generateCredentialKey('HS256' as never)).rejects.toThrow(/EdDSA or ES256/)
    expect(() => credentialKeys({ maxTtlSeconds: 0 })).toThrow(/maxTtlSeconds/)
  })
})
