import { Hono } from 'hono'
import type { Hex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterEach, describe, expect, it } from 'vitest'
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
  app.get('/paid', (c) => c.json({ ok: true }))
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
  return { store, pay }
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
})
