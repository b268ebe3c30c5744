import * as crypto from 'node:crypto'
import { describe, expect, it, vi } from 'vitest'
import { parseConfig } from '../config.ts'
import { createAccessGuard, hashApiKey } from './guard.ts'
import { tokenBuckets } from './rateLimit.ts'

vi.mock('node:crypto', async (original) => {
  const actual = await original<typeof import('node:crypto')>()
  return { ...actual, timingSafeEqual: vi.fn(actual.timingSafeEqual) }
})

const shopKey = 'sk_live_7f3a9c1e5b2d4680aa11bb22cc33dd44'
const cafeKey = 'sk_live_0e1d2c3b4a5968778695a4b3c2d1e0f0'
const keys = [
  { key: shopKey, merchant: 'shop', payTo: ['0x209693Bc6afc0C5328bA36FaF03C514EF312287C'] },
  { key: hashApiKey(cafeKey), merchant: 'cafe' },
]

const post = (path: string, authorization?: string) =>
  new Request(`http://facilitator.test${path}`, {
    method: 'POST',
    body: '{}',
    headers: authorization ? { authorization } : {},
  })

function clock(start = 1_700_000_000_000) {
  let time = start
  return { now: () => time, advance: (ms: number) => (time += ms) }
}

describe('createAccessGuard: API keys', () => {
  const access = createAccessGuard({ apiKeys: keys })

  it('answers a request without a key with 401 and WWW-Authenticate: Bearer', async () => {
    for (const authorization of [undefined, 'Basic c2hvcDpwYXNz', 'Bearer ']) {
      const response = await access.guard(post('/settle', authorization))
      expect(response?.status).toBe(401)
      expect(response?.headers.get('www-authenticate')).toBe('Bearer realm="x402"')
      expect(response?.headers.get('content-type')).toBe('application/problem+json')
      expect(await response?.json()).toEqual({
        type: 'about:blank',
        title: 'Unauthorized',
        status: 401,
        detail: 'This facilitator needs an API key: send Authorization: Bearer <key>.',
        code: 'missing_api_key',
      })
    }
  })

  it('answers an unknown key with 401, and never repeats it', async () => {
    const response = await access.guard(post('/verify', 'Bearer sk_live_guessed'))
    expect(response?.status).toBe(401)
    expect(response?.headers.get('www-authenticate')).toBe('Bearer realm="x402", error="invalid_token"')
    const text = await response!.text()
    expect(text).not.toContain('guessed')
    expect(JSON.parse(text)).toMatchObject({ status: 401, code: 'invalid_api_key' })
    // A digest of a configured key is not itself a key.
    expect((await access.guard(post('/verify', `Bearer ${hashApiKey(cafeKey)}`)))?.status).toBe(401)
  })

  it('lets a known key through, given as the key or as its digest, and names its merchant', async () => {
    expect(await access.guard(post('/verify', `Bearer ${shopKey}`))).toBeUndefined()
    expect(await access.guard(post('/enqueue/', `bearer ${cafeKey}`))).toBeUndefined()
    expect(access.identify(post('/settle', `Bearer ${shopKey}`))).toEqual({
      merchant: 'shop',
      payTo: ['0x209693Bc6afc0C5328bA36FaF03C514EF312287C'],
    })
    expect(access.identify(post('/settle', `Bearer ${cafeKey}`))).toEqual({ merchant: 'cafe' })
    expect(access.identify(post('/settle', 'Bearer nope'))).toBeUndefined()
    expect(access.identify(post('/settle'))).toBeUndefined()
  })

  it('compares digests in constant time, against every key', async () => {
    const timingSafeEqual = vi.mocked(crypto.timingSafeEqual)
    timingSafeEqual.mockClear()
    await access.guard(post('/settle', `Bearer ${shopKey}`))
    expect(timingSafeEqual).toHaveBeenCalledTimes(keys.length)
    for (const [a, b] of timingSafeEqual.mock.calls) {
      expect(a).toHaveLength(32)
      expect(b).toHaveLength(32)
    }
  })

  it('leaves other paths alone', async () => {
    expect(await access.guard(new Request('http://facilitator.test/supported'))).toBeUndefined()
    expect(await access.guard(new Request('http://facilitator.test/health'))).toBeUndefined()
  })

  it('takes the checked access configuration as it is', async () => {
    const { access: config } = parseConfig({ access: { apiKeys: [{ key: shopKey, merchant: 'shop' }] } })
    const guard = createAccessGuard(config)
    expect(await guard.guard(post('/settle', `Bearer ${shopKey}`))).toBeUndefined()
    expect(guard.identify(post('/settle', `Bearer ${shopKey}`))).toEqual({ merchant: 'shop' })
  })

  it('keeps digests only', () => {
    expect(hashApiKey(shopKey)).toMatch(/^sha256:[0-9a-f]{64}$/)
    expect(hashApiKey(hashApiKey(shopKey).toUpperCase().replace('SHA256', 'sha256'))).toBe(hashApiKey(shopKey))
    expect(() => hashApiKey('')).toThrow('An API key cannot be empty.')
  })
})

describe('createAccessGuard: rate limit', () => {
  it('answers 429 with Retry-After past the burst, per API key, until tokens come back', async () => {
    const time = clock()
    const access = createAccessGuard({ apiKeys: keys, rateLimit: { requestsPerSecond: 0.5, burst: 2 }, now: time.now })
    const shop = () => access.guard(post('/settle', `Bearer ${shopKey}`))
    expect(await shop()).toBeUndefined()
    expect(await shop()).toBeUndefined()
    const refused = await shop()
    expect(refused?.status).toBe(429)
    expect(refused?.headers.get('retry-after')).toBe('2')
    expect(await refused?.json()).toEqual({
      type: 'about:blank',
      title: 'Too Many Requests',
      status: 429,
      detail: 'Too many requests; try again in 2 s.',
      code: 'rate_limited',
    })
    // Another key has its own bucket.
    expect(await access.guard(post('/settle', `Bearer ${cafeKey}`))).toBeUndefined()
    time.advance(1_999)
    expect((await shop())?.headers.get('retry-after')).toBe('1')
    time.advance(1)
    expect(await shop()).toBeUndefined()
    expect((await shop())?.status).toBe(429)
  })

  it('limits per client address without keys', async () => {
    const time = clock()
    const access = createAccessGuard({ rateLimit: { requestsPerSecond: 10, burst: 1 }, now: time.now })
    expect(await access.guard(post('/verify'), '203.0.113.7')).toBeUndefined()
    expect((await access.guard(post('/verify'), '203.0.113.7'))?.headers.get('retry-after')).toBe('1')
    expect(await access.guard(post('/verify'), '203.0.113.8')).toBeUndefined()
    time.advance(100)
    expect(await access.guard(post('/verify'), '203.0.113.7')).toBeUndefined()
    expect(access.identify(post('/verify'))).toBeUndefined()
  })

  it('keeps at most maxClients buckets, dropping the least recently used', async () => {
    const time = clock()
    const access = createAccessGuard({ rateLimit: { requestsPerSecond: 1, burst: 1 }, maxClients: 100, now: time.now })
    expect(await access.guard(post('/settle'), 'victim')).toBeUndefined()
    expect((await access.guard(post('/settle'), 'victim'))?.status).toBe(429)
    for (let n = 0; n < 1_000; n++) await access.guard(post('/settle'), `198.51.100.${n}`)
    // Not a second has passed: only its bucket's eviction explains the victim's full bucket.
    expect(await access.guard(post('/settle'), 'victim')).toBeUndefined()

    const buckets = tokenBuckets({ requestsPerSecond: 1, burst: 1 }, { maxClients: 100, now: time.now })
    for (let n = 0; n < 10_000; n++) buckets.take(`client ${n}`)
    expect(buckets.size).toBe(100)
    // Recently used ones stay; used again, they are still empty.
    expect(buckets.take('client 9999')).toBe(1)
    expect(buckets.take('client 0')).toBeUndefined()
    expect(buckets.size).toBe(100)
  })
})
