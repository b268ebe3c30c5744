/**
 * End to end with EIP-2612 permit on the local chain with our PermitToken (PUSD): our client
 * (`wrapFetch` with `exactEvmClient` reading the token nonce) → a route priced in PUSD behind the Hono
 * paywall → our facilitator in-process (`exactEvmFacilitator` in `createFacilitator`) → `permit` and
 * `transferFrom` on chain. Every payment is checked where it lands: the balances of payer and payTo.
 */
import { type Devnet, startDevnet } from '@x402kit/devnet'
import { Hono } from 'hono'
import type { Address } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Asset, HttpHeader, Network, PaymentRequired } from 'x402kit'
import { decodePaymentResponse, type Fetch, getPaymentResult, wrapFetch } from 'x402kit/client'
import { exactEvmClient, exactEvmFacilitator } from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'

const price = 12_500n // 0.0125 PUSD
const report = { quarter: 'Q3', revenue: 42 }

describe('paying a PUSD-priced route by EIP-2612 permit through the Hono paywall', () => {
  let devnet: Devnet
  let pusd: Asset
  let spender: Address
  let payTo: Address
  let served = 0
  let app: Hono
  const fetchApp: Fetch = async (input, init) => app.request(new Request(input, init))

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 4 })
    pusd = { address: devnet.permitToken, name: 'Permit Dollar', version: '1', decimals: 6, symbol: 'PUSD', transfer: 'eip2612' }
    Network.registerAsset(devnet.network, devnet.chainId, pusd)
    const [signer, seller] = devnet.accounts as [{ address: Address; privateKey: `0x${string}` }, { address: Address }]
    spender = signer.address
    payTo = seller.address
    const facilitator = createFacilitator({
      schemes: [exactEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [signer.privateKey] } } })],
    })
    app = new Hono()
    app.use(
      paywall({
        facilitator,
        payTo,
        network: devnet.network,
        // The spender is the facilitator's signer (its /supported signers), named in the route.
        routes: { 'GET /report': { price: { atomic: price }, asset: pusd, extra: { spender }, description: 'Quarterly report' } },
      }),
    )
    app.get('/report', (c) => {
      served++
      return c.json(report)
    })
  })
  afterAll(async () => {
    await devnet?.stop()
  })

  const balances = (payer: Address) => Promise.all([payer, payTo].map((address) => devnet.tokenBalance(devnet.permitToken, address)))

  it('refuses at start a permit-priced route that names no spender, saying where to give one', () => {
    const routes = { 'GET /report': { price: (_: Request) => '0.01', asset: pusd } }
    expect(() => paywall({ facilitator: 'http://127.0.0.1:4020', payTo, network: devnet.network, routes })).toThrow(
      /Route "GET \/report": An offer in PUSD \(EIP-2612 permit\) needs a spender address[\s\S]*extra: \{ spender \}/,
    )
  })

  it('offers the permit method and spender in the 402', async () => {
    const response = await app.request('http://localhost/report')
    expect(response.status).toBe(402)
    const [offer] = PaymentRequired.decode(response.headers.get(HttpHeader.paymentRequired)!).accepts
    expect(offer).toMatchObject({
      scheme: 'exact',
      network: devnet.network,
      asset: devnet.permitToken,
      amount: String(price),
      payTo,
      extra: { name: 'Permit Dollar', version: '1', assetTransferMethod: 'eip2612', spender },
    })
  })

  it('pays twice in a row (one permit nonce after the other); PUSD moves by exactly the price each time', async () => {
    const payer = devnet.accounts[2]!
    const account = privateKeyToAccount(payer.privateKey)
    const pay = wrapFetch(fetchApp, {
      schemes: [exactEvmClient(account, { publicClient: devnet.publicClient })],
      budget: { perRequestAtomic: { [devnet.permitToken]: '20000' } },
    })
    const before = await balances(payer.address)
    for (const round of [1n, 2n]) {
      const response = await pay('http://localhost/report')
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual(report)
      const result = getPaymentResult(response)
      expect(result).toMatchObject({ paid: true, settlement: { success: true, payer: payer.address, amount: String(price) } })
      expect(decodePaymentResponse(response.headers)?.transaction).toMatch(/^0x[0-9a-f]{64}$/)
      expect(await balances(payer.address)).toEqual([before[0]! - round * price, before[1]! + round * price])
    }
    expect(served).toBe(2)
  })

  it('pays from a plain account when wrapFetch is given chain access', async () => {
    const payer = devnet.accounts[3]!
    const pay = wrapFetch(fetchApp, {
      account: privateKeyToAccount(payer.privateKey),
      publicClient: devnet.publicClient,
      budget: { perRequestAtomic: { [devnet.permitToken]: '20000' } },
    })
    const before = await balances(payer.address)
    const response = await pay('http://localhost/report')
    expect(response.status).toBe(200)
    // The payer is named by the permit's owner before any settlement header is read.
    expect(getPaymentResult(response)).toMatchObject({ paid: true, payer: payer.address })
    expect(await balances(payer.address)).toEqual([before[0]! - price, before[1]! + price])
  })

  it('is not served twice for one permit: the same payment header again is refused, nothing moves', async () => {
    const payer = devnet.accounts[3]!
    let header: string | undefined
    const capture: Fetch = async (input, init) => {
      const request = new Request(input, init)
      header ??= request.headers.get(HttpHeader.paymentSignature) ?? undefined
      return fetchApp(request)
    }
    const pay = wrapFetch(capture, {
      schemes: [exactEvmClient(privateKeyToAccount(payer.privateKey), { publicClient: devnet.publicClient })],
      budget: { perRequestAtomic: { [devnet.permitToken]: '20000' } },
    })
    expect((await pay('http://localhost/report')).status).toBe(200)
    const after = await balances(payer.address)
    const servedBefore = served
    const replay = await app.request('http://localhost/report', { headers: { [HttpHeader.paymentSignature]: header! } })
    expect(replay.status).toBe(402)
    expect(await balances(payer.address)).toEqual(after)
    expect(served).toBe(servedBefore)
  })

  it('a client without chain access does not pay a permit offer, and nothing moves', async () => {
    const payer = devnet.accounts[3]!
    const before = await balances(payer.address)
    const pay = wrapFetch(fetchApp, {
      account: privateKeyToAccount(payer.privateKey),
      budget: { perRequestAtomic: { [devnet.permitToken]: '20000' } },
    })
    const response = await pay('http://localhost/report')
    expect(response.status).toBe(402)
    expect(getPaymentResult(response)).toMatchObject({ paid: false, reason: 'no_payable_offer' })
    expect(await balances(payer.address)).toEqual(before)
  })
})
