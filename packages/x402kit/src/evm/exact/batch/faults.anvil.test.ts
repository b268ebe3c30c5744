/**
 * The settlement pipeline under faults, on a devnet: an RPC endpoint that is down or times out, a
 * node that refuses transactions, a signer without gas, an authorization used elsewhere before its
 * batch, a database that goes away mid-batch, a reorganisation. Each test shows that nothing is lost
 * (every payment reaches an outcome), nothing is paid twice (each authorization is used once on
 * chain, balances move exactly), and the reason is recorded.
 */

import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect, createServer as createTcpServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Devnet, startDevnet, usdcAsset } from '@x402kit/devnet'
import { type Database, migrate, openDatabase, sqlStore } from '@x402kit/facilitator'
import { type Address, createTestClient, getAddress, type Hash, type Hex, http, parseAbi, parseSignature } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Payment, SettleResponse } from '../../../core/Facilitator.ts'
import * as Network from '../../../core/Network.ts'
import type { PipelineEvent } from '../../../core/Scheme.ts'
import { createFacilitator, type Facilitator } from '../../../facilitator/createFacilitator.ts'
import type { SettlementQueue } from '../../../facilitator/Queue.ts'
import { memoryStore, type SettlementStore } from '../../../facilitator/Store.ts'
import { exactEvmClient } from '../client.ts'
import * as Eip3009 from '../Eip3009.ts'
import { exactEvmFacilitator } from '../facilitator.ts'
import { exactEvmServer } from '../server.ts'
import { authorizationUsedEvent } from './outcomes.ts'

const amount = 1_000n
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitFor<value>(probe: () => Promise<value | undefined | false>, what: string, timeoutMs = 20_000): Promise<value> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe().catch(() => undefined)
    if (value) return value
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}.`)
    await sleep(50)
  }
}

type ProxyMode = 'up' | 'down' | 'hang' | 'hangSends' | 'rejectSends'

/**
 * A JSON-RPC endpoint in front of anvil that can fail: `down` refuses connections, `hang` answers
 * nothing, `hangSends` passes `eth_sendRawTransaction` to the node but withholds its answer, and
 * `rejectSends` answers `eth_sendRawTransaction` with a JSON-RPC error, as a node enforcing a policy would.
 */
async function rpcProxy(target: string) {
  let mode: ProxyMode = 'up'
  let port = 0
  const sockets = new Set<Socket>()
  const held = new Set<ServerResponse>()
  const calls = { sends: 0, rejected: 0 }
  const forward = async (body: string) => {
    const answer = await fetch(target, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    return answer.text()
  }
  const server: Server = createServer(async (request: IncomingMessage, response: ServerResponse) => {
    let body = ''
    for await (const chunk of request) body += chunk
    const call = JSON.parse(body) as { id: number; method: string } | { id: number; method: string }[]
    const sends = !Array.isArray(call) && call.method === 'eth_sendRawTransaction'
    if (sends) calls.sends++
    try {
      if (mode === 'hang' || (mode === 'hangSends' && sends)) {
        if (sends) await forward(body)
        held.add(response)
        return
      }
      if (mode === 'rejectSends' && sends && !Array.isArray(call)) {
        calls.rejected++
        response.writeHead(200, { 'content-type': 'application/json' })
        response.end(
          JSON.stringify({ jsonrpc: '2.0', id: call.id, error: { code: -32000, message: 'transaction rejected by node policy' } }),
        )
        return
      }
      const answer = await forward(body)
      response.writeHead(200, { 'content-type': 'application/json' })
      response.end(answer)
    } catch {
      response.destroy()
    }
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  const listen = () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()))
  await listen()
  port = (server.address() as { port: number }).port
  const cut = () => {
    for (const response of held) response.destroy()
    held.clear()
    for (const socket of sockets) socket.destroy()
  }
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    async set(next: ProxyMode) {
      if (next === mode) return
      if (next === 'down') {
        await new Promise<void>((resolve) => {
          server.close(() => resolve())
          cut()
        })
      } else if (mode === 'down') await listen()
      if (mode === 'hang' || mode === 'hangSends') cut()
      mode = next
    },
    async close() {
      if (mode === 'down') return
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        cut()
      })
    },
  }
}

/** A TCP proxy in front of a database: `cut` drops every connection and refuses new ones until `restore`. */
async function tcpProxy(host: string, targetPort: number) {
  const sockets = new Set<Socket>()
  let port = 0
  const server = createTcpServer((client) => {
    const upstream = connect(targetPort, host)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      socket.on('error', () => {})
    }
    client.pipe(upstream).pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  const listen = () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()))
  await listen()
  port = (server.address() as { port: number }).port
  return {
    port,
    async cut() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
      })
    },
    restore: listen,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
      })
    },
  }
}

type Store = SettlementStore & SettlementQueue
type LogLine = { level: string; message: string; fields: Record<string, unknown> | undefined }

describe('the settlement pipeline under faults', () => {
  let devnet: Devnet
  let test: ReturnType<typeof createTestClient>
  let payers: Hex[]
  let next = 0
  const started: Facilitator[] = []

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 16, gasLimit: 100_000_000n })
    Network.registerAsset(devnet.network, devnet.chainId, usdcAsset(devnet))
    test = createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) })
    payers = devnet.accounts.slice(4).map((account) => account.privateKey)
  }, 60_000)

  afterAll(async () => {
    await Promise.all(started.map((facilitator) => facilitator.close({ graceMs: 100 })))
    await devnet?.stop()
  })

  type Setup = {
    rpcUrl?: string
    signers?: Hex[]
    confirmations?: number
    store?: Store
    owner?: string
    settleWaitMs?: number
  }
  function facilitatorWith(options: Setup = {}) {
    const events: PipelineEvent[] = []
    const logs: LogLine[] = []
    const facilitator = createFacilitator({
      schemes: [
        exactEvmFacilitator({
          networks: {
            [devnet.network]: {
              rpcUrl: options.rpcUrl ?? devnet.rpcUrl,
              signers: options.signers ?? [devnet.accounts[0]!.privateKey],
              batcher: devnet.batcher,
              pollingIntervalMs: 50,
              confirmations: options.confirmations ?? 1,
            },
          },
          rpcTimeoutMs: 1_000,
          replaceAfterMs: 60_000,
          batch: { reportMs: 200 },
        }),
      ],
      store: options.store ?? memoryStore(),
      onError: () => {},
      pipeline: {
        onEvent: (event) => events.push(event),
        log: (level, message, fields) => logs.push({ level, message, fields }),
        ...(options.settleWaitMs !== undefined && { settleWaitMs: options.settleWaitMs }),
        ...(options.owner && { owner: options.owner }),
      },
    })
    started.push(facilitator)
    return { facilitator, events, logs }
  }

  /** A fresh payee per test, so that its balance counts this test's payments only. */
  const freshPayTo = () => privateKeyToAccount(generatePrivateKey()).address
  async function pay(payTo: Address, key = payers[next++ % payers.length]!): Promise<Payment> {
    const requirements = exactEvmServer().requirements({ price: { atomic: amount }, network: devnet.network, payTo })
    const payload = await exactEvmClient(privateKeyToAccount(key)).createPayload(requirements, { resource: 'http://localhost/paid' })
    return { payload: { x402Version: 2, accepted: requirements, payload }, requirements }
  }
  const authorizationOf = (payment: Payment) => (payment.payload.payload as Eip3009.Payload).authorization

  /** Each payment's authorization was used exactly once on chain; the payee received each once. */
  async function paidOnce(payments: Payment[], payTo: Address) {
    for (const payment of payments) {
      const { from, nonce } = authorizationOf(payment)
      const logs = await devnet.publicClient.getLogs({
        address: devnet.usdc,
        event: authorizationUsedEvent,
        args: { authorizer: getAddress(from), nonce: nonce as Hex },
        fromBlock: 0n,
      })
      expect(logs).toHaveLength(1)
    }
    expect(await devnet.usdcBalance(payTo)).toBe(amount * BigInt(payments.length))
  }

  /** Resolves once the signer has a transaction in the pool (mining paused), that is, a batch was broadcast. */
  const batchInPool = (signer: Address) =>
    waitFor(async () => {
      const [pending, latest] = await Promise.all([
        devnet.publicClient.getTransactionCount({ address: signer, blockTag: 'pending' }),
        devnet.publicClient.getTransactionCount({ address: signer, blockTag: 'latest' }),
      ])
      return pending > latest
    }, 'a batch transaction in the pool')

  async function resumeMining() {
    await test.setAutomine(true)
    await test.mine({ blocks: 1 })
  }

  it('settles every payment exactly once across an RPC endpoint that goes down, then times out', async () => {
    const proxy = await rpcProxy(devnet.rpcUrl)
    const signer = devnet.accounts[0]!.address
    const { facilitator, logs } = facilitatorWith({ rpcUrl: proxy.url, settleWaitMs: 1_500 })
    const payTo = freshPayTo()
    const payments = await Promise.all(Array.from({ length: 6 }, () => pay(payTo)))
    await test.setAutomine(false)
    try {
      for (const payment of payments) expect((await facilitator.enqueue(payment)).success).toBe(true)
      await batchInPool(signer)
      // The batch is on its way; the endpoint goes away while it is followed, and the block comes meanwhile.
      await proxy.set('down')
      await test.mine({ blocks: 1 })
      expect(await facilitator.settle(payments[0]!)).toMatchObject({ success: false, errorReason: 'settlement_pending' })
      await proxy.set('hang')
      await sleep(2_000)
      expect(await facilitator.settle(payments[1]!)).toMatchObject({ success: false, errorReason: 'settlement_pending' })
      await proxy.set('up')
      await resumeMining()
      const results = await Promise.all(payments.map((payment) => facilitator.settle(payment)))
      expect(results.map((result) => result.success)).toEqual(payments.map(() => true))
      await paidOnce(payments, payTo)
      expect(logs.some((line) => line.message === 'settlement worker fault; retrying')).toBe(true)

      // Sends that reach the node but whose answers never come back: counted as sent, followed to their receipt.
      const more = await Promise.all(Array.from({ length: 3 }, () => pay(payTo)))
      await proxy.set('hangSends')
      const sendsBefore = proxy.calls.sends
      const answers = await Promise.all(more.map((payment) => facilitatorWithSettle(facilitator, payment)))
      expect(proxy.calls.sends).toBeGreaterThan(sendsBefore)
      expect(answers.every((answer) => answer.success)).toBe(true)
      await paidOnce([...payments, ...more], payTo)
    } finally {
      await proxy.set('up')
      await resumeMining()
      await facilitator.close({ graceMs: 1_000 })
      await proxy.close()
    }
  }, 90_000)

  /** Settles, asking again while the answer is `settlement_pending`. */
  async function facilitatorWithSettle(facilitator: Facilitator, payment: Payment): Promise<SettleResponse> {
    for (let round = 0; ; round++) {
      const answer = await facilitator.settle(payment)
      if (answer.errorReason !== 'settlement_pending' || round > 20) return answer
    }
  }

  it('puts payments back in the queue while the node refuses transactions, and settles them once it accepts', async () => {
    const proxy = await rpcProxy(devnet.rpcUrl)
    const store = memoryStore()
    const { facilitator, events, logs } = facilitatorWith({ rpcUrl: proxy.url, store })
    const payTo = freshPayTo()
    const payments = await Promise.all(Array.from({ length: 4 }, () => pay(payTo)))
    try {
      await proxy.set('rejectSends')
      for (const payment of payments) expect((await facilitator.enqueue(payment)).success).toBe(true)
      await waitFor(async () => events.some((event) => event.type === 'batch' && event.outcome === 'dropped'), 'a dropped batch')
      // The worker backs off from a node that refuses it, rather than asking again at once.
      await sleep(2_000)
      const rejected = proxy.calls.rejected
      expect(rejected).toBeLessThanOrEqual(6)
      expect(logs.some((line) => line.level === 'warn' && line.message === 'the node refused a batch transaction')).toBe(true)
      // Refused, not lost: each is queued, or in the next batch the worker is trying.
      for (const payment of payments) {
        const { from, nonce } = authorizationOf(payment)
        const key = `${devnet.network}:${devnet.usdc}:${from}:${nonce}`.toLowerCase()
        expect(['queued', 'submitted']).toContain((await store.get(key))?.status)
      }
      expect(await devnet.usdcBalance(payTo)).toBe(0n)
      await proxy.set('up')
      const results = await Promise.all(payments.map((payment) => facilitator.settle(payment)))
      expect(results.every((result) => result.success)).toBe(true)
      await paidOnce(payments, payTo)
      expect(rejected).toBeGreaterThan(0)
    } finally {
      await proxy.set('up')
      await facilitator.close({ graceMs: 1_000 })
      await proxy.close()
    }
  }, 60_000)

  it('settles through the funded signer when the other has no gas, and reports the empty one', async () => {
    const emptyKey = generatePrivateKey()
    const empty = privateKeyToAccount(emptyKey).address
    await test.setBalance({ address: empty, value: 0n })
    const funded = devnet.accounts[1]!
    const { facilitator, events, logs } = facilitatorWith({ signers: [emptyKey, funded.privateKey] })
    const payTo = freshPayTo()
    const payments = await Promise.all(Array.from({ length: 8 }, () => pay(payTo)))
    try {
      const results: SettleResponse[] = []
      // In two rounds, so that both workers have a turn at taking a batch.
      for (const round of [payments.slice(0, 4), payments.slice(4)])
        results.push(...(await Promise.all(round.map((payment) => facilitator.settle(payment)))))
      expect(results.every((result) => result.success)).toBe(true)
      for (const hash of new Set(results.map((result) => result.transaction as Hash)))
        expect(getAddress((await devnet.publicClient.getTransaction({ hash })).from)).toBe(funded.address)
      await paidOnce(payments, payTo)
      await waitFor(
        async () => events.some((event) => event.type === 'signer' && event.address === empty && event.low),
        'a low-balance report',
      )
      expect(events).toContainEqual(expect.objectContaining({ type: 'signer', address: funded.address, low: false }))
      expect(logs).toContainEqual(
        expect.objectContaining({
          level: 'warn',
          message: 'signer balance is low; top it up to keep settling',
          fields: expect.objectContaining({ signer: empty }),
        }),
      )
    } finally {
      await facilitator.close({ graceMs: 1_000 })
    }
  }, 60_000)

  describe('an authorization used elsewhere before its batch', () => {
    const transferWithAuthorization = parseAbi([
      'function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)',
    ])
    /** Sends a transfer with authorization from a third account, ahead of anything else in the next block. */
    async function submitDirectly(authorization: Eip3009.Authorization, signature: Hex): Promise<Hash> {
      const { v, r, s, yParity } = parseSignature(signature)
      return devnet.walletClient(devnet.accounts[3]!.privateKey).writeContract({
        address: devnet.usdc,
        abi: transferWithAuthorization,
        functionName: 'transferWithAuthorization',
        args: [
          getAddress(authorization.from),
          getAddress(authorization.to),
          BigInt(authorization.value),
          BigInt(authorization.validAfter),
          BigInt(authorization.validBefore),
          authorization.nonce as Hex,
          Number(v ?? BigInt(yParity + 27)),
          r,
          s,
        ],
        gas: 150_000n,
        maxPriorityFeePerGas: 10n ** 11n,
        maxFeePerGas: 10n ** 12n,
      })
    }

    it('records the payment settled by the other transaction when it made this very transfer', async () => {
      const { facilitator } = facilitatorWith()
      const payTo = freshPayTo()
      const payment = await pay(payTo)
      const { signature } = payment.payload.payload as Eip3009.Payload
      await test.setAutomine(false)
      let direct: Hash
      let answer: Promise<SettleResponse>
      try {
        answer = facilitator.settle(payment)
        await batchInPool(devnet.accounts[0]!.address)
        direct = await submitDirectly(authorizationOf(payment), signature as Hex)
        await test.mine({ blocks: 1 })
      } finally {
        await test.setAutomine(true)
      }
      const result = await answer
      expect(result).toMatchObject({ success: true, transaction: direct })
      expect((await devnet.publicClient.getTransactionReceipt({ hash: direct })).status).toBe('success')
      await paidOnce([payment], payTo)
      await facilitator.close({ graceMs: 1_000 })
    }, 30_000)

    it('records the payment failed, authorization_used_elsewhere, when the payer spent the nonce on another transfer', async () => {
      const { facilitator } = facilitatorWith()
      const payTo = freshPayTo()
      const elsewhere = freshPayTo()
      const payerKey = payers[next++ % payers.length]!
      const payment = await pay(payTo, payerKey)
      const original = authorizationOf(payment)
      const other: Eip3009.Authorization = { ...original, to: elsewhere }
      const otherSignature = await privateKeyToAccount(payerKey).signTypedData(
        Eip3009.typedData({ name: 'USD Coin', version: '2', chainId: devnet.chainId, verifyingContract: devnet.usdc }, other),
      )
      await test.setAutomine(false)
      let direct: Hash
      let answer: Promise<SettleResponse>
      try {
        answer = facilitator.settle(payment)
        await batchInPool(devnet.accounts[0]!.address)
        direct = await submitDirectly(other, otherSignature)
        await test.mine({ blocks: 1 })
      } finally {
        await test.setAutomine(true)
      }
      expect(await answer).toMatchObject({
        success: false,
        errorReason: 'authorization_used_elsewhere',
        transaction: direct,
        payer: getAddress(original.from),
      })
      expect(await devnet.usdcBalance(payTo)).toBe(0n)
      expect(await devnet.usdcBalance(elsewhere)).toBe(amount)
      await facilitator.close({ graceMs: 1_000 })
    }, 30_000)
  })

  it('resumes a batch that was in flight when the database went away, and settles each payment once', async () => {
    const signer = devnet.accounts[2]!
    const payTo = freshPayTo()
    const payments = await Promise.all(Array.from({ length: 5 }, () => pay(payTo)))
    const owner = `faults-${Date.now()}`
    const url = process.env.DATABASE_URL
    if (url) {
      // PostgreSQL behind a TCP proxy: every connection is cut, and new ones refused, for two seconds.
      const target = new URL(url)
      const proxy = await tcpProxy(target.hostname, Number(target.port || 5432))
      target.hostname = '127.0.0.1'
      target.port = String(proxy.port)
      const db = await openDatabase({ databaseUrl: target.toString() })
      await migrate(db)
      const store = sqlStore(db)
      const { facilitator, logs } = facilitatorWith({ signers: [signer.privateKey], store, owner })
      try {
        await test.setAutomine(false)
        for (const payment of payments) expect((await facilitator.enqueue(payment)).success).toBe(true)
        await batchInPool(signer.address)
        await proxy.cut()
        await test.mine({ blocks: 1 })
        await sleep(2_000)
        await proxy.restore()
        await resumeMining()
        const results = await Promise.all(payments.map((payment) => facilitatorWithSettle(facilitator, payment)))
        expect(results.every((result) => result.success)).toBe(true)
        expect(logs.some((line) => line.message === 'settlement worker fault; retrying')).toBe(true)
        expect(await store.unfinishedBatches(devnet.network, signer.address)).toEqual([])
        await paidOnce(payments, payTo)
      } finally {
        await test.setAutomine(true)
        await facilitator.close({ graceMs: 1_000 })
        await db.close()
        await proxy.close()
      }
      return
    }
    // PGlite: the process stops while a batch is in flight; a new one on the same data resumes it.
    const dir = await mkdtemp(join(tmpdir(), 'x402-faults-'))
    let db: Database = await openDatabase({ dataDir: dir })
    try {
      await migrate(db)
      const first = facilitatorWith({ signers: [signer.privateKey], store: sqlStore(db), owner })
      await test.setAutomine(false)
      for (const payment of payments) expect((await first.facilitator.enqueue(payment)).success).toBe(true)
      await batchInPool(signer.address)
      await first.facilitator.close({ graceMs: 200 })
      await db.close()
      expect(await devnet.usdcBalance(payTo)).toBe(0n)

      db = await openDatabase({ dataDir: dir })
      const store = sqlStore(db)
      const unfinished = await store.unfinishedBatches(devnet.network, signer.address)
      expect(unfinished).toHaveLength(1)
      const resumed = unfinished[0]!.payments.length
      expect(resumed).toBeGreaterThan(0)
      const second = facilitatorWith({ signers: [signer.privateKey], store, owner })
      await waitFor(
        async () => second.logs.some((line) => line.message === 'resuming an unfinished batch'),
        'the unfinished batch to be resumed',
      )
      await resumeMining()
      const results = await Promise.all(payments.map((payment) => second.facilitator.settle(payment)))
      expect(results.every((result) => result.success)).toBe(true)
      expect(second.logs).toContainEqual(
        expect.objectContaining({ message: 'resuming an unfinished batch', fields: expect.objectContaining({ payments: resumed }) }),
      )
      expect(await store.unfinishedBatches(devnet.network, signer.address)).toEqual([])
      await paidOnce(payments, payTo)
      await second.facilitator.close({ graceMs: 1_000 })
    } finally {
      await test.setAutomine(true)
      await db.close()
      await rm(dir, { recursive: true, force: true })
    }
  }, 90_000)

  it('queues the payments of a batch that a reorganisation took off the chain, and settles them once', async () => {
    const signer = devnet.accounts[0]!
    const { facilitator, events } = facilitatorWith({ signers: [signer.privateKey], confirmations: 3 })
    const payTo = freshPayTo()
    const payments = await Promise.all(Array.from({ length: 4 }, () => pay(payTo)))
    await test.setAutomine(false)
    let mining: NodeJS.Timeout | undefined
    try {
      for (const payment of payments) expect((await facilitator.enqueue(payment)).success).toBe(true)
      await batchInPool(signer.address)
      const snapshot = await test.snapshot()
      await test.mine({ blocks: 1 })
      // The worker sees its receipt, and waits for two more blocks that never come on this branch.
      await sleep(500)
      const mined = await devnet.usdcBalance(payTo)
      expect(mined).toBeGreaterThan(0n)
      await test.revert({ id: snapshot })
      expect(await devnet.usdcBalance(payTo)).toBe(0n)
      await waitFor(async () => events.some((event) => event.type === 'reorg'), 'a reorg event')
      expect(events.find((event) => event.type === 'reorg')).toMatchObject({ payments: Number(mined / amount) })
      mining = setInterval(() => void test.mine({ blocks: 1 }).catch(() => {}), 100)
      const results = await Promise.all(payments.map((payment) => facilitator.settle(payment)))
      expect(results.every((result) => result.success)).toBe(true)
      await paidOnce(payments, payTo)
    } finally {
      clearInterval(mining)
      await test.setAutomine(true)
      await facilitator.close({ graceMs: 1_000 })
    }
  }, 60_000)
})
