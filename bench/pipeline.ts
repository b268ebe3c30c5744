/**
 * The settlement pipeline (DESIGN §5) beside the reference facilitator, in one run on one local
 * chain with 2-second blocks and a block gas limit of 1,000,000,000 (neither stack fills a block, so
 * the chain's capacity is not what is measured): settled payments per second, gas per payment
 * (batched vs one transaction each), and what a paid request adds when its route answers before
 * settlement (`settlement: 'after-response'`).
 *
 *   npm run bench -- --pipeline-only     (or BENCH_ONLY=pipeline npm run bench; add --quick for a smoke run)
 *
 * Environment: DATABASE_URL (our queue on PostgreSQL, in a fresh schema, instead of PGlite),
 * BENCH_PIPELINE_PAYMENTS (payments submitted to ours), BENCH_PIPELINE_SIGNERS (our signer keys, default 8),
 * BENCH_PIPELINE_MAX_ITEMS (payments per batch transaction, default 400).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { serve } from '@hono/node-server'
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import { type Database, migrate, openDatabase, sqlStore } from '@x402kit/facilitator'
import { Hono } from 'hono'
import pg from 'pg'
import { defineChain, type Hash } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { anvil } from 'viem/chains'
import { type Asset, Base64Json, Facilitator as FacilitatorWire, HttpHeader, type Payment, PaymentPayload, PaymentRequired } from 'x402kit'
import { exactEvmClient, exactEvmFacilitator } from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import type { PaywallConfig } from 'x402kit/server'
import { referenceFacilitator, startReferenceFacilitator, startReferenceServer } from '../test/reference.ts'
import { type CpuTime, childNamed, cpuTime, elapsedCpu, machineBusy } from './cpu.ts'
import { renderPipeline } from './report.ts'
import { registerUsdc } from './serve.ts'
import { priceAtomic } from './stacks.ts'

export type PipelineSettings = {
  blockTime: number
  gasLimit: bigint
  /** Payments submitted to ours, signed before the clock starts. */
  payments: number
  payers: number
  signers: number
  maxItems: number
  /** Payments in flight at once against ours (`enqueue`). */
  concurrency: number
  /** Concurrent `settle` calls against the reference, and for how long new ones start. */
  referenceConcurrency: number
  referenceSeconds: number
  /** Paid/free request pairs against ours, and paid requests against the reference. */
  latencyPairs: number
  /**
   * Payers of ours's paid requests, in turn: each pays again within a few blocks, as a client of an
   * after-response route does. The payers' first payments are measured apart (`latency.first`).
   */
  latencyPayers: number
  referencePaid: number
  database: 'pglite' | 'postgres'
}

export type Throughput = {
  submitted: number
  settled: number
  failed: number
  reasons: [string, number][]
  /** From the first submission to the last payment settled (ours) or answered (reference). */
  seconds: number
  perSecond: number
  /** Ours: until every payment was durably queued. */
  queuedSeconds?: number
  gasUsed: bigint
  transactions: number
  /** CPU seconds of this process (facilitator and submitters) and of anvil, and of the whole machine. */
  cpu: CpuTime
  machineBusySeconds: number | undefined
}

export type Latency = { paid: number[]; free: number[]; failures: number }

export type PipelineFigures = {
  settings: PipelineSettings
  signingSeconds: number
  ours: Throughput
  reference: Throughput
  /** The payTo's USDC increase, against settled payments × price. */
  received: bigint
  /** `first`: ours, each paid request the first of its payer that this facilitator sees. */
  latency: { ours: Latency | undefined; first?: Latency | undefined; reference: Latency; note?: string }
}

export function pipelineSettings(quick: boolean): PipelineSettings {
  return {
    blockTime: 2,
    gasLimit: 1_000_000_000n,
    // Enough that the wait for the last batch's block (up to one block time plus a confirmation poll)
    // is a small part of the run at the rate the target asks for: 10,000 at 1,000/s is 10 s of queueing.
    payments: Number(process.env.BENCH_PIPELINE_PAYMENTS) || (quick ? 1_000 : 10_000),
    payers: quick ? 40 : 150,
    signers: Number(process.env.BENCH_PIPELINE_SIGNERS) || 8,
    maxItems: Number(process.env.BENCH_PIPELINE_MAX_ITEMS) || 400,
    concurrency: 256,
    referenceConcurrency: 64,
    referenceSeconds: quick ? 4 : 8,
    latencyPairs: quick ? 40 : 200,
    latencyPayers: 8,
    referencePaid: quick ? 2 : 5,
    database: process.env.DATABASE_URL ? 'postgres' : 'pglite',
  }
}

type Accounts = { payTo: DevnetAccount; reference: DevnetAccount; signers: DevnetAccount[]; payers: DevnetAccount[]; asset: Asset }

export async function runPipelineBench(quick: boolean, log: (line: string) => void = () => {}): Promise<PipelineFigures> {
  const settings = pipelineSettings(quick)
  log(`pipeline: devnet with ${settings.blockTime} s blocks, block gas limit ${settings.gasLimit}, ${settings.payers} payers`)
  const devnet = await startDevnet({
    blockTime: settings.blockTime,
    gasLimit: settings.gasLimit,
    accounts: 2 + settings.signers + settings.payers,
  })
  try {
    const [payTo, reference, ...rest] = devnet.accounts
    const accounts: Accounts = {
      asset: registerUsdc({ network: devnet.network, chainId: devnet.chainId, usdc: devnet.usdc }),
      payTo: payTo!,
      reference: reference!,
      signers: rest.slice(0, settings.signers),
      payers: rest.slice(settings.signers),
    }
    const before = await devnet.usdcBalance(accounts.payTo.address)
    const offer = await offerOf(devnet, accounts)
    const referenceCount = settings.referenceConcurrency * (settings.referenceSeconds / settings.blockTime + 2)
    log(`pipeline: signing ${settings.payments} + ${referenceCount} payments before the clock starts`)
    const signingStarted = performance.now()
    const ours = await sign(accounts.payers, offer, settings.payments)
    const theirs = await sign(accounts.payers, offer, referenceCount)
    const signingSeconds = (performance.now() - signingStarted) / 1000
    const oursThroughput = await measureOurs(devnet, accounts, settings, ours, log)
    log(`  ours: ${oursThroughput.settled} settled in ${oursThroughput.seconds.toFixed(1)} s, ${oursThroughput.perSecond.toFixed(0)}/s`)
    const referenceThroughput = await measureReference(devnet, accounts, settings, theirs, log)
    log(
      `  reference: ${referenceThroughput.settled} settled in ${referenceThroughput.seconds.toFixed(1)} s, ${referenceThroughput.perSecond.toFixed(1)}/s`,
    )
    const received = (await devnet.usdcBalance(accounts.payTo.address)) - before
    const latency = await measureLatency(devnet, accounts, settings, log)
    return { settings, signingSeconds, ours: oursThroughput, reference: referenceThroughput, received, latency }
  } finally {
    await devnet.stop()
  }
}

/** The paid route's offer, as our paywall makes it for the local chain's USDC. */
async function offerOf(devnet: Devnet, accounts: Accounts) {
  const probe = createPaywallServer(devnet, accounts, unusedFacilitator, {})
  const server = await listen(probe)
  try {
    const answer = await fetch(`${server.url}/paid`)
    return PaymentRequired.decode(answer.headers.get(HttpHeader.paymentRequired)!)
  } finally {
    await server.close()
  }
}

/** Signs `count` payments round-robin over the payers. */
async function sign(payers: DevnetAccount[], required: PaymentRequired.PaymentRequired, count: number): Promise<Payment[]> {
  const clients = payers.map((payer) => exactEvmClient(privateKeyToAccount(payer.privateKey)))
  const accepted = required.accepts[0]!
  const payments: Payment[] = []
  for (let i = 0; i < count; i++) {
    const payload = await clients[i % clients.length]!.createPayload(accepted, { resource: required.resource.url })
    payments.push({ payload: { x402Version: 2, resource: required.resource, accepted, payload }, requirements: accepted })
  }
  return payments
}

/** Our store: PGlite in a fresh folder (as the service runs it), or PostgreSQL in a fresh schema. */
async function openStore(): Promise<{ db: Database; close(): Promise<void> }> {
  const url = process.env.DATABASE_URL
  if (url) {
    const schema = `x402kit_bench_${Date.now().toString(36)}`
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    await admin.query(`CREATE SCHEMA ${schema}`)
    const scoped = new URL(url)
    scoped.searchParams.set('options', `-c search_path=${schema}`)
    const db = await openDatabase({ databaseUrl: scoped.toString() })
    await migrate(db)
    return {
      db,
      async close() {
        await db.close()
        await admin.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {})
        await admin.end()
      },
    }
  }
  const dataDir = await mkdtemp(path.join(tmpdir(), 'x402kit-bench-pipeline-'))
  const db = await openDatabase({ dataDir })
  await migrate(db)
  return {
    db,
    async close() {
      await db.close()
      await rm(dataDir, { recursive: true, force: true })
    },
  }
}

type Tally = { settled: number; failed: number; reasons: Map<string, number>; gasUsed: bigint; batches: number }

function ourFacilitator(devnet: Devnet, accounts: Accounts, settings: PipelineSettings, db: Database, tally: Tally, counted: () => void) {
  return createFacilitator({
    schemes: [
      exactEvmFacilitator({
        networks: {
          [devnet.network]: {
            rpcUrl: devnet.rpcUrl,
            signers: accounts.signers.map((signer) => signer.privateKey),
            batcher: devnet.batcher,
          },
        },
        batch: { maxItems: settings.maxItems },
      }),
    ],
    store: sqlStore(db),
    onError: () => {},
    pipeline: {
      log: () => {},
      onEvent(event) {
        if (event.type === 'item' && event.outcome !== 'queued') {
          if (event.outcome === 'settled') tally.settled++
          else count(tally, event.outcome)
          counted()
        } else if (event.type === 'batch' && event.outcome !== 'dropped') {
          tally.gasUsed += event.gasUsed
          tally.batches++
        }
      },
    },
  })
}

function count(tally: Pick<Tally, 'failed' | 'reasons'>, reason: string) {
  tally.failed++
  tally.reasons.set(reason, (tally.reasons.get(reason) ?? 0) + 1)
}

/** Every payment through `enqueue`, then until the pipeline has recorded the last outcome. */
async function measureOurs(
  devnet: Devnet,
  accounts: Accounts,
  settings: PipelineSettings,
  payments: Payment[],
  log: (line: string) => void,
) {
  const store = await openStore()
  const tally: Tally = { settled: 0, failed: 0, reasons: new Map(), gasUsed: 0n, batches: 0 }
  let finished!: () => void
  const done = new Promise<void>((resolve) => (finished = resolve))
  const counted = () => tally.settled + tally.failed >= payments.length && finished()
  const facilitator = ourFacilitator(devnet, accounts, settings, store.db, tally, counted)
  try {
    log(`pipeline: ours (${settings.database}), ${payments.length} payments through enqueue, ${settings.concurrency} in flight`)
    const meter = cpuMeter()
    const started = performance.now()
    await inPool(payments, settings.concurrency, async (payment) => {
      const answer = await facilitator.enqueue(payment)
      if (answer.success) return
      count(tally, answer.errorReason ?? 'unknown')
      counted()
    })
    const queuedSeconds = (performance.now() - started) / 1000
    log(`pipeline: ours queued every payment in ${queuedSeconds.toFixed(1)} s; waiting for the last batch`)
    await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 120_000).unref())])
    const seconds = (performance.now() - started) / 1000
    return {
      submitted: payments.length,
      settled: tally.settled,
      failed: tally.failed,
      reasons: [...tally.reasons],
      seconds,
      perSecond: tally.settled / seconds,
      queuedSeconds,
      gasUsed: tally.gasUsed,
      transactions: tally.batches,
      ...meter(),
    }
  } finally {
    await facilitator.close({ graceMs: 1_000 })
    await store.close()
  }
}

/** The reference's `settle`, `referenceConcurrency` at a time, new ones starting for `referenceSeconds`. */
async function measureReference(
  devnet: Devnet,
  accounts: Accounts,
  settings: PipelineSettings,
  payments: Payment[],
  log: (line: string) => void,
): Promise<Throughput> {
  const facilitator = referenceFacilitator({
    rpcUrl: devnet.rpcUrl,
    chain: referenceChain(devnet, settings.blockTime),
    privateKey: accounts.reference.privateKey,
    network: devnet.network,
  })
  log(`pipeline: reference, settle at ${settings.referenceConcurrency} concurrent for ${settings.referenceSeconds} s`)
  const tally = { failed: 0, reasons: new Map<string, number>() }
  const transactions: Hash[] = []
  let next = 0
  let last = 0
  const meter = cpuMeter()
  const started = performance.now()
  const deadline = started + settings.referenceSeconds * 1000
  await Promise.all(
    Array.from({ length: settings.referenceConcurrency }, async () => {
      while (performance.now() < deadline && next < payments.length) {
        const payment = payments[next++]!
        try {
          const answer = await facilitator.settle(payment.payload as never, payment.requirements as never)
          if (answer.success) transactions.push(answer.transaction as Hash)
          else count(tally, answer.errorReason ?? 'unknown')
        } catch (error) {
          count(tally, (error instanceof Error ? error.message : String(error)).split('\n')[0]!.slice(0, 100))
        }
        last = performance.now()
      }
    }),
  )
  const seconds = (Math.max(last, deadline) - started) / 1000
  const cpu = meter()
  const receipts = await Promise.all(transactions.map((hash) => devnet.publicClient.getTransactionReceipt({ hash })))
  return {
    submitted: next,
    settled: transactions.length,
    ...tally,
    reasons: [...tally.reasons],
    seconds,
    perSecond: transactions.length / seconds,
    gasUsed: receipts.reduce((sum, receipt) => sum + receipt.gasUsed, 0n),
    transactions: new Set(transactions).size,
    ...cpu,
  }
}

/** The reference facilitator's view of the chain: viem polls receipts every half block time (1 s here). */
function referenceChain(devnet: Devnet, blockTime: number) {
  return defineChain({ ...anvil, id: devnet.chainId, rpcUrls: { default: { http: [devnet.rpcUrl] } }, blockTime: blockTime * 1000 })
}

/**
 * Paid requests with their payment header already built, alternating with free requests to the same
 * server: ours with the route in after-response mode and the facilitator in-process; the reference's
 * Express middleware with its facilitator over loopback HTTP, waiting for its block.
 */
async function measureLatency(devnet: Devnet, accounts: Accounts, settings: PipelineSettings, log: (line: string) => void) {
  const store = await openStore()
  const tally: Tally = { settled: 0, failed: 0, reasons: new Map(), gasUsed: 0n, batches: 0 }
  const facilitator = ourFacilitator(devnet, accounts, settings, store.db, tally, () => {})
  const route = { settlement: 'after-response', maxUnsettled: '$1' }
  const ours = await listen(createPaywallServer(devnet, accounts, facilitator, route))
  let oursLatency: Latency | undefined
  let first: Latency | undefined
  let note: string | undefined
  try {
    const asked = await fetch(`${ours.url}/paid`)
    const required = PaymentRequired.decode(asked.headers.get(HttpHeader.paymentRequired)!)
    const count = settings.latencyPairs + 11
    const returning = accounts.payers.slice(0, settings.latencyPayers)
    const fresh = accounts.payers.slice(settings.latencyPayers)
    log(
      `pipeline: after-response latency, ${settings.latencyPairs} paid + free pairs from ${returning.length} payers, ` +
        `then the first payments of ${fresh.length} others (signed first)`,
    )
    const encode = (payments: Payment[]) => payments.map((payment) => PaymentPayload.encode(payment.payload))
    const headers = encode(await sign(returning, required, count))
    const firsts = encode(await sign(fresh, required, fresh.length))
    const probe = await timed(`${ours.url}/paid`, headers.pop())
    // Answered before settlement: the receipt says queued, or carries no transaction yet.
    const early = probe.status === 200 && (probe.settlement?.extensions?.settlement !== undefined || !probe.settlement?.transaction)
    if (!early)
      note =
        `the paywall in this tree has no after-response mode (its paid answer came ${probe.ms.toFixed(0)} ms later, ` +
        `${probe.settlement?.transaction ? 'settled on chain' : `status ${probe.status}`}); ours is not measured`
    else {
      oursLatency = await pairs(`${ours.url}/paid`, `${ours.url}/free`, headers, 10)
      first = await pairs(`${ours.url}/paid`, `${ours.url}/free`, firsts, 0)
    }
  } finally {
    await ours.close()
    await facilitator.close({ graceMs: 1_000 })
    await store.close()
  }
  log(`pipeline: reference paid requests at ${settings.blockTime} s blocks, ${settings.referencePaid} of them`)
  const referenceFacilitatorServer = await startReferenceFacilitator({
    rpcUrl: devnet.rpcUrl,
    chain: referenceChain(devnet, settings.blockTime),
    privateKey: accounts.reference.privateKey,
    network: devnet.network,
  })
  const referenceServer = await startReferenceServer({
    facilitatorUrl: referenceFacilitatorServer.url,
    network: devnet.network,
    payTo: accounts.payTo.address,
    asset: devnet.usdc,
    amount: priceAtomic.toString(),
  })
  try {
    const asked = await fetch(`${referenceServer.url}/weather`)
    const required = PaymentRequired.decode(asked.headers.get(HttpHeader.paymentRequired)!)
    const headers = (await sign(accounts.payers, required, settings.referencePaid + 1)).map((payment) =>
      PaymentPayload.encode(payment.payload),
    )
    // The reference server has no free route: a path its middleware does not cover answers 404 from Express.
    const reference = await pairs(`${referenceServer.url}/weather`, `${referenceServer.url}/free`, headers, 1)
    return { ours: oursLatency, first, reference, ...(note && { note }) }
  } finally {
    await referenceServer.close()
    await referenceFacilitatorServer.close()
  }
}

/** Paid then free, in turn, one request at a time; the first `warmup` pairs are not kept. */
async function pairs(paidUrl: string, freeUrl: string, headers: string[], warmup: number): Promise<Latency> {
  const latency: Latency = { paid: [], free: [], failures: 0 }
  for (let i = 0; headers.length > 0; i++) {
    const paid = await timed(paidUrl, headers.pop())
    const free = await timed(freeUrl, undefined)
    if (i < warmup) continue
    if (paid.status === 200) latency.paid.push(paid.ms)
    else latency.failures++
    latency.free.push(free.ms)
  }
  return latency
}

async function timed(url: string, payment: string | undefined) {
  const started = performance.now()
  const response = await fetch(url, payment === undefined ? {} : { headers: { [HttpHeader.paymentSignature]: payment } })
  await response.arrayBuffer()
  const ms = performance.now() - started
  const header = response.headers.get(HttpHeader.paymentResponse)
  const settlement = header ? Base64Json.decode(header, FacilitatorWire.settleResponse) : undefined
  return { ms, status: response.status, settlement }
}

/**
 * Our Hono server: `GET /paid` behind the paywall with `route` options, `GET /free` beside it. The
 * route options go through a variable: `settlement` and `maxUnsettled` are newer than some trees.
 */
function createPaywallServer(devnet: Devnet, accounts: Accounts, facilitator: PaywallConfig['facilitator'], route: object) {
  const paid = { price: { atomic: priceAtomic.toString() }, network: devnet.network, asset: accounts.asset, ...route }
  const app = new Hono()
  app.use(paywall({ facilitator, payTo: accounts.payTo.address, routes: { 'GET /paid': paid }, onError: () => {} }))
  app.get('/paid', (c) => c.json({ weather: 'sunny' }))
  app.get('/free', (c) => c.json({ weather: 'sunny' }))
  return app
}

const unusedFacilitator: PaywallConfig['facilitator'] = {
  verify: () => Promise.reject(new Error('bench: not called')),
  settle: () => Promise.reject(new Error('bench: not called')),
  supported: () => Promise.reject(new Error('bench: not called')),
}

async function listen(app: Hono): Promise<{ url: string; close(): Promise<void> }> {
  return await new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => {
      const { port } = server.address() as AddressInfo
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () =>
          new Promise<void>((done) => {
            if ('closeAllConnections' in server) server.closeAllConnections()
            server.close(() => done())
          }),
      })
    })
  })
}

/** CPU of this process and of anvil, and of the machine, from now until the returned function is called. */
function cpuMeter(): () => { cpu: CpuTime; machineBusySeconds: number | undefined } {
  const processes = { bench: process.pid, anvil: childNamed('anvil') }
  const before = cpuTime(processes)
  const busy = machineBusy()
  return () => {
    const after = machineBusy()
    return {
      cpu: elapsedCpu(before, cpuTime(processes)),
      machineBusySeconds: busy === undefined || after === undefined ? undefined : after - busy,
    }
  }
}

/** Runs `work` over `items`, at most `concurrency` at once. */
async function inPool<item>(items: readonly item[], concurrency: number, work: (item: item) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!)
    }),
  )
}

if (import.meta.url === `file://${process.argv[1]}`)
  runPipelineBench(process.argv.includes('--quick'), (line) => console.error(`[bench] ${line}`)).then(
    (figures) => console.log(renderPipeline(figures)),
    (error) => {
      console.error(error)
      process.exit(1)
    },
  )
