import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { SchemeFacilitator } from 'x402kit'
import { BaseError } from 'x402kit'
import { ConfigError } from './config.ts'
import { createLogger, type LogLevel, logLevel, logRequests, requestLogger } from './log.ts'
import { startFacilitatorService } from './server.ts'

function capture(level: LogLevel = 'info') {
  const lines: string[] = []
  const logger = createLogger({ level, write: (line) => lines.push(line) })
  return { logger, lines, parsed: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) }
}

const privateKey = '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d'
const apiKey = 'Zx9Q3kT7mW2vB8nR4pL6yH1cF5dS0aJe'
const rpcUrl = `https://base-mainnet.g.alchemy.com/v2/${apiKey}?token=${apiKey}q`

describe('createLogger', () => {
  it('writes one JSON line: time, level, msg, then the fields', () => {
    const { logger, lines } = capture()
    logger.child({ network: 'eip155:8453' }).info('batch mined', { size: 3, gasUsed: 123_456n, at: new Date(0), skipped: undefined })
    expect(lines).toHaveLength(1)
    expect(lines[0]).not.toContain('\n')
    const line = JSON.parse(lines[0]!)
    expect(Object.keys(line)).toEqual(['time', 'level', 'msg', 'network', 'size', 'gasUsed', 'at'])
    expect(line.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    expect(line).toMatchObject({
      level: 'info',
      msg: 'batch mined',
      network: 'eip155:8453',
      size: 3,
      gasUsed: '123456',
      at: '1970-01-01T00:00:00.000Z',
    })
  })

  it('writes only lines at its level or above; fields never replace time, level or msg', () => {
    const { logger, parsed } = capture('warn')
    logger.debug('d')
    logger.info('i')
    logger.warn('w', { level: 'debug', msg: 'other' })
    logger.error('e')
    expect(parsed().map((line) => [line.level, line.msg])).toEqual([
      ['warn', 'w'],
      ['error', 'e'],
    ])
  })

  it('writes by default to stdout, newline-terminated', () => {
    const written: string[] = []
    const write = process.stdout.write
    process.stdout.write = ((chunk: string) => written.push(chunk) > 0) as typeof process.stdout.write
    try {
      createLogger().info('hello')
    } finally {
      process.stdout.write = write
    }
    expect(written).toHaveLength(1)
    expect(written[0]).toMatch(/^\{"time":"[^"]+","level":"info","msg":"hello"\}\n$/)
  })

  it('never writes a private key, an Authorization header or an RPC URL’s API key', () => {
    const { logger, lines, parsed } = capture()
    const cause = new Error(`HTTP request failed. URL: ${rpcUrl} Status: 429`)
    logger.error('settlement failed', {
      privateKey,
      signers: [privateKey],
      network: { rpcUrl, confirmations: 1 },
      request: { headers: new Headers({ authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' }) },
      headers: { Authorization: `Basic ${apiKey}`, 'X-API-Key': apiKey },
      databaseUrl: `postgres://app:${apiKey}@db.internal:5432/x402`,
      note: `retrying against ${rpcUrl}, then wss://user:${apiKey}@node.example/ws#${apiKey}`,
      error: new BaseError('The RPC did not answer.', { code: 'rpc_unavailable', details: `at ${rpcUrl}`, cause }),
    })
    logger.info(`connected to ${rpcUrl}`)
    const text = lines.join('\n')
    expect(text).not.toContain(privateKey)
    expect(text).not.toContain(privateKey.slice(2))
    expect(text).not.toContain(apiKey)
    const [line, info] = parsed()
    expect(line).toMatchObject({
      privateKey: '[redacted]',
      signers: '[redacted]',
      network: { rpcUrl: '[redacted]', confirmations: 1 },
      request: { headers: { authorization: '[redacted]', 'content-type': 'application/json' } },
      headers: { Authorization: '[redacted]', 'X-API-Key': '[redacted]' },
      databaseUrl: '[redacted]',
      note: 'retrying against https://base-mainnet.g.alchemy.com/…, then wss://node.example/…',
    })
    expect(info?.msg).toBe('connected to https://base-mainnet.g.alchemy.com/…')
    expect(line?.error).toEqual({
      name: 'X402Error',
      message: 'The RPC did not answer.\nDetails: at https://base-mainnet.g.alchemy.com/…',
      code: 'rpc_unavailable',
      cause: { name: 'Error', message: 'HTTP request failed. URL: https://base-mainnet.g.alchemy.com/… Status: 429' },
    })
  })

  it('writes stacks only at debug, and survives cycles and deep objects', () => {
    const error = Object.assign(new Error('boom'), { code: 'E_BOOM', secretThing: 'hidden' })
    const cyclic: Record<string, unknown> = { name: 'a' }
    cyclic.self = cyclic
    const { logger: info, parsed: atInfo } = capture('info')
    info.error('failed', { error, cyclic })
    expect(atInfo()[0]).toMatchObject({
      error: { name: 'Error', message: 'boom', code: 'E_BOOM' },
      cyclic: { name: 'a', self: '[circular]' },
    })
    expect(atInfo()[0]?.error).not.toHaveProperty('stack')
    expect(JSON.stringify(atInfo())).not.toContain('hidden')
    const { logger: debug, parsed: atDebug } = capture('debug')
    debug.error('failed', { error })
    expect((atDebug()[0]?.error as { stack?: string } | undefined)?.stack).toMatch(/^Error: boom\n\s+at /)
  })
})

describe('logLevel', () => {
  it('reads LOG_LEVEL, info when unset, and refuses others', () => {
    expect(logLevel({})).toBe('info')
    expect(logLevel({ LOG_LEVEL: ' Debug ' })).toBe('debug')
    expect(logLevel({ LOG_LEVEL: 'error' })).toBe('error')
    expect(() => logLevel({ LOG_LEVEL: 'verbose' })).toThrow(ConfigError)
    expect(() => logLevel({ LOG_LEVEL: 'verbose' })).toThrow(/LOG_LEVEL: must be one of debug, info, warn, error/)
  })
})

describe('logRequests', () => {
  const handler = async (request: Request) => Response.json({ ok: true }, { status: request.url.endsWith('/missing') ? 404 : 200 })

  it('echoes a sane X-Request-Id, makes one up otherwise, and logs one line per request', async () => {
    const { logger, parsed } = capture('debug')
    const fetch = logRequests(handler, logger, { quiet: ['/health'] })
    const sane = 'req-1.2_3'
    const echoed = await fetch(new Request('http://x/verify?apiKey=secret', { method: 'POST', headers: { 'x-request-id': sane } }))
    expect(echoed.headers.get('x-request-id')).toBe(sane)
    expect(await echoed.json()).toEqual({ ok: true })

    const made = (await fetch(new Request('http://x/health'))).headers.get('x-request-id')
    expect(made).toMatch(/^[0-9a-f-]{36}$/)
    for (const insane of ['a'.repeat(129), 'has space', 'quote"d', 'semi;colon', '<script>', 'a/b']) {
      const id = (await fetch(new Request('http://x/missing', { headers: { 'x-request-id': insane } }))).headers.get('x-request-id')
      expect(id).toMatch(/^[0-9a-f-]{36}$/)
      expect(id).not.toBe(made)
    }
    expect((await fetch(new Request('http://x/v', { headers: { 'x-request-id': 'a'.repeat(128) } }))).headers.get('x-request-id')).toBe(
      'a'.repeat(128),
    )

    const lines = parsed()
    expect(lines).toHaveLength(9)
    expect(lines[0]).toEqual({
      time: expect.any(String),
      level: 'info',
      msg: 'request',
      requestId: sane,
      method: 'POST',
      path: '/verify',
      status: 200,
      ms: expect.any(Number),
    })
    expect(lines[1]).toMatchObject({ level: 'debug', path: '/health', status: 200, requestId: made })
    expect(lines[2]).toMatchObject({ level: 'info', method: 'GET', path: '/missing', status: 404 })
    expect(JSON.stringify(lines)).not.toContain('secret')
  })

  it('gives the handler a logger with the request id', async () => {
    const { logger, parsed } = capture()
    const fetch = logRequests(async () => {
      requestLogger(createLogger()).warn('inside')
      return new Response('ok')
    }, logger)
    await fetch(new Request('http://x/settle', { headers: { 'x-request-id': 'abc' } }))
    expect(parsed().map(({ msg, requestId }) => [msg, requestId])).toEqual([
      ['inside', 'abc'],
      ['request', 'abc'],
    ])
    requestLogger(logger).info('outside')
    expect(parsed()[2]).not.toHaveProperty('requestId')
  })

  it('answers a handler that throws with a 500 problem carrying the request id, logged with the error', async () => {
    const { logger, parsed } = capture()
    const fetch = logRequests(() => {
      throw new Error(`down: ${rpcUrl}`)
    }, logger)
    const response = await fetch(new Request('http://x/settle', { method: 'POST', headers: { 'x-request-id': 'r1' } }))
    expect(response.status).toBe(500)
    expect(response.headers.get('x-request-id')).toBe('r1')
    expect(await response.json()).toMatchObject({ status: 500, code: 'internal_error', requestId: 'r1' })
    expect(parsed()).toMatchObject([
      { level: 'error', msg: 'request failed', requestId: 'r1', error: { message: 'down: https://base-mainnet.g.alchemy.com/…' } },
      { level: 'error', msg: 'request', requestId: 'r1', status: 500 },
    ])
  })

  it('copies a response whose headers are immutable', async () => {
    const { logger } = capture()
    const immutable = Response.redirect('http://x/elsewhere', 302)
    const response = await logRequests(() => immutable, logger)(new Request('http://x/'))
    expect(response.status).toBe(302)
    expect(response.headers.get('location')).toBe('http://x/elsewhere')
    expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/)
  })
})

describe('the facilitator service', () => {
  it('tags each response with its request id and logs one access line for it', async () => {
    const network = 'eip155:84532'
    const scheme: SchemeFacilitator = {
      scheme: 'exact',
      networks: [network],
      verify: async () => ({ isValid: true, payer: '0xpayer' }),
      settle: async () => ({ success: true, payer: '0xpayer', transaction: '0x1', network }),
      settlementKey: (paid) => String(paid.payload.payload.nonce),
      signers: () => [],
    }
    const dataDir = await mkdtemp(join(tmpdir(), 'x402-log-'))
    const { logger, parsed } = capture()
    const service = await startFacilitatorService({ port: 0, dataDir }, { schemes: [scheme], logger })
    try {
      const requirements = { scheme: 'exact', network, amount: '1000', asset: '0xasset', payTo: '0xpayto', maxTimeoutSeconds: 60 }
      const body = JSON.stringify({
        x402Version: 2,
        paymentPayload: { x402Version: 2, accepted: requirements, payload: { nonce: 'n1' } },
        paymentRequirements: requirements,
      })
      const verified = await fetch(`${service.url}/verify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': 'client-42', authorization: `Bearer ${apiKey}` },
        body,
      })
      expect(verified.status).toBe(200)
      expect(verified.headers.get('x-request-id')).toBe('client-42')
      const health = await fetch(`${service.url}/health`, { headers: { 'x-request-id': 'x'.repeat(200) } })
      expect(health.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/)
    } finally {
      await service.close()
      await rm(dataDir, { recursive: true, force: true })
    }
    // `/health` is a probe: at debug only.
    expect(parsed()).toEqual([
      {
        time: expect.any(String),
        level: 'info',
        msg: 'request',
        requestId: 'client-42',
        method: 'POST',
        path: '/verify',
        status: 200,
        ms: expect.any(Number),
      },
    ])
    expect(JSON.stringify(parsed())).not.toContain(apiKey)
  })
})
