/**
 * Channel client interop: our client (`wrapFetch` with channels) pays a server built from the reference
 * packages (`@x402/express` + `@x402/evm/batch-settlement/server`, with the reference facilitator
 * `@x402/evm/batch-settlement/facilitator` in-process), over real HTTP on loopback, with our escrow at
 * the canonical address; then gets back what it did not spend by a cooperative refund.
 */
import { x402Facilitator } from '@x402/core/facilitator'
import { BatchSettlementEvmScheme as ReferenceFacilitatorScheme } from '@x402/evm/batch-settlement/facilitator'
import { BatchSettlementEvmScheme as ReferenceServerScheme } from '@x402/evm/batch-settlement/server'
import { paymentMiddleware, x402ResourceServer } from '@x402/express'
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import express from 'express'
import type { Address, Hex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HttpHeader, PaymentPayload } from 'x402kit'
import { getPaymentResult, wrapFetch } from 'x402kit/client'
import { Channel } from 'x402kit/evm'
import { escrowChannel, placeEscrow } from './batch-settlement.client.support.ts'
import { referenceSigner } from './batch-settlement.seller.support.ts'
import { type Listening, listen } from './reference.ts'

const price = 1_000n
const requests = 8

let devnet: Devnet
let payer: DevnetAccount
let relayer: DevnetAccount
let authorizer: DevnetAccount
let payTo: Address
let server: Listening
let serverScheme: ReferenceServerScheme
let facilitator: x402Facilitator
let served = 0
const payloads: { type: string; voucher: { maxClaimableAmount: string }; amount?: string }[] = []

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 3 })
  ;[payer, relayer, authorizer] = devnet.accounts as [DevnetAccount, DevnetAccount, DevnetAccount]
  await placeEscrow(devnet)
  payTo = privateKeyToAccount(generatePrivateKey()).address

  facilitator = new x402Facilitator().register(
    devnet.network,
    new ReferenceFacilitatorScheme(referenceSigner(devnet, relayer.privateKey), privateKeyToAccount(authorizer.privateKey)) as never,
  )
  const inProcess = {
    verify: (payload: never, requirements: never) => facilitator.verify(payload, requirements),
    settle: (payload: never, requirements: never) => facilitator.settle(payload, requirements),
    getSupported: async () => facilitator.getSupported(),
  }
  serverScheme = new ReferenceServerScheme(payTo)
  const resourceServer = new x402ResourceServer(inProcess as never).register(devnet.network, serverScheme as never)
  const app = express()
  app.use((req, _res, next) => {
    const header = req.header(HttpHeader.paymentSignature)
    if (header) payloads.push(PaymentPayload.decode(header).payload as (typeof payloads)[number])
    next()
  })
  app.use(
    paymentMiddleware(
      {
        'GET /quote': {
          accepts: {
            scheme: 'batch-settlement',
            network: devnet.network,
            payTo,
            price: { amount: price.toString(), asset: devnet.usdc, extra: { name: 'USD Coin', version: '2' } },
          },
          description: 'A quote',
          mimeType: 'application/json',
        },
      } as never,
      resourceServer,
    ),
  )
  app.get('/quote', (_req, res) => {
    served++
    res.json({ symbol: 'ETH', usd: 3_000 })
  })
  server = await listen(app)
})
afterAll(async () => {
  await server?.close()
  await devnet?.stop()
})

describe('our channel client against the reference server and facilitator', () => {
  let pay: ReturnType<typeof wrapFetch>
  let id: Hex

  it(`pays ${requests} requests over one channel: one deposit, then vouchers`, async () => {
    pay = wrapFetch(fetch, {
      account: privateKeyToAccount(payer.privateKey),
      budget: { perRequest: '$0.01' },
      channels: { deposit: { requests: 20 }, publicClient: devnet.publicClient as never },
    })
    const before = await devnet.usdcBalance(payer.address)
    for (let i = 0; i < requests; i++) {
      const response = await pay(`${server.url}/quote`)
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual({ symbol: 'ETH', usd: 3_000 })
      expect(getPaymentResult(response)).toMatchObject({ paid: true, offer: { scheme: 'batch-settlement' } })
    }
    expect(served).toBe(requests)
    expect(payloads.map(({ type }) => type)).toEqual(['deposit', ...Array(requests - 1).fill('voucher')])
    expect(payloads.map(({ voucher }) => voucher.maxClaimableAmount)).toEqual(
      Array.from({ length: requests }, (_, i) => String(price * BigInt(i + 1))),
    )
    expect(await devnet.usdcBalance(payer.address)).toBe(before - 20n * price)
    const [channel] = await pay.channels.list()
    id = channel!.id
    expect(channel).toMatchObject({ balance: 20n * price, charged: price * BigInt(requests), held: (20n - BigInt(requests)) * price })
    expect(await escrowChannel(devnet, id)).toEqual({ balance: 20n * price, totalClaimed: 0n })
  })

  it("goes on after losing its store, from the escrow and the server's corrective 402, with no new deposit", async () => {
    pay = wrapFetch(fetch, {
      account: privateKeyToAccount(payer.privateKey),
      budget: { perRequest: '$0.01' },
      channels: { deposit: { requests: 20 }, publicClient: devnet.publicClient as never },
    })
    const before = await devnet.usdcBalance(payer.address)
    const response = await pay(`${server.url}/quote`)
    expect(response.status).toBe(200)
    // The escrow knows the deposit but no charge: the first voucher is refused with the server's count
    // and the voucher of ours it holds; the client pays the next increment above it.
    expect(payloads.slice(requests).map(({ type, voucher }) => `${type} ${voucher.maxClaimableAmount}`)).toEqual([
      'voucher 1000',
      `voucher ${price * BigInt(requests + 1)}`,
    ])
    expect(await devnet.usdcBalance(payer.address)).toBe(before)
    expect(served).toBe(requests + 1)
    const [channel] = await pay.channels.list()
    expect(channel).toMatchObject({ id, charged: price * BigInt(requests + 1), balance: 20n * price })
  })

  it('is refunded cooperatively what it did not spend; the receiver gets exactly what it served', async () => {
    const spent = price * BigInt(requests + 1)
    const before = await devnet.usdcBalance(payer.address)
    const result = await pay.channels.refund(id)
    expect(result).toMatchObject({ how: 'refund', ok: true, amount: 20n * price - spent })
    expect(payloads.at(-1)).toMatchObject({ type: 'refund', voucher: { maxClaimableAmount: String(spent) } })
    expect(await devnet.usdcBalance(payer.address)).toBe(before + 20n * price - spent)
    // The refund claimed the vouchers first; a sweep pays them to the receiver.
    await serverScheme.createChannelManager(facilitator as never, devnet.network, devnet.usdc).settle()
    expect(await devnet.usdcBalance(payTo)).toBe(spent)
    expect(await escrowChannel(devnet, id)).toEqual({ balance: spent, totalClaimed: spent })
    const [channel] = await pay.channels.list()
    expect(channel).toMatchObject({ closed: true, held: 0n })
    expect(served).toBe(requests + 1)
  })

  it('opens the channel again with a new deposit after the refund', async () => {
    const before = await devnet.usdcBalance(payer.address)
    const response = await pay(`${server.url}/quote`)
    expect(response.status).toBe(200)
    expect(payloads.at(-1)).toMatchObject({ type: 'deposit', voucher: { maxClaimableAmount: String(price * BigInt(requests + 2)) } })
    expect(await devnet.usdcBalance(payer.address)).toBe(before - 20n * price)
    expect(Channel.scheme).toBe('batch-settlement')
  })
})
