import { createHmac } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import * as Credential from './Credential.ts'
import { credentialKeys } from './Keys.ts'
import { trustedIssuers } from './Trust.ts'

const issuer = 'https://facilitator.test'
const audience = 'https://api.test'
const now = Math.floor(Date.now() / 1000)

function claims(overrides: Partial<Credential.Claims> = {}): Credential.Claims {
  return {
    iss: issuer,
    aud: audience,
    sub: '0x857b06519E91e3A54538791bDbb0E22373e36b66',
    scope: 'GET /feed/*',
    paid: {
      scheme: 'exact',
      network: 'eip155:84532',
      asset: '0x036CbD53842c5426634e7929541eC2318f3dCF7e',
      amount: '100000',
      payTo: '0x209693Bc6afc0C5328bA36FaF03C514EF312287C',
      transaction: `0x${'ab'.repeat(32)}`,
    },
    iat: now,
    exp: now + 3600,
    jti: crypto.randomUUID(),
    uses: 3,
    ...overrides,
  }
}

const keys = credentialKeys()
const trust = trustedIssuers([{ issuer, jwks: await keys.jwks() }])
const verify = (token: string) => Credential.verify(token, { trust, audience })
const sign = async (overrides: Partial<Credential.Claims> = {}) => Credential.issue(await keys.signer(), claims(overrides))

const b64url = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
/** A token put together by hand, as an attacker would, with any header. */
function handMade(header: Record<string, unknown>, body: unknown, sign: (input: string) => string = () => ''): string {
  const input = `${b64url(header)}.${b64url(body)}`
  return `${input}.${sign(input)}`
}

describe('Credential.verify', () => {
  it('accepts a credential its trusted issuer signed, with every claim', async () => {
    const token = await sign()
    expect(token.length).toBeLessThan(1000)
    const result = await verify(token)
    expect(result).toMatchObject({ ok: true, claims: claims({ jti: expect.any(String) }), kid: (await keys.signer()).kid })
    expect(JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString())).toEqual({
      alg: 'EdDSA',
      kid: (await keys.signer()).kid,
      typ: 'x402-credential+jwt',
    })
  })

  it('accepts ES256', async () => {
    const ring = credentialKeys({ algorithm: 'ES256' })
    const token = await Credential.issue(await ring.signer(), claims())
    const result = await Credential.verify(token, { trust: trustedIssuers([{ issuer, jwks: await ring.jwks() }]), audience })
    expect(result.ok).toBe(true)
  })

  it.each<[string, () => Promise<string> | string, string]>([
    [
      'forged: signed by a key the issuer does not publish, under its kid',
      async () => {
        const forger = await credentialKeys().signer()
        return Credential.issue({ ...forger, kid: (await keys.signer()).kid }, claims())
      },
      'invalid_credential',
    ],
    ['forged: signed by an unknown key', async () => Credential.issue(await credentialKeys().signer(), claims()), 'invalid_credential'],
    ['expired', () => sign({ iat: now - 7200, exp: now - 3600 }), 'credential_expired'],
    ['expiring this second', () => sign({ exp: now }), 'credential_expired'],
    ['for another server', () => sign({ aud: 'https://other.test' }), 'credential_audience_mismatch'],
    ['from an untrusted issuer', () => sign({ iss: 'https://evil.test' }), 'credential_untrusted_issuer'],
    ['alg none', () => handMade({ alg: 'none', typ: 'x402-credential+jwt' }, claims()), 'credential_algorithm_not_allowed'],
    ['alg None', () => handMade({ alg: 'None' }, claims()), 'credential_algorithm_not_allowed'],
    ['no alg', () => handMade({ typ: 'JWT' }, claims(), () => 'c2ln'), 'credential_algorithm_not_allowed'],
    [
      'HS256 with the public key as the secret',
      async () => {
        const { publicJwk, kid } = keys.list()[0]!
        const secret = Buffer.from(publicJwk.x!, 'base64url')
        return handMade({ alg: 'HS256', kid, typ: 'x402-credential+jwt' }, claims(), (input) =>
          createHmac('sha256', secret).update(input).digest('base64url'),
        )
      },
      'credential_algorithm_not_allowed',
    ],
    ['RS256', () => handMade({ alg: 'RS256', kid: 'x' }, claims(), () => 'c2ln'), 'credential_algorithm_not_allowed'],
    ['oversized', () => `${'a'.repeat(3000)}.${'b'.repeat(1000)}.${'c'.repeat(200)}`, 'invalid_credential'],
    ['garbage', () => 'not a token', 'invalid_credential'],
    ['empty', () => '', 'invalid_credential'],
    ['three parts of nothing', () => '..', 'invalid_credential'],
    ['a header that is not JSON', () => `${b64url('{nope')}.${b64url(claims())}.c2ln`, 'invalid_credential'],
    [
      'another JWT signed by the same key (typ JWT)',
      async () => {
        const { SignJWT } = await import('jose')
        const signer = await keys.signer()
        return new SignJWT(claims()).setProtectedHeader({ alg: 'EdDSA', kid: signer.kid, typ: 'JWT' }).sign(signer.key)
      },
      'invalid_credential',
    ],
    [
      'a signature from another token',
      async () => `${(await sign()).split('.').slice(0, 2).join('.')}.${(await sign({ uses: 99 })).split('.')[2]}`,
      'invalid_credential',
    ],
    ['claims without a scope', () => sign({ scope: undefined as never }), 'invalid_credential'],
    ['claims with a paid amount that is not atomic', () => sign({ paid: { ...claims().paid, amount: '0.1' } }), 'invalid_credential'],
  ])('refuses a credential %s', async (_, make, reason) => {
    const result = await verify(await make())
    expect(result).toMatchObject({ ok: false, reason })
    if (!result.ok) expect(result.message.length).toBeGreaterThan(0)
  })

  it('refuses HS256 even where jose would be asked with the secret', async () => {
    // The allow list stands in front of any key: jose itself, pinned to it, refuses too.
    const { jwtVerify, errors } = await import('jose')
    const token = handMade({ alg: 'HS256' }, claims(), (input) => createHmac('sha256', 'secret').update(input).digest('base64url'))
    await expect(jwtVerify(token, new TextEncoder().encode('secret'), { algorithms: [...Credential.algorithms] })).rejects.toBeInstanceOf(
      errors.JOSEAlgNotAllowed,
    )
  })

  it('honours a narrower algorithm list', async () => {
    const result = await Credential.verify(await sign(), { trust, audience, algorithms: ['ES256'] })
    expect(result).toMatchObject({ ok: false, reason: 'credential_algorithm_not_allowed' })
  })

  it('checks expiry against the clock given', async () => {
    const token = await sign({ exp: now + 60 })
    expect((await Credential.verify(token, { trust, audience, now: () => (now + 59) * 1000 })).ok).toBe(true)
    expect(await Credential.verify(token, { trust, audience, now: () => (now + 61) * 1000 })).toMatchObject({
      reason: 'credential_expired',
    })
  })
})

describe('Credential.decode', () => {
  it('reads claims without verifying, for a client keeping its credentials', async () => {
    expect(Credential.decode(await sign())).toMatchObject({ scope: 'GET /feed/*', uses: 3 })
    expect(Credential.decode('garbage')).toBeUndefined()
    expect(Credential.decode(handMade({ alg: 'none' }, { scope: 'x' }))).toBeUndefined()
    expect(Credential.decode('x'.repeat(5000))).toBeUndefined()
  })
})
