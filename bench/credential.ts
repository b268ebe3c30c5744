/**
 * Credential figures (issue 3, "Access credentials"): what one credential check costs, and how fast a
 * Hono paywall route answers on a credential next to the same price paid per request with `exact`,
 * in the same run. Part of `npm run bench`, and on its own:
 *
 *   npx tsx bench/credential.ts [--quick]      (BENCH_SECONDS, BENCH_CONCURRENCY override)
 *
 * Per-request `exact` goes through our facilitator service over HTTP (PGlite) to a local chain
 * (anvil, automine): verify, handler, settle on chain. The credential route is answered after the
 * offline check. Payments are signed before the clock starts, so both measure the server side; load
 * generator, resource server, facilitator and chain share this machine.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import type { Server } from 'node:http'
import { createServer } from 'node:net'
import os, { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serve } from '@hono/node-server'
import { type FacilitatorService, startFacilitatorService } from '@x402kit/facilitator'
import { Hono } from 'hono'
import { privateKeyToAccount } from 'viem/accounts'
import { HttpHeader, PaymentPayload, PaymentRequired } from 'x402kit'
import { wrapFetch } from 'x402kit/client'
import { Credential, credentialKeys, trustedIssuers } from 'x402kit/credential'
import { exactEvmClient, exactEvmFacilitator, toEvmSigner } from 'x402kit/evm'
import { paywall } from 'x402kit/hono'
import { createPaywall } from 'x402kit/server'
// The paywall's credential check itself, which no entry point exports.
import { credentialGate } from '../packages/x402kit/src/server/credentials.ts'
import { type Stack, startStack } from '../test/support.ts'

export type Rate = { requests: number; failures: number; seconds: number; perSecond: number; p50Ms: number; p99Ms: number }

export type CredentialFigures = {
  /** Microseconds per check. */
  check: { eddsa: number; es256: number; cached: number; paywallInProcess: number }
  http: { credential: Rate; exact: Rate; unpaid: Rate }
  /** Credential requests per second over `exact` requests per second. */
  ratio: number
  /** Median latency the credential path adds over an unpaid route, in ms. */
  addedLatencyMs: number
  concurrency: number
}

const quick = process.argv.includes('--quick')
const seconds = Number(process.env.BENCH_SECONDS ?? (quick ? 3 : 8))
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32)
const issuerId = 'https://facilitator.bench'
const audience = 'http://api.bench'

/** Microseconds per call of `run`, after a warm-up, run one at a time. */
async function perCall(run: () => Promise<unknown>, count: number): Promise<number> {
  for (let i = 0; i < Math.min(500, count); i++) await run()
  const started = performance.now()
  for (let i = 0; i < count; i++) await run()
  return ((performance.now() - started) * 1000) / count
}

function claims(): Credential.Claims {
  const iat = Math.floor(Date.now() / 1000)
  return {
    iss: issuerId,
    aud: audience,
    sub: '0x857b06519E91e3A54538791bDbb0E22373e36b66',
    scope: 'GET /window/*',
    paid: {
      scheme: 'exact',
      network: 'eip155:84532',
      asset: '0x036CbD53842c5426634e7929541eC2318f3dCF7e',
      amount: '1000',
      payTo: '0x209693Bc6afc0C5328bA36FaF03C514EF312287C',
      transaction: `0x${'ab'.repeat(32)}`,
    },
    iat,
    exp: iat + 3600,
    jti: crypto.randomUUID(),
  }
}

/** The cost of a check: a full signature verification per call, and the paywall's whole credential path in-process. */
async function checkCost(count: number): Promise<CredentialFigures['check']> {
  const verifyWith = async (algorithm: 'EdDSA' | 'ES256') => {
    const keys = credentialKeys({ algorithm })
    const trust = trustedIssuers([{ issuer: issuerId, jwks: await keys.jwks() }])
    const token = await Credential.issue(await keys.signer(), claims())
    return perCall(async () => {
      if (!(await Credential.verify(token, { trust, audience })).ok) throw new Error('bench: the credential did not verify')
    }, count)
  }
  const keys = credentialKeys()
  const paywallCore = createPaywall({
    facilitator: { verify: notCalled, settle: notCalled, supported: notCalled },
    payTo: '0x209693Bc6afc0C5328bA36FaF03C514EF312287C',
    network: 'eip155:84532',
    routes: { 'GET /window/*': { price: '$0.001', grants: { window: '1h' } } },
    credentials: { audience, trust: [{ issuer: issuerId, jwks: await keys.jwks() }] },
  })
  const token = await Credential.issue(await keys.signer(), claims())
  const gate = credentialGate({ audience, trust: [{ issuer: issuerId, jwks: await keys.jwks() }] })
  const grant = { audience, scope: 'GET /window/*', windowSeconds: 3600 }
  const offers = [{ ...claims().paid, maxTimeoutSeconds: 300 }]
  const request = { method: 'GET', readings: ['/window/today'], grant, offers }
  const cached = await perCall(async () => {
    if (!(await gate.admit(token, request)).ok) throw new Error('bench: the credential was refused')
  }, count)
  const ok = async () => new Response('ok')
  const paywallInProcess = await perCall(async () => {
    const request = new Request('http://api.bench/window/today', { headers: { [HttpHeader.paymentCredential]: token } })
    if ((await paywallCore.handle(request, ok)).status !== 200) throw new Error('bench: the credential was refused')
  }, count)
  return { eddsa: await verifyWith('EdDSA'), es256: await verifyWith('ES256'), cached, paywallInProcess }
}

async function notCalled(): Promise<never> {
  throw new Error('bench: the credential path called the facilitator')
}

/** `concurrency` loops of requests for `seconds`, each with the headers `next` gives (`undefined`: stop). */
async function load(url: string, next: () => Record<string, string> | undefined): Promise<Rate> {
  const latencies: number[] = []
  let failures = 0
  const started = performance.now()
  const deadline = started + seconds * 1000
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const headers = next()
        if (!headers) return
        const at = performance.now()
        const response = await fetch(url, { headers }).catch(() => undefined)
        await response?.arrayBuffer()
        if (response?.status === 200) latencies.push(performance.now() - at)
        else failures++
      }
    }),
  )
  const elapsed = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? Number.NaN
  return { requests: latencies.length, failures, seconds: elapsed, perSecond: latencies.length / elapsed, p50Ms: at(0.5), p99Ms: at(0.99) }
}

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Devnet, our facilitator service issuing credentials (2 signer keys), and a Hono paywall on loopback. */
async function startServers(): Promise<{ stack: Stack; issuer: FacilitatorService; url: string; close(): Promise<void> }> {
  const stack = await startStack({ payers: 1, spareSigners: 2, serviceSigners: 1 })
  const dataDir = await mkdtemp(join(tmpdir(), 'x402kit-bench-credential-'))
  const port = await freePort()
  const networks = { [stack.network]: { rpcUrl: stack.devnet.rpcUrl, signers: stack.spareSigners.map((account) => account.privateKey) } }
  const issuer = await startFacilitatorService(
    { port, host: '127.0.0.1', dataDir, networks, credentials: { issuer: `http://127.0.0.1:${port}` } },
    { schemes: [exactEvmFacilitator({ networks })] },
  )
  const offer = { price: '$0.001', network: stack.network, asset: stack.asset }
  const app = new Hono()
  app.use(
    paywall({
      facilitator: issuer.url,
      payTo: stack.payTo,
      routes: { 'GET /paid': offer, 'GET /window/*': { ...offer, grants: { window: '1h' } } },
      credentials: { audience, trust: [{ issuer: issuer.url }] },
    }),
  )
  app.get('/*', (c) => c.json({ weather: 'sunny' }))
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as Server
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  return {
    stack,
    issuer,
    url,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
      await issuer.close({ graceMs: 1_000 })
      await stack.stop()
      await rm(dataDir, { recursive: true, force: true })
    },
  }
}

/** Runs the credential figures: the check's cost in-process, then both routes over HTTP on one stack. */
export async function runCredentialBench(log: (line: string) => void = () => {}): Promise<CredentialFigures> {
  log('credential: check cost in-process')
  const check = await checkCost(quick ? 2_000 : 10_000)
  log('credential: starting devnet, facilitator service and Hono paywall')
  const servers = await startServers()
  try {
    const account = privateKeyToAccount(servers.stack.payers[0]!.privateKey)
    const bought = await wrapFetch(fetch, { account, budget: { perRequest: '$0.01' } })(`${servers.url}/window/today`)
    const token = bought.headers.get(HttpHeader.paymentCredential)
    if (bought.status !== 200 || !token) throw new Error(`bench: buying the credential failed (${bought.status})`)

    const asked = await fetch(`${servers.url}/paid`)
    const required = PaymentRequired.decode(asked.headers.get(HttpHeader.paymentRequired)!)
    const scheme = exactEvmClient(await toEvmSigner(account))
    const count = quick ? 600 : 2_000
    log(`credential: signing ${count} exact payments before the clock starts`)
    const payments: string[] = []
    for (let i = 0; i < count; i++) {
      const payload = await scheme.createPayload(required.accepts[0]!, { resource: required.resource.url })
      payments.push(PaymentPayload.encode({ x402Version: 2, resource: required.resource, accepted: required.accepts[0]!, payload }))
    }

    log(`credential: ${concurrency} concurrent requests for ${seconds} s per route`)
    const unpaid = await load(`${servers.url}/free`, () => ({}))
    const credential = await load(`${servers.url}/window/today`, () => ({ [HttpHeader.paymentCredential]: token }))
    const exact = await load(`${servers.url}/paid`, () => {
      const payment = payments.pop()
      return payment === undefined ? undefined : { [HttpHeader.paymentSignature]: payment }
    })
    return {
      check,
      http: { credential, exact, unpaid },
      ratio: credential.perSecond / exact.perSecond,
      addedLatencyMs: credential.p50Ms - unpaid.p50Ms,
      concurrency,
    }
  } finally {
    await servers.close()
  }
}

export function renderCredentialFigures(figures: CredentialFigures): string {
  const { check, http } = figures
  const row = (name: string, rate: Rate) =>
    `| ${name} | ${rate.perSecond.toFixed(0)} | ${rate.p50Ms.toFixed(2)} | ${rate.p99Ms.toFixed(2)} | ${rate.requests} | ${rate.failures} |`
  return [
    `Credential check (${os.availableParallelism?.() ?? os.cpus().length} CPUs, ${os.cpus()[0]?.model.trim()}, Node ${process.version}):`,
    `  full verification, EdDSA: ${check.eddsa.toFixed(1)} µs   ES256: ${check.es256.toFixed(1)} µs   (target < 100 µs)`,
    `  a repeated credential (verified token cached; expiry, scope, price and terms checked): ${check.cached.toFixed(1)} µs`,
    `  paywall.handle on the credential path in-process, Request to Response: ${check.paywallInProcess.toFixed(1)} µs`,
    '',
    `Hono paywall over loopback HTTP, ${figures.concurrency} concurrent requests:`,
    '| route | req/s | p50 ms | p99 ms | served | failed |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    row('unpaid (no paywall route)', http.unpaid),
    row('served on a credential', http.credential),
    row('paid per request, exact', http.exact),
    '',
    `credential / exact: ${figures.ratio.toFixed(1)}× the requests per second (target ≥ 20×); the credential path adds ${figures.addedLatencyMs.toFixed(2)} ms at the median over an unpaid route`,
  ].join('\n')
}

if (import.meta.url === `file://${process.argv[1]}`)
  runCredentialBench((line) => console.error(line)).then(
    (figures) => console.log(renderCredentialFigures(figures)),
    (error) => {
      console.error(error)
      process.exit(1)
    },
  )
