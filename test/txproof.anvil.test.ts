/**
 * Pay-by-transaction end to end on the local chain with real USDC: our client (`wrapFetch` with
 * `txproofClient`) sends the transfer and proves it → a Hono paywall offering `txproof` → our
 * facilitator service over HTTP (PGlite) running `exact` and `txproof` → the chain. Then the
 * single-use record of a transaction: shared by instances and kept across a restart (SQL store).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Devnet, type DevnetAccount, startDevnet, USDC_ABI } from '@x402kit/devnet'
import { type FacilitatorService, migrate, openDatabase, sqlStore, startFacilitatorService } from '@x402kit/facilitator'
import { Hono } from 'hono'
import { type Address, type Hash, parseEventLogs } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Asset, HttpHeader, Network, type Payment, PaymentRequired } from 'x402kit'
import { type Fetch, getPaymentResult, wrapFetch } from 'x402kit/client'
import { exactEvmFacilitator, exactEvmServer, txproofClient, txproofEvmFacilitator, txproofServer } from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'

const price = 10_000n // $0.01
const budget = { perRequest: '$0.05' } as const
const base = 'http://api.test'

let devnet: Devnet
let service: FacilitatorService
let dataDir: string
const facilitatorErrors: unknown[] = []
const served: Record<string, number> = {}
let api: Fetch
let payTo: Address
let payers: DevnetAccount[]

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 5 })
  const asset: Asset = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
  Network.registerAsset(devnet.network, devnet.chainId, asset)
  const [signer, seller, ...rest] = devnet.accounts as [DevnetAccount, DevnetAccount, ...DevnetAccount[]]
  payTo = seller.address
  payers = rest
  dataDir = await mkdtemp(join(tmpdir(), 'x402kit-txproof-'))
  const rpcUrl = devnet.rpcUrl
  service = await startFacilitatorService(
    {
      port: 0,
      host: '127.0.0.1',
      dataDir: join(dataDir, 'service'),
      networks: { [devnet.network]: { rpcUrl, signers: [signer.privateKey] } },
    },
    {
      schemes: [
        exactEvmFacilitator({ networks: { [devnet.network]: { rpcUrl, signers: [signer.privateKey] } } }),
        txproofEvmFacilitator({ networks: { [devnet.network]: { rpcUrl } } }),
      ],
      facilitator: { onError: (error) => void facilitatorErrors.push(error) },
    },
  )

  const app = new Hono()
  app.use(
    paywall({
      facilitator: service.url,
      payTo,
      network: devnet.network,
      schemes: [exactEvmServer(), txproofServer()],
      routes: {
        'GET /report': { price: '$0.01', scheme: 'txproof', description: 'A report paid by transaction' },
        'GET /summary': { price: '$0.01', scheme: 'txproof', description: 'Another route at the same price' },
        'GET /weather': { price: '$0.001' },
      },
    }),
  )
  for (const path of ['/report', '/summary', '/weather'])
    app.get(path, (c) => {
      served[path] = (served[path] ?? 0) + 1
      return c.json({ path })
    })
  // The paid API is called in-process: the port is not the point here; the facilitator is over HTTP.
  api = async (input, init) => app.fetch(new Request(input, init))
})

afterAll(async () => {
  await service?.close({ graceMs: 1_000 })
  await devnet?.stop()
  if (dataDir) await rm(dataDir, { recursive: true, force: true })
})

const usdc = (address: Address) => devnet.usdcBalance(address)
const reasonOf = (response: Response) => PaymentRequired.decode(response.headers.get(HttpHeader.paymentRequired)!).error

/** A fetch for `api` that records the payment header of every request it sends. */
function recording(): { fetch: Fetch; headers: string[] } {
  const headers: string[] = []
  return {
    headers,
    fetch: async (input, init) => {
      const request = new Request(input, init)
      const header = request.headers.get(HttpHeader.paymentSignature)
      if (header) headers.push(header)
      return api(request)
    },
  }
}

/** The payment header our client makes for `url`, captured instead of sent: the transfer is on chain, the proof unused. */
async function capture(payer: DevnetAccount, url: string): Promise<string> {
  let captured: string | undefined
  const capturing: Fetch = async (input, init) => {
    const request = new Request(input, init)
    captured ??= request.headers.get(HttpHeader.paymentSignature) ?? undefined
    return captured ? new Response(null, { status: 204 }) : api(request)
  }
  await wrapFetch(capturing, { schemes: [txproofClient({ wallet: devnet.walletClient(payer.privateKey) })], budget })(url)
  if (!captured) throw new Error(`capture: ${url} did not ask for a version 2 payment`)
  return captured
}

const send = (path: string, header: string) => api(`${base}${path}`, { headers: { [HttpHeader.paymentSignature]: header } })

describe('txproof end to end: wrapFetch → Hono paywall → facilitator service → chain', () => {
  it('pays a txproof route with the payer’s own transfer: 200, payTo up exactly the price; the same payment again gets 402', async () => {
    const payer = payers[0]!
    const before = await Promise.all([usdc(payer.address), usdc(payTo)])
    const { fetch, headers } = recording()
    const pay = wrapFetch(fetch, { schemes: [txproofClient({ wallet: devnet.walletClient(payer.privateKey) })], budget })

    const response = await pay(`${base}/report`)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ path: '/report' })
    expect(served['/report']).toBe(1)
    const result = getPaymentResult(response)
    expect(result).toMatchObject({ paid: true, payer: payer.address, settlement: { success: true, network: devnet.network } })
    expect(await Promise.all([usdc(payer.address), usdc(payTo)])).toEqual([before[0]! - price, before[1]! + price])

    // The settlement names the payer's own transaction: a USDC transfer of the price, sent by the payer.
    const hash = (result?.paid && result.settlement?.transaction) as Hash
    const receipt = await devnet.publicClient.getTransactionReceipt({ hash })
    expect(receipt.from).toBe(payer.address.toLowerCase())
    expect(parseEventLogs({ abi: USDC_ABI, logs: receipt.logs, eventName: 'Transfer' }).map((log) => log.args)).toEqual([
      { from: payer.address, to: payTo, value: price },
    ])

    expect(headers).toHaveLength(1)
    const replay = await send('/report', headers[0]!)
    expect(replay.status).toBe(402)
    expect(reasonOf(replay)).toBe('invalid_txproof_evm_transaction_already_used')
    expect(served['/report']).toBe(1)
    expect(await Promise.all([usdc(payer.address), usdc(payTo)])).toEqual([before[0]! - price, before[1]! + price])
    expect(facilitatorErrors).toEqual([])
  })

  it('a proof made for one route buys nothing at another route of the same price, and still pays its own', async () => {
    const header = await capture(payers[1]!, `${base}/report`)
    const elsewhere = await send('/summary', header)
    expect(elsewhere.status).toBe(402)
    expect(reasonOf(elsewhere)).toBe('invalid_txproof_evm_signature')
    expect(served['/summary']).toBeUndefined()

    const servedBefore = served['/report'] ?? 0
    const paid = await send('/report', header)
    expect(paid.status).toBe(200)
    expect(served['/report']).toBe(servedBefore + 1)
  })
})

describe('txproof single use in the SQL store (PGlite)', () => {
  it('is shared by instances and survives a restart', async () => {
    const dir = join(dataDir, 'restart')
    const scheme = () => txproofEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl } } })
    const offer = txproofServer().requirements({
      price: { atomic: price },
      network: devnet.network,
      payTo: privateKeyToAccount(generatePrivateKey()).address,
    })
    const payer = payers[2]!
    const resource = `${base}/report`
    const proof = await txproofClient({ wallet: devnet.walletClient(payer.privateKey) }).createPayload(offer, { resource })
    const payment: Payment = {
      payload: { x402Version: 2, resource: { url: resource }, accepted: offer, payload: proof },
      requirements: offer,
    }
    const alreadyUsed = { isValid: false, invalidReason: 'invalid_txproof_evm_transaction_already_used', payer: payer.address }

    const first = await openDatabase({ dataDir: dir })
    await migrate(first)
    const one = createFacilitator({ schemes: [scheme()], store: sqlStore(first) })
    expect(await one.verify(payment)).toEqual({ isValid: true, payer: payer.address })
    expect(await one.settle(payment)).toMatchObject({ success: true, transaction: proof.transaction })
    expect(await createFacilitator({ schemes: [scheme()], store: sqlStore(first) }).verify(payment)).toMatchObject(alreadyUsed)
    await first.close()

    const again = await openDatabase({ dataDir: dir })
    try {
      await migrate(again)
      const restarted = createFacilitator({ schemes: [scheme()], store: sqlStore(again) })
      expect(await restarted.verify(payment)).toMatchObject(alreadyUsed)
    } finally {
      await again.close()
    }
  })
})
