/**
 * `batch-settlement` channels on the seller side: paid requests per second when each voucher is
 * checked by our server alone, the latency a paid request adds over a free one, and the gas a paid
 * request costs at 1,000 requests per channel — beside per-request `exact` in the same run.
 *
 * Our Hono server runs in a process of its own (this file, with `X402_BENCH_ROLE=channel-seller`); the
 * load generator is this process, on the same machine, over loopback HTTP with keep-alive. Every
 * channel is opened by the reference client (a real deposit through the reference facilitator), its
 * vouchers are signed before the clock starts, and each channel has one request in flight at a time.
 *
 *   npm run bench -- --channels-only [--quick]
 *
 * Environment: BENCH_CHANNEL_STORE (`memory`, the seller's default and the bench's; `pglite`, on a worker
 * thread; `postgres`, at DATABASE_URL), BENCH_CHANNEL_MAX_UNSAVED and BENCH_CHANNEL_COMMIT_MS (the seller's
 * `durability.maxUnsaved` and `durability.intervalMs`).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { Agent, request } from 'node:http'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { BatchSettlementEvmScheme, computeChannelId } from '@x402/evm/batch-settlement/client'
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch'
import { type DevnetAccount, startDevnet } from '@x402kit/devnet'
import type { Address, Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { type Asset, HttpHeader, Network, PaymentPayload, PaymentRequired } from 'x402kit'
import { Channel } from 'x402kit/evm'
import { placeEscrow, startReferenceBatchFacilitator } from '../test/batch-settlement.seller.support.ts'
import { type CpuTime, cpuTime, elapsedCpu } from './cpu.ts'
import { runPoint } from './load.ts'
import { percentile, rps } from './report.ts'
import { priceAtomic, startStack } from './stacks.ts'

export type ChannelFigures = {
  settings: { channels: number; vouchersPerChannel: number; seconds: number; latencyRequests: number; store: string; exactSeconds: number }
  paid: { requests: number; failures: number; seconds: number; perSecond: number; cpu: CpuTime }
  latency: { freeP50: number; freeP99: number; paidP50: number; paidP99: number }
  gas: { deposit: number; claim: number; claimChannels: number; sweep: number; perPaidRequest: number }
  /** Per-request exact beside it; `undefined` when its stack could not start on a busy machine. */
  exact: { perSecond: number; payments: number; gasPerPayment: number; payers: number } | undefined
}

const price = priceAtomic

/** Runs the channel benchmark; `progress` is told what is happening. */
export async function runChannelBench(quick: boolean, progress: (line: string) => void): Promise<ChannelFigures> {
  const channels = quick ? 16 : 48
  const vouchersPerChannel = 1_000
  const seconds = quick ? 2 : 5
  const latencyRequests = 800
  const exactSeconds = quick ? 2 : 4

  progress(`channels: devnet with ${channels + 1} payers, our escrow at the canonical address, the reference facilitator`)
  const devnet = await startDevnet({ accounts: channels + 4, gasLimit: 300_000_000n })
  let seller: ChildProcess | undefined
  let facilitator: Awaited<ReturnType<typeof startReferenceBatchFacilitator>> | undefined
  try {
    const [sender, authorizer, receiver, ...payers] = devnet.accounts as DevnetAccount[]
    await placeEscrow(devnet)
    const usdc: Asset = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
    Network.registerAsset(devnet.network, devnet.chainId, usdc)
    facilitator = await startReferenceBatchFacilitator(devnet, { sender: sender!.privateKey, authorizer: authorizer!.privateKey })
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    // The seller's own default (memory) unless told: `pglite` and `postgres` measure durable stores.
    const storeKind = process.env.BENCH_CHANNEL_STORE ?? 'memory'
    const store =
      {
        postgres: 'PostgreSQL (DATABASE_URL)',
        pglite: 'PGlite in memory, on a worker thread',
        memory: "memory only, the seller's default (no durability; BENCH_CHANNEL_STORE=pglite or postgres for a durable one)",
      }[storeKind] ?? storeKind
    seller = spawn(
      process.execPath,
      [...(process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] : []), '--import', 'tsx', new URL(import.meta.url).pathname],
      {
        env: {
          ...process.env,
          X402_BENCH_ROLE: 'channel-seller',
          BENCH_CHANNEL_STORE: storeKind,
          SELLER_PORT: String(port),
          SELLER_NETWORK: devnet.network,
          SELLER_USDC: devnet.usdc,
          SELLER_RECEIVER_AUTHORIZER: authorizer!.address,
          SELLER_PAY_TO: receiver!.address,
          FACILITATOR_URL: facilitator.url,
          SELLER_MIN_DEPOSIT: String(price * BigInt(vouchersPerChannel + 1)),
        },
        stdio: ['ignore', 'inherit', 'inherit'],
      },
    )
    await waitReady(base, seller)

    // Each channel opens with the reference client's deposit, through our server to the facilitator.
    progress(`channels: opening ${channels + 1} channels (one deposit each)`)
    const depositHashes: Hex[] = []
    const all = payers.slice(0, channels + 1)
    for (const payer of all) {
      const pay = wrapFetchWithPaymentFromConfig(fetch, {
        schemes: [{ network: 'eip155:*', client: new BatchSettlementEvmScheme(privateKeyToAccount(payer.privateKey) as never) }],
        spendControls: { allowedAssets: [{ network: devnet.network, asset: devnet.usdc }] },
      } as never)
      const response = await pay(`${base}/paid`)
      if (response.status !== 200) throw new Error(`bench: the deposit of ${payer.address} was answered ${response.status}`)
      const receipt = JSON.parse(Buffer.from(response.headers.get(HttpHeader.paymentResponse)!, 'base64').toString('utf8'))
      depositHashes.push(receipt.transaction as Hex)
    }

    progress(`channels: signing ${vouchersPerChannel} vouchers for each channel (before the clock)`)
    const offer = PaymentRequired.decode((await fetch(`${base}/paid`)).headers.get(HttpHeader.paymentRequired)!).accepts[0]!
    const signer = nativeSigner(devnet.chainId)
    const headers = all.map((payer) => {
      const channelConfig = {
        payer: payer.address,
        payerAuthorizer: payer.address,
        receiver: receiver!.address,
        receiverAuthorizer: authorizer!.address,
        token: devnet.usdc,
        withdrawDelay: Channel.minWithdrawDelay,
        salt: `0x${'00'.repeat(32)}` as Hex,
      }
      const channelId = computeChannelId(channelConfig, devnet.network) as Hex
      return Array.from({ length: vouchersPerChannel }, (_, index) => {
        const amount = price * BigInt(index + 2)
        const voucher = { channelId, maxClaimableAmount: amount.toString(), signature: signer(channelId, amount, payer.privateKey) }
        return PaymentPayload.encode({ x402Version: 2, accepted: offer, payload: { type: 'voucher', channelConfig, voucher } } as never)
      })
    })

    const agent = new Agent({ keepAlive: true, maxSockets: channels + 4 })
    const get = httpGetter(port, agent)

    progress(`channels: latency, ${latencyRequests} free and ${latencyRequests} paid requests in turn, one at a time`)
    const latencyHeaders = headers[0]!
    const free: number[] = []
    const paidLatency: number[] = []
    const warm = vouchersPerChannel - latencyRequests
    for (let index = 0; index < warm; index++) {
      await get('/free')
      const { status } = await get('/paid', latencyHeaders[index])
      if (status !== 200) throw new Error(`bench: a warm-up paid request was answered ${status}`)
    }
    // Free and paid in turn, so that whatever else the machine does falls on both alike.
    for (let index = warm; index < vouchersPerChannel; index++) {
      free.push((await get('/free')).ms)
      const { status, ms } = await get('/paid', latencyHeaders[index])
      if (status !== 200) throw new Error(`bench: a paid request was answered ${status}`)
      paidLatency.push(ms)
    }

    progress(`channels: ${channels} channels, one request in flight each, for ${seconds} s`)
    const processes = { server: seller.pid, 'load generator': process.pid }
    const cpuBefore = cpuTime(processes)
    let requests = 0
    let failures = 0
    const started = performance.now()
    const deadline = started + seconds * 1_000
    await Promise.all(
      headers.slice(1).map(async (list) => {
        for (const header of list) {
          if (performance.now() >= deadline) return
          const { status } = await get('/paid', header)
          if (status === 200) requests++
          else failures++
        }
      }),
    )
    const elapsed = (performance.now() - started) / 1_000
    const cpu = elapsedCpu(cpuBefore, cpuTime(processes))
    progress(`channels: ${requests} paid requests in ${elapsed.toFixed(1)} s (${(requests / elapsed).toFixed(0)}/s), ${failures} refused`)
    agent.destroy()

    progress('channels: claiming every channel and sweeping (through the reference facilitator)')
    const claims = (await (await fetch(`${base}/claim`, { method: 'POST' })).json()) as { channels: number; transactions: Hex[] }[]
    const [claimHash, ...sweepHashes] = claims[0]?.transactions ?? []
    if (!claimHash || sweepHashes.length !== 1) throw new Error(`bench: unexpected claim result ${JSON.stringify(claims)}`)
    const gasOf = async (hash: Hex) => Number((await devnet.publicClient.waitForTransactionReceipt({ hash })).gasUsed)
    const depositGas = (await Promise.all(depositHashes.map(gasOf))).reduce((sum, gas) => sum + gas, 0) / depositHashes.length
    const claimGas = await gasOf(claimHash)
    const sweepGas = await gasOf(sweepHashes[0]!)
    const claimChannels = claims[0]!.channels
    const perPaidRequest = (depositGas + (claimGas + sweepGas) / claimChannels) / vouchersPerChannel

    seller.kill('SIGTERM')
    seller = undefined
    await facilitator.close()
    facilitator = undefined
    await devnet.stop()

    progress(`channels: per-request exact beside it, 32 payers for ${exactSeconds} s`)
    const exact = await exactFigures(exactSeconds).catch((error: unknown) => {
      progress(`channels: per-request exact could not be measured: ${String(error)}`)
      return undefined
    })
    return {
      settings: { channels, vouchersPerChannel, seconds, latencyRequests, store, exactSeconds },
      paid: { requests, failures, seconds: elapsed, perSecond: requests / elapsed, cpu },
      latency: {
        freeP50: percentile(free, 0.5),
        freeP99: percentile(free, 0.99),
        paidP50: percentile(paidLatency, 0.5),
        paidP99: percentile(paidLatency, 0.99),
      },
      gas: { deposit: depositGas, claim: claimGas, claimChannels, sweep: sweepGas, perPaidRequest },
      exact,
    }
  } finally {
    seller?.kill('SIGTERM')
    await facilitator?.close()
    await devnet.stop().catch(() => {})
  }
}

/** Per-request `exact` on our stack: paid requests per second and the gas of the blocks they were mined in. */
async function exactFigures(seconds: number): Promise<ChannelFigures['exact']> {
  const payers = 32
  const start = () => startStack('ours', { blockTime: 0, accounts: payers + 2, gasLimit: 300_000_000n, framework: 'hono' })
  // A busy machine can keep a child from listening in time: one more attempt, reported in the progress lines.
  const stack = await start().catch((error: unknown) => {
    process.stderr.write(`[bench] channels: the exact stack did not start (${String(error)}); trying once more\n`)
    return start()
  })
  try {
    const first = await stack.devnet.publicClient.getBlockNumber()
    const point = await runPoint(stack, payers, { seconds, requestTimeoutMs: 30_000, maxRequestsPerPayer: 100_000 })
    const last = await stack.devnet.publicClient.getBlockNumber()
    let gas = 0n
    for (let number = first + 1n; number <= last; number++)
      gas += (await stack.devnet.publicClient.getBlock({ blockNumber: number })).gasUsed
    return { perSecond: rps(point), payments: point.successes, gasPerPayment: Number(gas) / point.successes, payers }
  } finally {
    await stack.close()
  }
}

/** Signs vouchers with the native secp256k1 binding: thousands per second, so signing never limits the run. */
function nativeSigner(chainId: number): (channelId: Hex, amount: bigint, key: Hex) => Hex {
  const binding = createRequire(import.meta.url)('secp256k1') as {
    ecdsaSign(digest: Uint8Array, key: Uint8Array): { signature: Uint8Array; recid: number }
  }
  return (channelId, amount, key) => {
    const digest = Buffer.from(Channel.voucherDigest(channelId, amount, chainId).slice(2), 'hex')
    const { signature, recid } = binding.ecdsaSign(digest, Buffer.from(key.slice(2), 'hex'))
    return `0x${Buffer.from(signature).toString('hex')}${(27 + recid).toString(16)}` as Hex
  }
}

function httpGetter(port: number, agent: Agent) {
  return (path: string, header?: string) =>
    new Promise<{ status: number; ms: number }>((resolve, reject) => {
      const started = performance.now()
      const req = request(
        { host: '127.0.0.1', port, path, agent, headers: header ? { [HttpHeader.paymentSignature]: header } : {} },
        (res) => {
          res.resume()
          res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }))
        },
      )
      req.on('error', reject)
      req.end()
    })
}

async function freePort(): Promise<number> {
  return await new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

async function waitReady(base: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 180_000
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`bench: the channel seller exited (${child.exitCode ?? child.signalCode}) before it was ready`)
    const ready = await fetch(`${base}/ready`).then(
      (response) => response.ok,
      () => false,
    )
    if (ready) return
    if (Date.now() > deadline) throw new Error('bench: the channel seller did not start within 180 s')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** The seller process: our paywall with the channel server on Hono, a free route beside the paid one. */
async function serveSeller(): Promise<void> {
  const { serve } = await import('@hono/node-server')
  const { Hono } = await import('hono')
  const { batchSettlementEvmServer, sqlSellerChannelStore } = await import('x402kit/evm')
  const { httpFacilitator } = await import('x402kit/facilitator')
  const { paywall } = await import('x402kit/hono')
  const env = (name: string) => process.env[name] as string
  const network = env('SELLER_NETWORK') as `${string}:${string}`
  const asset: Asset = {
    address: env('SELLER_USDC') as Address,
    name: 'USD Coin',
    version: '2',
    decimals: 6,
    symbol: 'USDC',
    transfer: 'eip3009',
  }
  Network.registerAsset(network, Number(network.split(':')[1]), asset)
  let db: { query(sql: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[] }> } | undefined
  if (env('BENCH_CHANNEL_STORE') === 'postgres') {
    const pg = (await import('pg')).default
    db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 })
  } else if (env('BENCH_CHANNEL_STORE') === 'pglite') db = await (await import('x402kit/server')).pgliteThread()
  const seller = batchSettlementEvmServer({
    receiverAuthorizer: env('SELLER_RECEIVER_AUTHORIZER'),
    minDeposit: BigInt(env('SELLER_MIN_DEPOSIT')),
    facilitator: httpFacilitator(env('FACILITATOR_URL')),
    ...(db && { store: sqlSellerChannelStore(db, { table: `bench_channels_${process.pid}` }) }),
    durability: {
      ...(process.env.BENCH_CHANNEL_MAX_UNSAVED && { maxUnsaved: Number(process.env.BENCH_CHANNEL_MAX_UNSAVED) }),
      ...(process.env.BENCH_CHANNEL_COMMIT_MS && { intervalMs: Number(process.env.BENCH_CHANNEL_COMMIT_MS) }),
    },
  })
  await seller.ready()
  const app = new Hono()
  app.get('/ready', (c) => c.text('ok'))
  app.get('/free', (c) => c.json({ symbol: 'ETH', usd: 3_000 }))
  app.post('/claim', async (c) => {
    const results = await seller.claim()
    return c.json(results.map((result) => ({ ...result, claimed: result.claimed.toString() })))
  })
  app.use(
    paywall({
      facilitator: env('FACILITATOR_URL'),
      payTo: env('SELLER_PAY_TO'),
      network,
      schemes: [seller],
      routes: { 'GET /paid': { price: { atomic: price.toString() }, scheme: 'batch-settlement', asset } },
    }),
  )
  app.get('/paid', (c) => c.json({ symbol: 'ETH', usd: 3_000 }))
  serve({ fetch: app.fetch, port: Number(env('SELLER_PORT')), hostname: '127.0.0.1' })
  process.once('SIGTERM', () => {
    void seller
      .close()
      .then(() => db?.query(`DROP TABLE IF EXISTS bench_channels_${process.pid}`))
      .finally(() => process.exit(0))
  })
}

if (process.env.X402_BENCH_ROLE === 'channel-seller') await serveSeller()
