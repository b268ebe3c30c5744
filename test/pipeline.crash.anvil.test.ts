/**
 * Exactly once, across crashes and instances (DESIGN §5, §7.1): the facilitator service, as a child
 * process settling through the pipeline on a devnet mining every second, is killed with SIGKILL at
 * random moments under load and started again; then two instances share one PostgreSQL and one
 * signer pool. Each time, the chain's `AuthorizationUsed` and `Transfer` logs must show every payment
 * moved once at most, each settled payment by the very transaction its record names, and the payee's
 * balance grown by exactly the settled amounts.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Devnet, startDevnet } from '@x402kit/devnet'
import type { Address } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  between,
  chainAccount,
  leaseHolders,
  load,
  readDatabase,
  type ServiceProcess,
  scratchDatabase,
  serviceProcess,
  settleAll,
  signPayments,
  sleep,
  type Tracked,
  unanswered,
  within,
} from './pipeline.support.ts'

const minKills = 20
const leaseMs = 5_000

describe('the settlement pipeline, killed and restarted, and on two instances', () => {
  let devnet: Devnet
  const services: ServiceProcess[] = []
  const cleanups: (() => Promise<unknown>)[] = []

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 13, blockTime: 1, gasLimit: 100_000_000n })
  }, 60_000)

  afterAll(async () => {
    await Promise.all(services.map((service) => service.kill()))
    await devnet?.stop()
    for (const cleanup of cleanups) await cleanup().catch(() => {})
  })

  const signers = () => devnet.accounts.slice(0, 3).map((account) => account.privateKey)
  const payers = () => devnet.accounts.slice(3, 13).map((account) => account.privateKey)
  const environment = (database: Record<string, string>) => ({
    X402_NETWORK: devnet.network,
    X402_RPC_URL: devnet.rpcUrl,
    X402_SIGNER_KEYS: signers().join(','),
    X402_BATCHER: devnet.batcher,
    ...database,
  })

  /** Where a service keeps its records: a scratch PostgreSQL database, or a PGlite folder. */
  async function database(): Promise<{ env: Record<string, string>; read: Parameters<typeof readDatabase>[0] }> {
    if (process.env.DATABASE_URL) {
      const scratch = await scratchDatabase(process.env.DATABASE_URL)
      cleanups.push(scratch.drop)
      return { env: { DATABASE_URL: scratch.url }, read: { databaseUrl: scratch.url } }
    }
    const dataDir = await mkdtemp(join(tmpdir(), 'x402kit-crash-'))
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }))
    return { env: { X402_DATA_DIR: dataDir }, read: { dataDir } }
  }

  async function started(name: string, env: Record<string, string>, onTestFailed: (listener: () => void) => void) {
    const service = await serviceProcess(name, env)
    services.push(service)
    onTestFailed(() => console.error(service.logs.join('\n')))
    return service
  }

  /** What the chain and the database say of each payment, as a list of what is wrong (empty when all is right). */
  async function audit(payments: readonly Tracked[], payTo: Address, where: Parameters<typeof readDatabase>[0]) {
    const chain = await chainAccount(devnet, payTo)
    const db = await readDatabase(where)
    const problems: string[] = []
    let settled = 0n
    const counts = { settled: 0, failed: 0 }
    for (const tracked of payments) {
      const row = db.payments.get(tracked.key)
      const uses = chain.usesOf(tracked)
      if (uses.length > 1) problems.push(`${tracked.key}: authorization used ${uses.length} times`)
      if (!tracked.final) problems.push(`${tracked.key}: no final answer (${tracked.answers.at(-1)?.answer.errorReason ?? 'none'})`)
      if (!row) {
        problems.push(`${tracked.key}: no record`)
        continue
      }
      if (row.status === 'settled') {
        counts.settled++
        settled += tracked.amount
        if (uses.length !== 1 || uses[0] !== row.transaction)
          problems.push(`${tracked.key}: settled by ${row.transaction}, authorization used by [${uses.join(', ')}]`)
        if (!row.transaction || !chain.paid(tracked, row.transaction)) problems.push(`${tracked.key}: ${row.transaction} does not pay it`)
        if (tracked.final && tracked.final.transaction !== row.transaction)
          problems.push(`${tracked.key}: answered ${tracked.final.transaction}, recorded ${row.transaction}`)
      } else if (row.status === 'failed') {
        counts.failed++
        if (!row.error_reason) problems.push(`${tracked.key}: failed without a reason`)
        if (uses[0] && chain.paid(tracked, uses[0])) problems.push(`${tracked.key}: failed, yet paid by ${uses[0]}`)
        if (tracked.final?.success) problems.push(`${tracked.key}: answered settled, recorded failed`)
      } else problems.push(`${tracked.key}: left ${row.status}`)
    }
    const balance = await devnet.usdcBalance(payTo)
    if (balance !== settled) problems.push(`payTo received ${balance}, the settled payments sum to ${settled}`)
    if (db.openBatches !== 0) problems.push(`${db.openBatches} batches left open`)
    const stranded = [...db.payments.values()].filter((row) => row.status !== 'settled' && row.status !== 'failed')
    if (stranded.length > 0) problems.push(`${stranded.length} records neither settled nor failed`)
    return { problems, counts, batches: db.batches, transactions: chain.transactions.size }
  }

  it('settles every payment exactly once while the service is killed at random moments', async ({ onTestFailed }) => {
    const began = Date.now()
    const payTo = privateKeyToAccount(generatePrivateKey()).address
    const store = await database()
    const service = await started('crash', environment({ ...store.env, X402_INSTANCE_ID: 'crash-test' }), onTestFailed)
    const payments = await signPayments(devnet, payers(), payTo, 480)

    await service.start()
    // Released in step with the kills, so that payments arrive all along, however long a restart takes.
    const released = () => Math.ceil((payments.length * (service.kills + 1)) / minKills)
    const traffic = load(payments, { released, concurrency: 12, route: () => [service] })
    const restarts: number[] = []
    while (service.kills < minKills) {
      await sleep(between(200, 2_000))
      await service.kill()
      const restarted = Date.now()
      await service.start()
      restarts.push(Date.now() - restarted)
    }
    const killing = {
      seconds: Math.round((Date.now() - began) / 1000),
      acknowledged: payments.filter((tracked) => tracked.acknowledged).length,
    }
    // The payments the kills left unacknowledged are sent again to the last process, which is left running.
    await within(traffic.done, 60_000, () => unanswered(payments))
    await settleAll(payments, () => service, { concurrency: 16, timeoutMs: 60_000 })
    await service.stop()

    const { problems, counts, batches, transactions } = await audit(payments, payTo, store.read)
    console.info(
      `crash: ${service.kills} kills in ${killing.seconds} s with ${killing.acknowledged} payments acknowledged by then, ${traffic.requests} requests (${traffic.failedRequests} cut off), ` +
        `${counts.settled} settled and ${counts.failed} failed in ${batches} batches and ${transactions} transactions, ` +
        `restart ${Math.round(restarts.reduce((a, b) => a + b, 0) / restarts.length)} ms on average, ` +
        `${service.logs.filter((line) => line.includes('resuming an unfinished batch')).length} unfinished batches resumed, ` +
        `${Math.round((Date.now() - began) / 1000)} s`,
    )
    expect(problems).toEqual([])
    expect(service.kills).toBeGreaterThanOrEqual(minKills)
    expect(counts.settled + counts.failed).toBe(payments.length)
  }, 420_000)

  it.skipIf(!process.env.DATABASE_URL && !process.env.CI)(
    'settles every payment once on two instances sharing PostgreSQL and a signer pool',
    async ({ onTestFailed }) => {
      if (!process.env.DATABASE_URL)
        throw new Error('DATABASE_URL must name a PostgreSQL database in CI: two instances cannot share PGlite.')
      const began = Date.now()
      const payTo = privateKeyToAccount(generatePrivateKey()).address
      const store = await database()
      // Short leases, so that the keys of an instance that dies pass to the other within seconds.
      const folder = await mkdtemp(join(tmpdir(), 'x402kit-instances-'))
      cleanups.push(() => rm(folder, { recursive: true, force: true }))
      const config = join(folder, 'facilitator.json')
      await writeFile(config, JSON.stringify({ pipeline: { leaseMs } }))
      const [one, two] = await Promise.all(
        ['one', 'two'].map((name) =>
          started(name, environment({ ...store.env, X402_CONFIG: config, X402_INSTANCE_ID: `instance-${name}` }), onTestFailed),
        ),
      )
      const instances = [one!, two!]
      const payments = await signPayments(devnet, payers(), payTo, 300)
      const both = new Set(payments.filter(() => Math.random() < 0.2))
      await Promise.all(instances.map((instance) => instance.start()))

      const loading = Date.now()
      const traffic = load(payments, {
        released: () => ((Date.now() - loading) / 1000) * 20,
        concurrency: 12,
        route: (tracked) => (both.has(tracked) ? instances : [instances[Math.floor(Math.random() * 2)]!]),
      })
      // Midway, the instance holding the most signer keys dies; the other takes them over once their
      // leases lapse and finishes the batches it left, then the dead one comes back.
      await sleep(5_000)
      const before = await leaseHolders(store.read)
      const holder = instances.reduce((best, instance) =>
        (before[`instance-${instance.name}`] ?? 0) > (before[`instance-${best.name}`] ?? 0) ? instance : best,
      )
      await holder.kill()
      await sleep(leaseMs + 2_000)
      const during = await leaseHolders(store.read)
      await holder.start()
      await within(traffic.done, 90_000, () => unanswered(payments))
      await settleAll(payments, () => (Math.random() < 0.5 ? one! : two!), { concurrency: 16, timeoutMs: 60_000 })
      // A payment sent to both: each instance answers it with the one transaction that settled it.
      const duplicates = await Promise.all(
        [...both].map(async (tracked) => {
          const [first, second] = await Promise.all([one!.client.settle(tracked.payment), two!.client.settle(tracked.payment)])
          return { tracked, first, second }
        }),
      )
      await Promise.all(instances.map((instance) => instance.stop()))

      const { problems, counts, batches, transactions } = await audit(payments, payTo, store.read)
      for (const { tracked, first, second } of duplicates)
        if (!first.success || first.transaction !== second.transaction || first.transaction !== tracked.final?.transaction)
          problems.push(`${tracked.key}: answered ${first.transaction} by one and ${second.transaction} by two`)
      // Every settled answer any instance gave a payment names the same transaction.
      for (const tracked of payments) {
        const hashes = new Set(
          tracked.answers.filter(({ answer }) => answer.success && answer.transaction).map(({ answer }) => answer.transaction),
        )
        if (hashes.size > 1) problems.push(`${tracked.key}: answered with ${[...hashes].join(' and ')}`)
      }
      console.info(
        `two instances: ${traffic.requests} requests, ${both.size} payments sent to both, ` +
          `${counts.settled} settled and ${counts.failed} failed in ${batches} batches and ${transactions} transactions, ` +
          `signer leases ${JSON.stringify(before)}, after ${holder.name} was killed ${JSON.stringify(during)}, ${Math.round((Date.now() - began) / 1000)} s`,
      )
      expect(problems).toEqual([])
      expect(counts.settled + counts.failed).toBe(payments.length)
      // The keys of the dead instance passed to the living one.
      expect(during).toEqual({ [`instance-${instances.find((instance) => instance !== holder)!.name}`]: 3 })
    },
    180_000,
  )
})
