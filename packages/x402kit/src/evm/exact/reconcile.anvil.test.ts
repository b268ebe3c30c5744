import { type Devnet, startDevnet, usdcAsset } from '@x402kit/devnet'
import { createTestClient, getAddress, type Hash, type Hex, http, parseSignature } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Payment } from '../../core/Facilitator.ts'
import * as Network from '../../core/Network.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import { createFacilitator, type Facilitator } from '../../facilitator/createFacilitator.ts'
import { payloadHash } from '../../facilitator/internal/context.ts'
import { memoryStore } from '../../facilitator/Store.ts'
import { eip3009Abi } from './abi.ts'
import { domainOf, exactEvmClient } from './client.ts'
import * as Eip3009 from './Eip3009.ts'
import { exactEvmFacilitator, settlementKey } from './facilitator.ts'
import { exactEvmServer } from './server.ts'

/**
 * A settlement cut short by a crash (its record left `settling`) is reconciled with the chain: the
 * authorization's state and the transaction that used it decide, never a second send while the first
 * may still be mined.
 */
describe('reconciling settlements left settling', () => {
  let devnet: Devnet
  let store: ReturnType<typeof memoryStore>
  let facilitator: Facilitator
  let payTo: `0x${string}`

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 8 })
    Network.registerAsset(devnet.network, devnet.chainId, usdcAsset(devnet))
    payTo = devnet.accounts[1]!.address
    store = memoryStore()
    facilitator = createFacilitator({
      schemes: [
        exactEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [devnet.accounts[0]!.privateKey] } } }),
      ],
      store,
      onError: () => {},
    })
  }, 60_000)

  afterAll(async () => {
    await facilitator?.close({ graceMs: 0 })
    await devnet?.stop()
  })

  const offer = (): PaymentRequirements => exactEvmServer().requirements({ price: { atomic: 1_000n }, network: devnet.network, payTo })
  async function pay(key: Hex): Promise<Payment> {
    const requirements = offer()
    const payload = await exactEvmClient(privateKeyToAccount(key)).createPayload(requirements, { resource: 'http://localhost/paid' })
    return { payload: { x402Version: 2, accepted: requirements, payload }, requirements }
  }
  /** What a facilitator that crashed after claiming the payment, perhaps after sending, left behind. */
  async function leftSettling(payment: Payment, transaction?: string) {
    const key = settlementKey(payment)!
    const { network, amount, asset, payTo: to, scheme } = payment.requirements
    const authorization = (payment.payload.payload as Eip3009.Payload).authorization
    await store.reserve(key, {
      key,
      network,
      scheme,
      amount,
      asset,
      payTo: to,
      payer: authorization.from,
      payloadHash: payloadHash(payment),
      status: 'settling',
      transaction,
      createdAt: Date.now() - 1_000,
      updatedAt: Date.now() - 1_000,
    })
    return key
  }
  /** Sends the payment's own transferWithAuthorization from `sender`, as the crashed facilitator would have. */
  async function sendDirectly(payment: Payment, sender = devnet.accounts[6]!): Promise<Hash> {
    const { authorization, signature } = payment.payload.payload as Eip3009.Payload
    const { v, r, s } = parseSignature(signature as Hex)
    return devnet.walletClient(sender.privateKey).writeContract({
      address: devnet.usdc,
      abi: eip3009Abi,
      functionName: 'transferWithAuthorization',
      args: [
        getAddress(authorization.from),
        getAddress(authorization.to),
        BigInt(authorization.value),
        BigInt(authorization.validAfter),
        BigInt(authorization.validBefore),
        authorization.nonce as Hex,
        Number(v),
        r,
        s,
      ],
    })
  }

  it('records a settlement whose transaction was mined, and answers it without sending again', async () => {
    const payment = await pay(devnet.accounts[2]!.privateKey)
    const hash = await sendDirectly(payment)
    await devnet.publicClient.waitForTransactionReceipt({ hash })
    const key = await leftSettling(payment, hash)
    const before = await devnet.usdcBalance(payTo)
    expect(await facilitator.reconcile({ olderThanMs: 0 })).toBe(1)
    expect(await store.get(key)).toMatchObject({ status: 'settled', transaction: hash })
    expect(await facilitator.settle(payment)).toMatchObject({ success: true, transaction: hash })
    expect(await devnet.usdcBalance(payTo)).toBe(before)
  })

  it('reopens a settlement that never reached the chain, which then settles once', async () => {
    const payment = await pay(devnet.accounts[3]!.privateKey)
    const key = await leftSettling(payment)
    const before = await devnet.usdcBalance(payTo)
    expect(await facilitator.reconcile({ olderThanMs: 0 })).toBe(1)
    expect(await store.get(key)).toMatchObject({ status: 'verified' })
    expect(await facilitator.settle(payment)).toMatchObject({ success: true })
    expect(await devnet.usdcBalance(payTo)).toBe(before + 1_000n)
  })

  it('waits while its transaction is still pending, then records it once mined', async () => {
    const payment = await pay(devnet.accounts[4]!.privateKey)
    const test = createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) })
    await test.setAutomine(false)
    let key: string
    try {
      const hash = await sendDirectly(payment)
      key = await leftSettling(payment, hash)
      expect(await facilitator.reconcile({ olderThanMs: 0 })).toBe(0)
      expect(await store.get(key)).toMatchObject({ status: 'settling' })
    } finally {
      await test.setAutomine(true)
      await test.mine({ blocks: 1 })
    }
    expect(await facilitator.reconcile({ olderThanMs: 0 })).toBe(1)
    expect(await store.get(key!)).toMatchObject({ status: 'settled' })
  })

  it('fails a settlement whose authorization the payer used for another transfer', async () => {
    const payerKey = devnet.accounts[5]!.privateKey
    const payment = await pay(payerKey)
    const key = await leftSettling(payment)
    // The same nonce, signed to someone else, and mined first.
    const authorization = {
      ...(payment.payload.payload as Eip3009.Payload).authorization,
      to: privateKeyToAccount(generatePrivateKey()).address,
    }
    const signature = await privateKeyToAccount(payerKey).signTypedData(Eip3009.typedData(domainOf(offer()), authorization))
    const other: Payment = { ...payment, payload: { ...payment.payload, payload: { authorization, signature } } }
    const hash = await sendDirectly(other)
    await devnet.publicClient.waitForTransactionReceipt({ hash })
    expect(await facilitator.reconcile({ olderThanMs: 0 })).toBe(1)
    expect(await store.get(key)).toMatchObject({ status: 'failed', errorReason: 'authorization_used_elsewhere', transaction: hash })
  })
})
