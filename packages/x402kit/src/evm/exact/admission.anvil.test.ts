import { type Devnet, startDevnet, usdcAsset } from '@x402kit/devnet'
import { type Address, createTestClient, createWalletClient, type Hex, http, parseAbi, publicActions } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Payment } from '../../core/Facilitator.ts'
import * as Network from '../../core/Network.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import { createFacilitator, type Facilitator } from '../../facilitator/createFacilitator.ts'
import { memoryStore } from '../../facilitator/Store.ts'
import { exactEvmClient } from './client.ts'
import { exactEvmFacilitator } from './facilitator.ts'
import { exactEvmServer } from './server.ts'

const amount = 1_000n
// Wide enough that a head poll delayed by a busy machine still counts as fresh: a stale head means a full chain read.
const pollingIntervalMs = 200

describe('admission from a cached balance, on a devnet', () => {
  let devnet: Devnet
  let payTo: Address
  const started: Facilitator[] = []
  const test = () => createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) })

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 4, gasLimit: 100_000_000n })
    Network.registerAsset(devnet.network, devnet.chainId, usdcAsset(devnet))
    payTo = devnet.accounts[1]!.address
  }, 60_000)

  afterAll(async () => {
    await Promise.all(started.map((facilitator) => facilitator.close({ graceMs: 100 })))
    await devnet?.stop()
  })

  function facilitatorWith(maxAgeBlocks = 2) {
    const facilitator = createFacilitator({
      schemes: [
        exactEvmFacilitator({
          networks: {
            [devnet.network]: {
              rpcUrl: devnet.rpcUrl,
              signers: [devnet.accounts[0]!.privateKey],
              batcher: devnet.batcher,
              pollingIntervalMs,
            },
          },
          admission: { maxAgeBlocks },
        }),
      ],
      store: memoryStore(),
      pipeline: { log: () => {} },
    })
    started.push(facilitator)
    return facilitator
  }

  const offer = (): PaymentRequirements => exactEvmServer().requirements({ price: { atomic: amount }, network: devnet.network, payTo })
  async function pay(key: Hex): Promise<Payment> {
    const requirements = offer()
    const payload = await exactEvmClient(privateKeyToAccount(key)).createPayload(requirements, { resource: 'http://localhost/paid' })
    return { payload: { x402Version: 2, accepted: requirements, payload }, requirements }
  }

  /** A payer holding `funds` USDC and gas of its own, to move the USDC away behind the facilitator's back. */
  async function payerWith(funds: bigint) {
    const key = generatePrivateKey()
    const account = privateKeyToAccount(key)
    await test().setBalance({ address: account.address, value: 10n ** 18n })
    await devnet.mintUsdc(account.address, funds)
    return {
      key,
      address: account.address,
      async spendAll() {
        const wallet = createWalletClient({ account, transport: http(devnet.rpcUrl) }).extend(publicActions)
        const hash = await wallet.writeContract({
          chain: null,
          address: devnet.usdc,
          abi: parseAbi(['function transfer(address,uint256) returns (bool)']),
          functionName: 'transfer',
          args: [devnet.accounts[2]!.address, await devnet.usdcBalance(account.address)],
        })
        await wallet.waitForTransactionReceipt({ hash, pollingInterval: pollingIntervalMs })
      },
    }
  }

  /** Verifies payments until one is admitted on a read at a known head, so that the payer's balance is cached. */
  async function warm(facilitator: Facilitator, key: Hex) {
    await facilitator.verify(await pay(key))
    await new Promise((resolve) => setTimeout(resolve, pollingIntervalMs * 3))
    expect((await facilitator.verify(await pay(key))).isValid).toBe(true)
  }

  it('a payer admitted from cache who has in fact spent the money ends failed with the reason; nothing moves, and the cap still holds', async () => {
    const facilitator = facilitatorWith()
    const payer = await payerWith(amount * 10n)
    await warm(facilitator, payer.key)
    await payer.spendAll()
    expect(await devnet.usdcBalance(payer.address)).toBe(0n)
    const before = await devnet.usdcBalance(payTo)

    // Mining paused: the balance read stays within its blocks, and nothing queued settles while the cap is tested.
    await test().setAutomine(false)
    const payments = [await pay(payer.key), await pay(payer.key), await pay(payer.key)]
    let queued: Awaited<ReturnType<Facilitator['enqueue']>>[]
    try {
      // The chain says the payer is broke, but the balance seen a block ago covers each: all three are admitted.
      for (const payment of payments) expect(await facilitator.verify(payment)).toMatchObject({ isValid: true })
      queued = []
      for (const payment of payments) queued.push(await facilitator.enqueue(payment, { maxUnsettled: String(amount * 2n) }))
    } finally {
      await test().setAutomine(true)
      await test().mine({ blocks: 1 })
    }
    expect(queued.map((answer) => answer.success)).toEqual([true, true, false])
    expect(queued[2]).toMatchObject({ errorReason: 'payer_unsettled_cap' })

    const outcomes = await Promise.all(payments.slice(0, 2).map((payment) => facilitator.settle(payment)))
    for (const outcome of outcomes)
      expect(outcome).toMatchObject({ success: false, errorReason: 'invalid_exact_evm_insufficient_balance', payer: payer.address })
    expect(await devnet.usdcBalance(payTo)).toBe(before)
    // Asked again, each answers its recorded failure, and still nothing moves.
    expect(await facilitator.settle(payments[0]!)).toEqual(outcomes[0])
    expect(await devnet.usdcBalance(payTo)).toBe(before)
  }, 60_000)

  it('a cached balance maxAgeBlocks old is not used: the chain is read, and the broke payer refused', async () => {
    const facilitator = facilitatorWith(3)
    const payer = await payerWith(amount * 10n)
    await warm(facilitator, payer.key)
    // Spending mines one block (automine): two blocks old at most, still used.
    await payer.spendAll()
    await new Promise((resolve) => setTimeout(resolve, pollingIntervalMs * 3))
    expect((await facilitator.verify(await pay(payer.key))).isValid).toBe(true)
    await test().mine({ blocks: 2 })
    await new Promise((resolve) => setTimeout(resolve, pollingIntervalMs * 3))
    expect(await facilitator.verify(await pay(payer.key))).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_exact_evm_insufficient_balance',
    })
  }, 60_000)

  it('with admission off, every verification reads the chain', async () => {
    const facilitator = createFacilitator({
      schemes: [
        exactEvmFacilitator({
          networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [devnet.accounts[0]!.privateKey], pollingIntervalMs } },
          admission: false,
        }),
      ],
    })
    started.push(facilitator)
    const payer = await payerWith(amount * 10n)
    await warm(facilitator, payer.key)
    await payer.spendAll()
    expect(await facilitator.verify(await pay(payer.key))).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_exact_evm_insufficient_balance',
    })
  }, 60_000)
})
