/**
 * Shared setup of the cross-role suites: one local chain with real USDC, our facilitator service over
 * HTTP (PGlite in a temporary folder), and paid APIs behind each framework adapter on real loopback
 * ports. Everything a suite starts is stopped by the `stop` it is handed.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serve } from '@hono/node-server'
import { type Devnet, type DevnetAccount, startDevnet, USDC_ABI } from '@x402kit/devnet'
import { createLogger, type FacilitatorService, startFacilitatorService } from '@x402kit/facilitator'
import express from 'express'
import Fastify from 'fastify'
import { Hono } from 'hono'
import { type Address, type Hash, parseEventLogs } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { type Asset, HttpHeader, Network } from 'x402kit'
import { type Fetch, wrapFetch } from 'x402kit/client'
import { paywall as expressPaywall } from 'x402kit/express'
import { paywall as fastifyPaywall } from 'x402kit/fastify'
import { paywall as honoPaywall } from 'x402kit/hono'
import type { PaywallConfig } from 'x402kit/server'

export type Stack = {
  devnet: Devnet
  network: Devnet['network']
  /** The devnet's USDC, as registered with `Network`. */
  asset: Asset
  /** Our facilitator service, reached over HTTP at `service.url`. */
  service: FacilitatorService
  /** Faults the facilitator service reported (`onError`); a healthy run leaves it empty. */
  facilitatorErrors: unknown[]
  /** The service's log lines at warn and above. */
  logs: string[]
  /** Where every paid API of the stack sends the money. */
  payTo: Address
  /** Funded accounts (ETH and 10,000 USDC each) for payers. */
  payers: DevnetAccount[]
  /** Funded keys no one else sends from, for further facilitators (one nonce sequence per key). */
  spareSigners: DevnetAccount[]
  /** USDC balances of `addresses`, in atomic units, in order. */
  balances(addresses: readonly string[]): Promise<bigint[]>
  stop(): Promise<void>
}

/**
 * Starts a devnet (automine), registers its USDC, and starts our facilitator service on it with
 * `serviceSigners` keys. Accounts are handed out in order: service signers, spare signers, payTo, payers.
 */
export async function startStack(options: {
  payers: number
  spareSigners?: number
  serviceSigners?: number
  /** Settle through the settlement pipeline, in batches sent to the devnet's SettlementBatcher. */
  batcher?: boolean
}): Promise<Stack> {
  const serviceSigners = options.serviceSigners ?? 2
  const spare = options.spareSigners ?? 0
  const devnet = await startDevnet({ accounts: serviceSigners + spare + 1 + options.payers })
  const asset: Asset = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
  Network.registerAsset(devnet.network, devnet.chainId, asset)
  const dataDir = await mkdtemp(join(tmpdir(), 'x402kit-test-'))
  const facilitatorErrors: unknown[] = []
  const logs: string[] = []
  let service: FacilitatorService
  try {
    service = await startFacilitatorService(
      {
        port: 0,
        host: '127.0.0.1',
        dataDir,
        networks: {
          [devnet.network]: {
            rpcUrl: devnet.rpcUrl,
            signers: devnet.accounts.slice(0, serviceSigners).map((a) => a.privateKey),
            ...(options.batcher && { batcher: devnet.batcher, pollingIntervalMs: 50 }),
          },
        },
      },
      {
        facilitator: { onError: (error) => void facilitatorErrors.push(error) },
        // Warnings and errors are kept for a failing test to show; access lines are not written.
        logger: createLogger({ level: 'warn', write: (line) => void logs.push(line) }),
      },
    )
  } catch (error) {
    await devnet.stop()
    await rm(dataDir, { recursive: true, force: true })
    throw error
  }
  const accounts = devnet.accounts.slice(serviceSigners)
  return {
    devnet,
    network: devnet.network,
    asset,
    service,
    facilitatorErrors,
    logs,
    spareSigners: accounts.slice(0, spare),
    payTo: accounts[spare]!.address,
    payers: accounts.slice(spare + 1),
    balances: (addresses) => Promise.all(addresses.map((address) => devnet.usdcBalance(address as Address))),
    async stop() {
      await service.close({ graceMs: 1_000 })
      await devnet.stop()
      await rm(dataDir, { recursive: true, force: true })
    },
  }
}

/** Prices of the paid API's routes, in atomic USDC. */
export const prices = { weather: 1_000n, broken: 1_000n, premium: 1_000_000n } as const

/** What a client is willing to pay per request in the suites: more than `/weather`, less than `/premium`. */
export const budget = { perRequest: '$0.05' } as const

export const weather = { city: 'Lisbon', temperatureC: 19 }

/** The paid API's routes: `/weather` answers, `/broken` fails with 500, `/premium` costs more than the budget. */
export function paidRoutes(stack: Stack): PaywallConfig['routes'] {
  const offer = { network: stack.network, asset: stack.asset, mimeType: 'application/json' }
  return {
    'GET /weather': { ...offer, price: '$0.001', description: 'Current weather' },
    'GET /broken': { ...offer, price: '$0.001', description: 'A handler that fails' },
    'GET /premium': { ...offer, price: '$1', description: 'Too dear for the budget' },
  }
}

export const adapters = ['hono', 'express', 'fastify'] as const
export type AdapterName = (typeof adapters)[number]

export type PaidApi = {
  url: string
  /** How often each handler ran, by path. */
  served: Record<string, number>
  /** Faults the paywall reported (`onError`). */
  errors: unknown[]
  close(): Promise<void>
}

/**
 * Serves the paid API (same routes and handlers in each framework) behind `adapter`'s paywall on a
 * loopback port, paid to `stack.payTo` through `facilitator` (default: the service's URL).
 */
export async function startPaidApi(
  stack: Stack,
  adapter: AdapterName,
  options: { facilitator?: PaywallConfig['facilitator'] } = {},
): Promise<PaidApi> {
  const served: Record<string, number> = {}
  const errors: unknown[] = []
  const config: PaywallConfig = {
    facilitator: options.facilitator ?? stack.service.url,
    payTo: stack.payTo,
    routes: paidRoutes(stack),
    onError: (error) => void errors.push(error),
  }

  // The same three handlers in each framework, each counting its runs.
  const handlers = {
    '/weather': () => ({ status: 200, body: weather }),
    '/broken': () => ({ status: 500, body: { error: 'the weather station is down' } }),
    '/premium': () => ({ status: 200, body: { plan: 'premium' } }),
  }
  const run = (path: keyof typeof handlers) => {
    served[path] = (served[path] ?? 0) + 1
    return handlers[path]()
  }
  const paths = Object.keys(handlers) as (keyof typeof handlers)[]

  if (adapter === 'hono') {
    const app = new Hono()
    app.use(honoPaywall(config))
    for (const path of paths)
      app.get(path, (c) => {
        const { status, body } = run(path)
        return c.json(body, status as 200)
      })
    const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as Server
    return { ...(await listening(server)), served, errors }
  }
  if (adapter === 'express') {
    const app = express()
    app.use(expressPaywall(config))
    for (const path of paths)
      app.get(path, (_req, res) => {
        const { status, body } = run(path)
        res.status(status).json(body)
      })
    return { ...(await listening(app.listen(0, '127.0.0.1'))), served, errors }
  }
  const app = Fastify()
  await app.register(fastifyPaywall(config))
  for (const path of paths)
    app.get(path, async (_request, reply) => {
      const { status, body } = run(path)
      return reply.code(status).send(body)
    })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}`, served, errors, close: () => app.close() }
}

async function listening(server: Server): Promise<{ url: string; close(): Promise<void> }> {
  if (!server.listening) await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

/** A fetch that records every request it sends (method, URL, headers) before sending it. */
export function recordingFetch(): { fetch: Fetch; sent: Request[] } {
  const sent: Request[] = []
  return {
    sent,
    fetch: async (input, init) => {
      const request = new Request(input, init)
      sent.push(request.clone())
      return fetch(request)
    },
  }
}

/** Whether a request carries a payment (either version's header). */
export function carriesPayment(request: Request): boolean {
  return request.headers.has(HttpHeader.paymentSignature) || request.headers.has(HttpHeader.xPayment)
}

/**
 * The `PAYMENT-SIGNATURE` our client (`wrapFetch`) signs for `url`, captured instead of sent: the
 * server sees only the unpaid request, so the authorization is fresh and unused.
 */
export async function capturePayment(account: DevnetAccount, url: string): Promise<string> {
  let captured: string | undefined
  const capture: Fetch = async (input, init) => {
    const request = new Request(input, init)
    captured ??= request.headers.get(HttpHeader.paymentSignature) ?? undefined
    return captured ? new Response(null, { status: 204 }) : fetch(request)
  }
  await wrapFetch(capture, { account: privateKeyToAccount(account.privateKey), budget })(url)
  if (!captured) throw new Error(`capturePayment: ${url} did not ask for a version 2 payment`)
  return captured
}

/** A receipt's status and the USDC transfers it logged. */
export async function settlementOnChain(
  devnet: Devnet,
  hash: string,
): Promise<{ status: 'success' | 'reverted'; transfers: { from: Address; to: Address; value: bigint }[] }> {
  const receipt = await devnet.publicClient.getTransactionReceipt({ hash: hash as Hash })
  const logs = parseEventLogs({ abi: USDC_ABI, logs: receipt.logs, eventName: 'Transfer' })
  return {
    status: receipt.status,
    transfers: logs
      .filter((log) => log.address.toLowerCase() === devnet.usdc.toLowerCase())
      .map(({ args }) => ({ from: args.from, to: args.to, value: args.value })),
  }
}

/** Whether USDC has recorded the EIP-3009 authorization `(from, nonce)` as used. */
export function authorizationUsed(devnet: Devnet, authorization: { from: string; nonce: string }): Promise<boolean> {
  return devnet.publicClient.readContract({
    address: devnet.usdc,
    abi: USDC_ABI,
    functionName: 'authorizationState',
    args: [authorization.from as Address, authorization.nonce as Hash],
  })
}

export type RawResponse = { status: number; headers: Record<string, string | string[] | undefined>; body: string }

/** A request with the target sent exactly as given (no URL normalisation, unlike `fetch`). */
export function rawRequest(
  url: string,
  target: string,
  { method = 'GET', headers = {} }: { method?: string; headers?: Record<string, string> } = {},
): Promise<RawResponse> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: hostname, port, method, path: target, headers, agent: false }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk) => (body += chunk))
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body }))
    })
    request.on('error', reject)
    request.end()
  })
}
