import { type Devnet, startDevnet, usdcAsset } from '@x402kit/devnet'
import { type Address, createTestClient, createWalletClient, getAddress, type Hex, http, parseAbi, publicActions } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Payment } from '../../../core/Facilitator.ts'
import * as Network from '../../../core/Network.ts'
import type { PaymentRequirements } from '../../../core/PaymentRequirements.ts'
import type { PipelineEvent } from '../../../core/Scheme.ts'
import { createFacilitator, type Facilitator } from '../../../facilitator/createFacilitator.ts'
import { memoryStore } from '../../../facilitator/Store.ts'
import { exactEvmClient } from '../client.ts'
import type * as Eip3009 from '../Eip3009.ts'
import { exactEvmFacilitator } from '../facilitator.ts'
import { exactEvmServer } from '../server.ts'

const amount = 1_000n

describe('the settlement pipeline on a devnet', () => {
  let devnet: Devnet
  let payTo: Address
  let events: PipelineEvent[]
  const started: Facilitator[] = []

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 14, gasLimit: 100_000_000n })
    Network.registerAsset(devnet.network, devnet.chainId, usdcAsset(devnet))
    payTo = devnet.accounts[1]!.address
  }, 60_000)

  afterAll(async () => {
    await Promise.all(started.map((facilitator) => facilitator.close({ graceMs: 100 })))
    await devnet?.stop()
  })

  function facilitatorWith(
    options: { signers?: Hex[]; confirmations?: number; store?: ReturnType<typeof memoryStore>; owner?: string } = {},
  ) {
    events = []
    const facilitator = createFacilitator({
      schemes: [
        exactEvmFacilitator({
          networks: {
            [devnet.network]: {
              rpcUrl: devnet.rpcUrl,
              signers: options.signers ?? [devnet.accounts[0]!.privateKey],
              batcher: devnet.batcher,
              pollingIntervalMs: 50,
              confirmations: options.confirmations ?? 1,
            },
          },
          batch: { reportMs: 200 },
        }),
      ],
      store: options.store ?? memoryStore(),
      pipeline: { onEvent: (event) => events.push(event), log: () => {}, ...(options.owner && { owner: options.owner }) },
    })
    started.push(facilitator)
    return facilitator
  }

  const offer = (): PaymentRequirements => exactEvmServer().requirements({ price: { atomic: amount }, network: devnet.network, payTo })
  async function pay(key: Hex, requirements = offer()): Promise<Payment> {
    const payload = await exactEvmClient(privateKeyToAccount(key)).createPayload(requirements, { resource: 'http://localhost/paid' })
    return { payload: { x402Version: 2, accepted: requirements, payload }, requirements }
  }
  const balanceOf = (address: Address) => devnet.usdcBalance(address)

  it('settles concurrent payments in shared transactions, each exactly once', async () => {
    const facilitator = facilitatorWith()
    const payers = devnet.accounts.slice(2, 12)
    const before = await balanceOf(payTo)
    const payments = await Promise.all(payers.flatMap((payer) => [pay(payer.privateKey), pay(payer.privateKey), pay(payer.privateKey)]))
    const results = await Promise.all(payments.map((payment) => facilitator.settle(payment)))
    expect(results.every((result) => result.success)).toBe(true)
    const transactions = new Set(results.map((result) => result.transaction))
    expect(transactions.size).toBeLessThan(payments.length / 2)
    expect(await balanceOf(payTo)).toBe(before + amount * BigInt(payments.length))
    // The same payment again answers the stored result, and moves nothing.
    expect(await facilitator.settle(payments[0]!)).toEqual(results[0])
    expect(await balanceOf(payTo)).toBe(before + amount * BigInt(payments.length))
    const batches = events.filter((event) => event.type === 'batch')
    expect(batches.reduce((sum, event) => sum + event.size, 0)).toBe(payments.length)
    expect(batches.every((event) => event.type === 'batch' && event.gasUsed > 0n)).toBe(true)
  }, 60_000)

  it('answers enqueue once the payment is queued, and settles it after', async () => {
    const store = memoryStore()
    const facilitator = facilitatorWith({ store })
    const payment = await pay(devnet.accounts[2]!.privateKey)
    const queued = await facilitator.enqueue(payment)
    expect(queued).toMatchObject({ success: true, transaction: '', extensions: { settlement: { status: 'queued' } } })
    const settled = await facilitator.settle(payment)
    expect(settled.success).toBe(true)
    expect(settled.transaction).toMatch(/^0x[0-9a-f]{64}$/)
    const key =
      `${devnet.network}:${devnet.usdc}:${devnet.accounts[2]!.address}:${(payment.payload.payload as Eip3009.Payload).authorization.nonce}`.toLowerCase()
    expect((await store.get(key))?.status).toBe('settled')
    // A settled payment enqueued again answers its settlement, not a second queueing.
    expect(await facilitator.enqueue(payment)).toEqual(settled)
  }, 30_000)

  it('refuses to queue past the per-payer cap on unsettled value', async () => {
    const facilitator = facilitatorWith()
    const payer = devnet.accounts[3]!.privateKey
    // Mining paused, so nothing queued settles while the cap is tested.
    const test = createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) })
    await test.setAutomine(false)
    try {
      const first = await facilitator.enqueue(await pay(payer), { maxUnsettled: String(amount * 2n) })
      const second = await facilitator.enqueue(await pay(payer), { maxUnsettled: String(amount * 2n) })
      const third = await facilitator.enqueue(await pay(payer), { maxUnsettled: String(amount * 2n) })
      expect([first.success, second.success]).toEqual([true, true])
      expect(third).toMatchObject({ success: false, errorReason: 'payer_unsettled_cap' })
      // Another payer is not held back by this one.
      expect((await facilitator.enqueue(await pay(devnet.accounts[4]!.privateKey), { maxUnsettled: String(amount) })).success).toBe(true)
      expect((await facilitator.enqueue(await pay(payer), { maxUnsettled: 'lots' })).errorReason).toBe('invalid_payment_requirements')
    } finally {
      await test.setAutomine(true)
      await test.mine({ blocks: 1 })
    }
  }, 30_000)

  it('fails only the payment whose payer spent the money before its batch, with the reason', async () => {
    const facilitator = facilitatorWith()
    const test = createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) })
    const spenderKey = generatePrivateKey()
    const spender = privateKeyToAccount(spenderKey)
    await test.setBalance({ address: spender.address, value: 10n ** 18n })
    await devnet.mintUsdc(spender.address, amount)
    const honest = await pay(devnet.accounts[5]!.privateKey)
    const broke = await pay(spenderKey)
    await test.setAutomine(false)
    const answers = [facilitator.settle(honest), facilitator.settle(broke)]
    // Both are queued and verified; now the payer moves the money away before the batch is mined.
    const away = createWalletClient({ account: spender, transport: http(devnet.rpcUrl) }).extend(publicActions)
    await new Promise((resolve) => setTimeout(resolve, 300))
    await away.writeContract({
      chain: null,
      address: devnet.usdc,
      abi: parseAbi(['function transfer(address,uint256) returns (bool)']),
      functionName: 'transfer',
      args: [devnet.accounts[6]!.address, amount],
      gas: 100_000n,
      maxPriorityFeePerGas: 10n ** 11n,
      maxFeePerGas: 10n ** 12n,
    })
    await test.setAutomine(true)
    await test.mine({ blocks: 1 })
    const [good, bad] = await Promise.all(answers)
    expect(good?.success).toBe(true)
    expect(bad).toMatchObject({ success: false, errorReason: 'invalid_exact_evm_insufficient_balance', payer: getAddress(spender.address) })
  }, 30_000)
})
