import { Hono } from 'hono'
import type { Hex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { Reason } from '../../core/Errors.ts'
import { HttpHeader } from '../../core/HttpHeader.ts'
import * as Network from '../../core/Network.ts'
import * as PaymentPayload from '../../core/PaymentPayload.ts'
import * as PaymentRequired from '../../core/PaymentRequired.ts'
import { paywall } from '../../server/adapters/hono.ts'
import * as Channel from './Channel.ts'
import type { BatchSettlementEvmSeller } from './seller.ts'
import { memorySellerChannelStore } from './sellerStore.ts'
import { batchSettlementEvmServer } from './server.ts'

const network = 'eip155:84532'
const usdc = {
  address: '0x036CbD53842c5426634e7929541eC2318f3dCF7e',
  name: 'USDC',
  version: '2',
  decimals: 6,
  symbol: 'USDC',
  transfer: 'eip3009',
} as const
Network.registerAsset(network, 84532, usdc)
const payer = privateKeyToAccount(generatePrivateKey())
const authorizer = privateKeyToAccount(generatePrivateKey()).address
const payTo = privateKeyToAccount(generatePrivateKey()).address
const config: Channel.ChannelConfig = {
  payer: payer.address,
  payerAuthorizer: payer.address,
  receiver: payTo,
  receiverAuthorizer: authorizer,
  token: usdc.address,
  withdrawDelay: 900,
  salt: `0x${'00'.repeat(32)}`,
}
const id = Channel.id(config, 84532).toLowerCase() as Hex
/** No facilitator call is expected: vouchers are the seller's alone. */
const unreachable = {
  verify: async () => {
    throw new Error('the facilitator was called')
  },
  settle: async () => {
    throw new Error('the facilitator was called')
  },
  supported: async () => ({ kinds: [], extensions: [], signers: {} }),
}

let seller: BatchSettlementEvmSeller | undefined
afterEach(async () => {
  await seller?.close()
})

async function setUp(durability: { mode?: 'batched' | 'strict'; intervalMs?: number; maxUnsaved?: number }) {
  const store = memorySellerChannelStore()
  await store.save([
    {
      id,
      network,
      config,
      balance: 1_000_000n,
      totalClaimed: 0n,
      charged: 0n,
      signature: undefined,
      withdrawRequestedAt: 0,
      refundNonce: 0n,
      lastRequestAt: 0,
    },
  ])
  seller = batchSettlementEvmServer({
    receiverAuthorizer: authorizer,
    facilitator: unreachable,
    store,
    durability,
    refreshIntervalMs: 3_600_000,
  })
  const app = new Hono()
  app.use(
    paywall({
      facilitator: unreachable,
      payTo,
      network,
      schemes: [seller],
      routes: { 'GET /paid': { price: { atomic: '1000' }, scheme: 'batch-settlement', asset: usdc } },
    }),
  )
  let failures = 0
  app.get('/paid', (c) => {
    if (failures > 0) {
      failures--
      return c.json({ error: 'upstream down' }, 502)
    }
    return c.json({ ok: true })
  })
  const offer = PaymentRequired.decode((await app.request('http://localhost/paid')).headers.get(HttpHeader.paymentRequired)!).accepts[0]!
  const pay = async (amount: bigint) => {
    const signature = await payer.signTypedData({
      domain: Channel.domainOf(84532),
      types: Channel.types,
      primaryType: 'Voucher',
      message: { channelId: id, maxClaimableAmount: amount },
    })
    const header = PaymentPayload.encode({
      x402Version: 2,
      accepted: offer,
      payload: { type: 'voucher', channelConfig: config, voucher: { channelId: id, maxClaimableAmount: amount.toString(), signature } },
    } as never)
    return app.request('http://localhost/paid', { headers: { [HttpHeader.paymentSignature]: header } })
  }
  const payment = (amount: bigint, signature: Hex) => ({
    payload: {
      x402Version: 2,
      accepted: offer,
      resource: { url: 'http://localhost/paid' },
      payload: { type: 'voucher', channelConfig: config, voucher: { channelId: id, maxClaimableAmount: amount.toString(), signature } },
    },
    requirements: offer,
  })
  const sign = (amount: bigint) =>
    payer.signTypedData({
      domain: Channel.domainOf(84532),
      types: Channel.types,
      primaryType: 'Voucher',
      message: { channelId: id, maxClaimableAmount: amount },
    })
  return {
    store,
    pay,
    failNext: (count: number) => {
      failures = count
    },
    payment,
    sign,
  }
}

describe('the seller writes channels behind', () => {
  it('strict: every paid answer leaves only after the store holds its voucher', async () => {
    const { store, pay } = await setUp({ mode: 'strict', intervalMs: 3_600_000 })
    for (let step = 1n; step <= 5n; step++) {
      const response = await pay(step * 1_000n)
      expect(response.status).toBe(200)
      expect(store.records.get(id)?.charged).toBe(step * 1_000n)
    }
  })

  it('batched: the store is never more than maxUnsaved vouchers behind an answer', async () => {
    const { store, pay } = await setUp({ intervalMs: 3_600_000, maxUnsaved: 2 })
    const lags: bigint[] = []
    for (let step = 1n; step <= 9n; step++) {
      expect((await pay(step * 1_000n)).status).toBe(200)
      lags.push((step * 1_000n - (store.records.get(id)?.charged ?? 0n)) / 1_000n)
    }
    // The third voucher past a commit waits for the next one: lags 1, 2, 0, 1, 2, 0, ...
    expect(lags).toEqual([1n, 2n, 0n, 1n, 2n, 0n, 1n, 2n, 0n])
    await seller!.flush()
    expect(store.records.get(id)?.charged).toBe(9_000n)
  })

  it('batched by default: a channel runs at most 32 vouchers ahead of the store', async () => {
    const { store, pay } = await setUp({ intervalMs: 3_600_000 })
    for (let step = 1n; step <= 32n; step++) expect((await pay(step * 1_000n)).status).toBe(200)
    expect(store.records.get(id)?.charged).toBe(0n)
    // The 33rd is answered only once a commit holds it.
    expect((await pay(33_000n)).status).toBe(200)
    expect(store.records.get(id)?.charged).toBe(33_000n)
  })
})

describe('one request at a time per channel', () => {
  it('refuses a voucher while another on its channel is being served, and takes the next once it is answered', async () => {
    const { pay, payment, sign } = await setUp({})
    const first = payment(1_000n, await sign(1_000n))
    expect(await seller!.verify(first as never)).toMatchObject({ isValid: true })
    const second = payment(2_000n, await sign(2_000n))
    expect(await seller!.verify(second as never)).toMatchObject({ isValid: false, invalidReason: Reason.batchChannelBusy })
    expect(await seller!.settle(first as never)).toMatchObject({ success: true })
    expect((await pay(2_000n)).status).toBe(200)
    expect(seller!.channel(id)?.charged).toBe(2_000n)
  })

  it('frees the channel when the handler fails, charging nothing for it', async () => {
    const { pay, failNext } = await setUp({})
    failNext(1)
    expect((await pay(1_000n)).status).toBe(502)
    expect(seller!.channel(id)?.charged).toBe(0n)
    // The same voucher, sent again, is served: the failed request neither charged it nor holds the channel.
    expect((await pay(1_000n)).status).toBe(200)
    expect(seller!.channel(id)?.charged).toBe(1_000n)
  })

  it('takes a request left unanswered for two minutes as abandoned', async () => {
    const { payment, sign } = await setUp({})
    vi.useFakeTimers({ toFake: ['Date'] })
    try {
      const first = payment(1_000n, await sign(1_000n))
      expect(await seller!.verify(first as never)).toMatchObject({ isValid: true })
      const second = payment(2_000n, await sign(2_000n))
      vi.setSystemTime(Date.now() + 119_000)
      expect(await seller!.verify(second as never)).toMatchObject({ invalidReason: Reason.batchChannelBusy })
      vi.setSystemTime(Date.now() + 2_000)
      expect(await seller!.verify(second as never)).toMatchObject({ isValid: true })
      expect(await seller!.settle(second as never)).toMatchObject({ success: true })
      // The abandoned one is charged no more: the channel has moved past it.
      expect(await seller!.settle(first as never)).toMatchObject({ success: false })
      expect(seller!.channel(id)?.charged).toBe(2_000n)
    } finally {
      vi.useRealTimers()
    }
  })
})
