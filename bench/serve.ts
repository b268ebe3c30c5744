/**
 * One role of a benchmarked stack, run in a process of its own so that the load generator, the
 * resource server and the facilitator do not share an event loop (as they would not in production).
 * `stacks.ts` forks this file, sends it a `RoleStart`, and gets back `{ url }`. It stops on `'stop'`,
 * or as soon as its parent goes away.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { serve } from '@hono/node-server'
import { startFacilitatorService } from '@x402kit/facilitator'
import express from 'express'
import { Hono } from 'hono'
import { type Address, defineChain, type Hex } from 'viem'
import { anvil } from 'viem/chains'
import { type Asset, Network } from 'x402kit'
import { paywall as expressPaywall } from 'x402kit/express'
import { paywall as honoPaywall } from 'x402kit/hono'
import { listen, startReferenceFacilitator, startReferenceServer } from '../test/reference.ts'

export type Role = 'ours-facilitator' | 'ours-server' | 'reference-facilitator' | 'reference-server'

export type RoleStart = {
  role: Role
  rpcUrl: string
  network: `eip155:${number}`
  chainId: number
  usdc: Address
  /** Seconds between blocks; 0 mines each transaction at once. */
  blockTime: number
  /** Price in atomic USDC units. */
  amount: string
  signerKey?: Hex
  payTo?: Address
  facilitatorUrl?: string
  /** Framework of our resource server. */
  framework?: 'express' | 'hono'
}

export type RoleReply = { url: string } | { error: string }

type Running = { url: string; close(): Promise<void> }

const weather = { city: 'Lisbon', temperatureC: 19 }

export async function startRole(start: RoleStart): Promise<Running> {
  switch (start.role) {
    case 'ours-facilitator':
      return await oursFacilitator(start)
    case 'ours-server':
      return await oursServer(start)
    case 'reference-facilitator':
      return await startReferenceFacilitator({
        rpcUrl: start.rpcUrl,
        chain: referenceChain(start),
        privateKey: required(start.signerKey, 'signerKey'),
        network: start.network,
      })
    case 'reference-server':
      return await startReferenceServer({
        facilitatorUrl: required(start.facilitatorUrl, 'facilitatorUrl'),
        network: start.network,
        payTo: required(start.payTo, 'payTo'),
        asset: start.usdc,
        amount: start.amount,
      })
  }
}

async function oursFacilitator(start: RoleStart): Promise<Running> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'x402kit-bench-'))
  try {
    const service = await startFacilitatorService(
      {
        port: 0,
        host: '127.0.0.1',
        dataDir,
        networks: { [start.network]: { rpcUrl: start.rpcUrl, signers: [required(start.signerKey, 'signerKey')] } },
      },
      { facilitator: { onError: cappedLog('ours facilitator') } },
    )
    return {
      url: service.url,
      close: async () => {
        await service.close({ graceMs: 1_000 })
        await rm(dataDir, { recursive: true, force: true })
      },
    }
  } catch (error) {
    await rm(dataDir, { recursive: true, force: true })
    throw error
  }
}

async function oursServer(start: RoleStart): Promise<Running> {
  const asset = registerUsdc(start)
  const config = {
    facilitator: required(start.facilitatorUrl, 'facilitatorUrl'),
    payTo: required(start.payTo, 'payTo'),
    routes: { 'GET /weather': { price: { atomic: start.amount }, network: start.network, asset } },
    onError: cappedLog('ours server'),
  }
  if (start.framework === 'hono') {
    const app = new Hono()
    app.use(honoPaywall(config))
    app.get('/weather', (c) => c.json(weather))
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
  const app = express()
  app.use(expressPaywall(config))
  app.get('/weather', (_req, res) => {
    res.json(weather)
  })
  return await listen(app)
}

/** The token the local chain deployed, known to x402kit by its address on this network. */
export function registerUsdc(start: Pick<RoleStart, 'network' | 'chainId' | 'usdc'>): Asset {
  const asset: Asset = { address: start.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
  Network.registerAsset(start.network, start.chainId, asset)
  return asset
}

/**
 * The chain the reference facilitator's viem client is given. viem polls receipts every
 * `blockTime / 2`, at least 500 ms and at most 4 s (4 s when the chain names no block time, as
 * viem's `anvil` does). A real chain's definition carries its block time (Base: 2 s, so 1 s), so the
 * local chain's is given too; under automine the reference gets viem's floor, 500 ms. Ours polls every 250 ms.
 */
function referenceChain(start: RoleStart) {
  return defineChain({
    ...anvil,
    id: start.chainId,
    rpcUrls: { default: { http: [start.rpcUrl] } },
    blockTime: start.blockTime > 0 ? start.blockTime * 1000 : 1000,
  })
}

function required<value>(value: value | undefined, name: string): value {
  if (value === undefined) throw new Error(`bench/serve: ${name} is required for this role`)
  return value
}

/** Logs the first few faults only: under load one cause repeats thousands of times. */
function cappedLog(who: string, cap = 3): (error: unknown) => void {
  let count = 0
  return (error) => {
    count++
    if (count <= cap) console.error(`[bench ${who}] ${error instanceof Error ? error.message : String(error)}`.slice(0, 500))
    if (count === cap) console.error(`[bench ${who}] further faults are not logged`)
  }
}

if (process.send) {
  process.once('message', async (start: RoleStart) => {
    let running: Running
    try {
      running = await startRole(start)
    } catch (error) {
      process.send!({ error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies RoleReply, () =>
        process.exit(1),
      )
      return
    }
    let stopping = false
    const stop = () => {
      if (stopping) return
      stopping = true
      void running
        .close()
        .catch((error) => console.error(`[bench ${start.role}] close failed`, error))
        .finally(() => process.exit(0))
    }
    process.on('message', (message) => message === 'stop' && stop())
    process.on('disconnect', stop)
    process.send!({ url: running.url } satisfies RoleReply)
  })
}
