/**
 * Support of the pipeline's crash and multi-instance suites: the facilitator service as a child
 * process that can be killed and started again on the same port, a load generator that keeps sending
 * each payment until the service acknowledges it, and the chain's account of every payment, checked
 * against the service's database.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { Devnet } from '@x402kit/devnet'
import { openDatabase } from '@x402kit/facilitator'
import pg from 'pg'
import { type Address, getAddress, type Hash, type Hex, parseAbiItem } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import type { FacilitatorClient, Payment, SettleResponse } from 'x402kit'
import { exactEvmClient, exactEvmServer } from 'x402kit/evm'
import { httpFacilitator } from 'x402kit/facilitator'

const main = fileURLToPath(new URL('../apps/facilitator/src/main.ts', import.meta.url))
const root = fileURLToPath(new URL('..', import.meta.url))

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
export const between = (low: number, high: number) => low + Math.random() * (high - low)

/** Resolves as `promise` does, or throws `what` after `ms`. */
export async function within<value>(promise: Promise<value>, ms: number, what: () => string): Promise<value> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what())), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** The payments without an acknowledgement or an outcome, with the last answer each got. */
export function unanswered(payments: readonly Tracked[]): string {
  const left = payments.filter((tracked) => !tracked.acknowledged && !tracked.final)
  const last = left.slice(0, 10).map((tracked) => {
    const answer = tracked.answers.at(-1)?.answer
    return `${tracked.key}: ${answer ? `${answer.errorReason} ${answer.errorMessage ?? ''}` : 'never answered'}`
  })
  return `${left.length} payments unacknowledged:\n${last.join('\n')}`
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** A facilitator service run as a child process, on one port across restarts. */
export type ServiceProcess = {
  name: string
  url: string
  client: FacilitatorClient
  /** How many times it was started, and killed with SIGKILL. */
  starts: number
  kills: number
  /** Its output, last lines first dropped. */
  logs: string[]
  running(): boolean
  /** Starts it and resolves once `GET /ready` answers 200. */
  start(): Promise<void>
  /** SIGKILL, then waits for the exit. */
  kill(): Promise<void>
  /** SIGTERM (SIGKILL after `graceMs`), then waits for the exit. */
  stop(graceMs?: number): Promise<void>
}

const maxLogLines = 5_000

export async function serviceProcess(name: string, env: Record<string, string>): Promise<ServiceProcess> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  let child: ChildProcess | undefined
  let exited: Promise<void> = Promise.resolve()
  let expectedExit = false
  const logs: string[] = []
  const log = (line: string) => {
    logs.push(`[${name}] ${line}`)
    if (logs.length > maxLogLines) logs.splice(0, logs.length - maxLogLines)
  }
  const service: ServiceProcess = {
    name,
    url,
    client: httpFacilitator(url, { timeoutMs: 15_000 }),
    starts: 0,
    kills: 0,
    logs,
    running: () => child !== undefined,
    async start() {
      if (child) throw new Error(`${name} is already running`)
      const { DATABASE_URL: _, ...inherited } = process.env
      const spawned = spawn(process.execPath, ['--import', 'tsx', main], {
        cwd: root,
        env: { ...inherited, X402_PORT: String(port), X402_HOST: '127.0.0.1', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      child = spawned
      expectedExit = false
      service.starts++
      for (const stream of [spawned.stdout, spawned.stderr])
        stream?.setEncoding('utf8').on('data', (chunk: string) => {
          for (const line of chunk.split('\n')) if (line) log(line)
        })
      exited = new Promise((resolve) =>
        spawned.once('exit', (code, signal) => {
          if (!expectedExit) log(`exited by itself (code ${code}, signal ${signal})`)
          if (child === spawned) child = undefined
          resolve()
        }),
      )
      const deadline = Date.now() + 60_000
      for (;;) {
        if (child !== spawned) throw new Error(`${name} exited before it was ready:\n${logs.slice(-40).join('\n')}`)
        const ready = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(1_000) }).then(
          (response) => response.ok,
          () => false,
        )
        if (ready) return
        if (Date.now() > deadline) throw new Error(`${name} was not ready within 60 s:\n${logs.slice(-40).join('\n')}`)
        await sleep(50)
      }
    },
    async kill() {
      if (!child) return
      expectedExit = true
      child.kill('SIGKILL')
      service.kills++
      log('--- killed (SIGKILL) ---')
      await exited
    },
    async stop(graceMs = 10_000) {
      if (!child) return
      expectedExit = true
      const running = child
      running.kill('SIGTERM')
      const timer = setTimeout(() => running.kill('SIGKILL'), graceMs)
      await exited
      clearTimeout(timer)
    },
  }
  return service
}

/** A PostgreSQL database of its own, made next to the one `DATABASE_URL` names, and dropped after. */
export async function scratchDatabase(databaseUrl: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `x402_test_${randomUUID().replaceAll('-', '')}`
  const admin = new pg.Client({ connectionString: databaseUrl })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  const url = new URL(databaseUrl)
  url.pathname = `/${name}`
  return {
    url: String(url),
    async drop() {
      const client = new pg.Client({ connectionString: databaseUrl })
      await client.connect()
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      } finally {
        await client.end()
      }
    },
  }
}

/** A signed payment the suite tracks: its settlement key and every answer it got. */
export type Tracked = {
  payment: Payment
  key: string
  payer: Address
  nonce: Hex
  amount: bigint
  /** Acknowledged: answered queued or settled at least once. */
  acknowledged: boolean
  /** The final answer: settled with a transaction, or failed for good. */
  final: SettleResponse | undefined
  /** Answers by service name, for payments sent to several. */
  answers: { service: string; answer: SettleResponse }[]
}

/** Signs `count` payments of distinct amounts, spread over `payers`, each with its own EIP-3009 nonce. */
export async function signPayments(devnet: Devnet, payers: readonly Hex[], payTo: Address, count: number): Promise<Tracked[]> {
  const clients = payers.map((key) => ({ client: exactEvmClient(privateKeyToAccount(key)), address: privateKeyToAccount(key).address }))
  const server = exactEvmServer()
  return Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const { client, address } = clients[index % clients.length]!
      const amount = 1_000n + BigInt(index)
      const requirements = server.requirements({ price: { atomic: amount }, network: devnet.network, payTo, maxTimeoutSeconds: 3_600 })
      const payload = await client.createPayload(requirements, { resource: 'http://localhost/paid' })
      const nonce = (payload as { authorization: { nonce: Hex } }).authorization.nonce
      return {
        payment: { payload: { x402Version: 2, accepted: requirements, payload }, requirements },
        key: `${devnet.network}:${devnet.usdc}:${address}:${nonce}`.toLowerCase(),
        payer: address,
        nonce,
        amount,
        acknowledged: false,
        final: undefined,
        answers: [],
      }
    }),
  )
}

const pending = new Set(['settlement_pending', 'unexpected_settle_error'])

/** Whether an answer is a payment's outcome (settled with its transaction, or failed for good). */
export function isFinal(answer: SettleResponse): boolean {
  if (answer.success) return /^0x[0-9a-f]{64}$/i.test(answer.transaction)
  return !pending.has(answer.errorReason ?? '')
}

/** Sends a payment by `/enqueue` or `/settle`; an answer that is neither queued nor settled leaves it unacknowledged. */
export async function send(tracked: Tracked, service: ServiceProcess, how: 'enqueue' | 'settle'): Promise<SettleResponse | undefined> {
  let answer: SettleResponse
  try {
    answer = how === 'enqueue' ? await service.client.enqueue!(tracked.payment) : await service.client.settle(tracked.payment)
  } catch {
    // The service is down or was killed mid-request: the same payment is sent again later.
    return undefined
  }
  tracked.answers.push({ service: service.name, answer })
  if (answer.success) tracked.acknowledged = true
  if (isFinal(answer)) tracked.final = answer
  return answer
}

/**
 * Sends every payment until acknowledged (or answered for good), `concurrency` requests at a time,
 * each to the services `route` picks, half by `/enqueue` and half by `/settle`; `released` says how
 * many of the payments may have been sent by now, so that the load spans the test.
 */
export function load(
  payments: readonly Tracked[],
  options: { released: () => number; concurrency: number; route: (tracked: Tracked) => ServiceProcess[] },
): { done: Promise<void>; stop(): void; requests: number; failedRequests: number } {
  let next = 0
  let stopped = false
  const retry: Tracked[] = []
  const state = {
    requests: 0,
    failedRequests: 0,
    stop: () => {
      stopped = true
    },
    done: Promise.resolve(),
  }
  async function lane() {
    while (!stopped) {
      let tracked = retry.shift()
      if (!tracked && next < payments.length && next < options.released()) tracked = payments[next++]
      if (!tracked) {
        if (next >= payments.length && retry.length === 0 && payments.every((payment) => payment.acknowledged || payment.final)) return
        await sleep(25)
        continue
      }
      const answers = await Promise.all(
        options.route(tracked).map((service) => send(tracked, service, Math.random() < 0.5 ? 'enqueue' : 'settle')),
      )
      state.requests += answers.length
      state.failedRequests += answers.filter((answer) => answer === undefined).length
      if (!tracked.acknowledged && !tracked.final) {
        retry.push(tracked)
        // A service that is down refuses at once: wait a little rather than spin.
        await sleep(answers.every((answer) => answer === undefined) ? 250 : 100)
      }
    }
  }
  state.done = Promise.all(Array.from({ length: options.concurrency }, lane)).then(() => {})
  return state
}

/** Asks `/settle` for every payment until each has its outcome, or `timeoutMs` passes. */
export async function settleAll(
  payments: readonly Tracked[],
  pick: (tracked: Tracked) => ServiceProcess,
  options: { concurrency: number; timeoutMs: number },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs
  const queue = payments.filter((tracked) => !tracked.final)
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      for (let tracked = queue.shift(); tracked; tracked = queue.shift()) {
        while (!tracked.final && Date.now() < deadline) if (!(await send(tracked, pick(tracked), 'settle'))?.success) await sleep(250)
      }
    }),
  )
}

export type PaymentRow = { key: string; status: string; transaction: string | null; error_reason: string | null }

/** The payments, open batches and queued or submitted rows in a service's database (PostgreSQL URL or PGlite folder). */
export async function readDatabase(where: { databaseUrl: string } | { dataDir: string }) {
  const db = await openDatabase(where)
  try {
    const { rows } = await db.query('SELECT key, status, "transaction", error_reason FROM payments')
    const open = await db.query('SELECT count(*)::int AS open FROM batches WHERE open')
    const batches = await db.query('SELECT count(*)::int AS batches FROM batches')
    return {
      payments: new Map((rows as PaymentRow[]).map((row) => [row.key, row])),
      openBatches: Number(open.rows[0]?.open),
      batches: Number(batches.rows[0]?.batches),
    }
  } finally {
    await db.close()
  }
}

/** How many signer leases each instance holds, by instance name. */
export async function leaseHolders(where: { databaseUrl: string } | { dataDir: string }): Promise<Record<string, number>> {
  const db = await openDatabase(where)
  try {
    const { rows } = await db.query(
      'SELECT owner, count(*)::int AS keys FROM signer_leases WHERE expires_at > now() GROUP BY owner ORDER BY owner',
    )
    return Object.fromEntries(rows.map((row) => [row.owner as string, Number(row.keys)]))
  } finally {
    await db.close()
  }
}

const transferEvent = parseAbiItem('event Transfer(address indexed from, address indexed to, uint256 value)')
const authorizationUsedEvent = parseAbiItem('event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)')

/**
 * The chain's account of the payments: every `AuthorizationUsed` of their nonces (transaction hashes
 * per payment) and every USDC transfer to `payTo` (transaction hash, payer and amount).
 */
export async function chainAccount(devnet: Devnet, payTo: Address) {
  const [used, transfers] = await Promise.all([
    devnet.publicClient.getLogs({ address: devnet.usdc, event: authorizationUsedEvent, fromBlock: 0n, toBlock: 'latest' }),
    devnet.publicClient.getLogs({ address: devnet.usdc, event: transferEvent, args: { to: payTo }, fromBlock: 0n, toBlock: 'latest' }),
  ])
  const uses = new Map<string, Hash[]>()
  for (const log of used) {
    const id = `${log.args.authorizer!.toLowerCase()} ${log.args.nonce!.toLowerCase()}`
    uses.set(id, [...(uses.get(id) ?? []), log.transactionHash])
  }
  return {
    /** The transactions that used a payment's authorization. */
    usesOf: (tracked: Tracked) => uses.get(`${tracked.payer.toLowerCase()} ${tracked.nonce.toLowerCase()}`) ?? [],
    /** Whether `transaction` moved the payment's amount from its payer to `payTo`. */
    paid: (tracked: Tracked, transaction: string) =>
      transfers.some(
        (log) =>
          log.transactionHash === transaction &&
          getAddress(log.args.from!) === getAddress(tracked.payer) &&
          log.args.value === tracked.amount,
      ),
    transactions: new Set(used.map((log) => log.transactionHash)),
  }
}
