import { type Devnet, type DevnetAccount, startDevnet, USDC_ABI } from '@x402kit/devnet'
import { type Address, decodeErrorResult, type Hex, parseEventLogs, parseSignature, toHex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type BatchAuthorization, failedEvent, settleBatchData, settlementBatcherAbi } from '../packages/x402kit/src/evm/exact/batch/abi.ts'

const TRANSFER_WITH_AUTHORIZATION = {
  TransferWithAuthorization: [
    { name: 'from', type: 'address' },
    { name: 'to', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'validAfter', type: 'uint256' },
    { name: 'validBefore', type: 'uint256' },
    { name: 'nonce', type: 'bytes32' },
  ],
} as const

type Terms = { to: Address; value: bigint; validAfter?: bigint; validBefore?: bigint; nonce?: Hex }

const randomNonce = (): Hex => toHex(crypto.getRandomValues(new Uint8Array(32)))
const accounts = new Map<Hex, ReturnType<typeof privateKeyToAccount>>()
const accountOf = (key: Hex) => accounts.get(key) ?? accounts.set(key, privateKeyToAccount(key)).get(key)!
const inAnHour = () => BigInt(Math.floor(Date.now() / 1000) + 3600)

describe('SettlementBatcher on a devnet with USDC', () => {
  let devnet: Devnet
  let relayer: DevnetAccount
  let payTo: Address

  beforeAll(async () => {
    // A 500-item batch uses about 20M gas.
    devnet = await startDevnet({ accounts: 8, gasLimit: 100_000_000n })
    relayer = devnet.accounts[0]!
    payTo = devnet.accounts[1]!.address // already holds 10,000 USDC
  })
  afterAll(() => devnet?.stop())

  /** An authorization from `payer`, signed by `signer` (the payer unless told otherwise). */
  async function authorize(payer: Hex, terms: Terms, signer: Hex = payer): Promise<BatchAuthorization> {
    const message = {
      from: accountOf(payer).address,
      to: terms.to,
      value: terms.value,
      validAfter: terms.validAfter ?? 0n,
      validBefore: terms.validBefore ?? inAnHour(),
      nonce: terms.nonce ?? randomNonce(),
    }
    const signature = await accountOf(signer).signTypedData({
      domain: { name: 'USD Coin', version: '2', chainId: devnet.chainId, verifyingContract: devnet.usdc },
      types: TRANSFER_WITH_AUTHORIZATION,
      primaryType: 'TransferWithAuthorization',
      message,
    })
    const { v, r, s } = parseSignature(signature)
    return { ...message, v: Number(v), r, s }
  }

  /** Sends `settle(usdc, items)` from the relayer; `gas` unset means estimated. */
  async function settle(items: readonly BatchAuthorization[], gas?: bigint) {
    const hash = await devnet
      .walletClient(relayer.privateKey)
      .sendTransaction({ to: devnet.batcher, data: settleBatchData(devnet.usdc, items), ...(gas ? { gas } : {}) })
    return devnet.publicClient.waitForTransactionReceipt({ hash })
  }

  /** Sends one plain `transferWithAuthorization` from the relayer. */
  async function transfer({ from, to, value, validAfter, validBefore, nonce, v, r, s }: BatchAuthorization) {
    const hash = await devnet.walletClient(relayer.privateKey).writeContract({
      address: devnet.usdc,
      abi: USDC_ABI,
      functionName: 'transferWithAuthorization',
      args: [from, to, value, validAfter, validBefore, nonce, v, r, s],
    })
    return devnet.publicClient.waitForTransactionReceipt({ hash })
  }

  const balances = (addresses: readonly Address[]) => Promise.all(addresses.map((address) => devnet.usdcBalance(address)))
  const used = (item: BatchAuthorization) =>
    devnet.publicClient.readContract({
      address: devnet.usdc,
      abi: USDC_ABI,
      functionName: 'authorizationState',
      args: [item.from, item.nonce],
    })
  const reasonOf = (data: Hex) => decodeErrorResult({ abi: [], data }).args?.[0]

  /** `count` fresh payers holding `amount` each, funded from `funder` through the batcher. */
  async function freshPayers(count: number, amount: bigint, funder: DevnetAccount): Promise<Hex[]> {
    const keys = Array.from({ length: count }, () => generatePrivateKey())
    for (let start = 0; start < count; start += 250) {
      const chunk = keys.slice(start, start + 250)
      const items = await Promise.all(chunk.map((key) => authorize(funder.privateKey, { to: accountOf(key).address, value: amount })))
      const receipt = await settle(items)
      expect(receipt.status).toBe('success')
      expect(parseEventLogs({ abi: [failedEvent], logs: receipt.logs })).toEqual([])
    }
    return keys
  }

  it('settles a batch of 50 good authorizations, every balance exact', async () => {
    const payers = devnet.accounts.slice(2, 7)
    const items = await Promise.all(
      Array.from({ length: 50 }, (_, index) =>
        authorize(payers[index % payers.length]!.privateKey, { to: payTo, value: 1_000n + BigInt(index) }),
      ),
    )
    const addresses = [payTo, relayer.address, ...payers.map((payer) => payer.address)]
    const before = await balances(addresses)

    const { result } = await devnet.publicClient.simulateContract({
      account: relayer.address,
      address: devnet.batcher,
      abi: settlementBatcherAbi,
      functionName: 'settle',
      args: [devnet.usdc, items],
    })
    expect(result).toBe(50n)
    const receipt = await settle(items)

    expect(receipt.status).toBe('success')
    expect(parseEventLogs({ abi: [failedEvent], logs: receipt.logs })).toEqual([])
    const transfers = parseEventLogs({ abi: USDC_ABI, eventName: 'Transfer', logs: receipt.logs })
    expect(transfers.map(({ args }) => args)).toEqual(items.map(({ from, to, value }) => ({ from, to, value })))
    const paid = (payer: Address) => items.reduce((sum, item) => (item.from === payer ? sum + item.value : sum), 0n)
    const total = items.reduce((sum, item) => sum + item.value, 0n)
    expect(await balances(addresses)).toEqual([
      before[0]! + total,
      before[1]!,
      ...payers.map((payer, index) => before[index + 2]! - paid(payer.address)),
    ])
    expect(total).toBe(51_225n)
    expect(await devnet.usdcBalance(devnet.batcher)).toBe(0n)
  })

  it('settles the good items of a mixed batch and emits Failed with the index and revert reason of each bad one', async () => {
    const [alice, bob, carol] = devnet.accounts.slice(2, 5).map((account) => account.privateKey) as [Hex, Hex, Hex]
    const alreadyUsed = await authorize(carol, { to: payTo, value: 7n })
    expect((await transfer(alreadyUsed)).status).toBe('success')
    const good = await authorize(alice, { to: payTo, value: 1_000n })
    const carolBalance = await devnet.usdcBalance(privateKeyToAccount(carol).address)
    const items = [
      good,
      await authorize(bob, { to: payTo, value: 2_000n }, carol), // signed by someone else
      await authorize(bob, { to: payTo, value: 3_000n }),
      alreadyUsed,
      await authorize(alice, { to: payTo, value: 4_000n, validBefore: 1n }), // expired
      await authorize(carol, { to: payTo, value: carolBalance + 1n }), // more than carol holds
      await authorize(carol, { to: payTo, value: 5_000n }),
      good, // the same authorization again
      await authorize(bob, { to: payTo, value: 6_000n }),
    ]
    const [aliceAddress, bobAddress, carolAddress] = [alice, bob, carol].map((key) => privateKeyToAccount(key).address) as [
      Address,
      Address,
      Address,
    ]
    const addresses = [payTo, aliceAddress, bobAddress, carolAddress]
    const before = await balances(addresses)

    const { result } = await devnet.publicClient.simulateContract({
      account: relayer.address,
      address: devnet.batcher,
      abi: settlementBatcherAbi,
      functionName: 'settle',
      args: [devnet.usdc, items],
    })
    expect(result).toBe(4n)
    const receipt = await settle(items)

    expect(receipt.status).toBe('success')
    const failures = parseEventLogs({ abi: settlementBatcherAbi, eventName: 'Failed', logs: receipt.logs })
    expect(failures.every((log) => log.address.toLowerCase() === devnet.batcher.toLowerCase())).toBe(true)
    expect(failures.map(({ args }) => [args.index, reasonOf(args.reason)])).toEqual([
      [1n, 'FiatTokenV2: invalid signature'],
      [3n, 'FiatTokenV2: authorization is used or canceled'],
      [4n, 'FiatTokenV2: authorization is expired'],
      [5n, 'ERC20: transfer amount exceeds balance'],
      [7n, 'FiatTokenV2: authorization is used or canceled'],
    ])
    const transfers = parseEventLogs({ abi: USDC_ABI, eventName: 'Transfer', logs: receipt.logs })
    expect(transfers.map(({ args }) => args.value)).toEqual([1_000n, 3_000n, 5_000n, 6_000n])
    expect(await balances(addresses)).toEqual([before[0]! + 15_000n, before[1]! - 1_000n, before[2]! - 9_000n, before[3]! - 5_000n])
    expect(await Promise.all(items.map(used))).toEqual([true, false, true, true, false, false, true, true, true])
  })

  it('reverts the whole call, nothing moved, when the gas limit cannot run every item with its full bound', async () => {
    const payer = devnet.accounts[5]!.privateKey
    const items = await Promise.all(Array.from({ length: 6 }, () => authorize(payer, { to: payTo, value: 1_000n })))
    const addresses = [payTo, privateKeyToAccount(payer).address]
    const before = await balances(addresses)
    const needed = await devnet.publicClient.estimateGas({
      account: relayer.address,
      to: devnet.batcher,
      data: settleBatchData(devnet.usdc, items),
    })
    // Enough for the first items to run, not for the last one: the call reverts and undoes them.
    const gas = needed - 30_000n

    await expect(
      devnet.publicClient.simulateContract({
        account: relayer.address,
        address: devnet.batcher,
        abi: settlementBatcherAbi,
        functionName: 'settle',
        args: [devnet.usdc, items],
        gas,
      }),
    ).rejects.toThrow(/InsufficientGas\(uint256 index\)\s+\(\d\)/)
    const receipt = await settle(items, gas)

    expect(receipt.status).toBe('reverted')
    expect(receipt.gasUsed).toBeGreaterThan(needed - 250_000n) // items ran before the revert
    expect(receipt.logs).toEqual([])
    expect(await balances(addresses)).toEqual(before)
    expect(await Promise.all(items.map(used))).toEqual(items.map(() => false))
    // The same items, with the gas they need, all settle.
    expect((await settle(items)).status).toBe('success')
    expect(await balances(addresses)).toEqual([before[0]! + 6_000n, before[1]! - 6_000n])
  })

  it('reverts when the token has no code', async () => {
    const item = await authorize(devnet.accounts[6]!.privateKey, { to: payTo, value: 1n })
    await expect(
      devnet.publicClient.simulateContract({
        account: relayer.address,
        address: devnet.batcher,
        abi: settlementBatcherAbi,
        functionName: 'settle',
        args: [payTo, [item]],
      }),
    ).rejects.toThrow(/TokenHasNoCode/)
  })

  it('GAS: a batched payment costs at most 60% of a transferWithAuthorization transaction of its own', { timeout: 180_000 }, async () => {
    const sizes = [1, 10, 100, 500]
    const singles = 50
    const amount = 1_000n
    const payers = await freshPayers(
      sizes.reduce((sum, size) => sum + size, singles),
      amount,
      devnet.accounts[7]!,
    )
    const sign = (keys: Hex[]) => Promise.all(keys.map((key) => authorize(key, { to: payTo, value: amount })))

    // Each payment: a payer with a balance, a fresh nonce, the same payTo (which already has a balance).
    let single = 0n
    for (const item of await sign(payers.slice(0, singles))) {
      const receipt = await transfer(item)
      expect(receipt.status).toBe('success')
      single += receipt.gasUsed
    }
    const perSingle = single / BigInt(singles)

    const perItem = new Map<number, bigint>()
    let offset = singles
    for (const size of sizes) {
      const items = await sign(payers.slice(offset, offset + size))
      offset += size
      const before = await devnet.usdcBalance(payTo)
      const receipt = await settle(items)
      expect(receipt.status).toBe('success')
      expect(await devnet.usdcBalance(payTo)).toBe(before + amount * BigInt(size))
      perItem.set(size, receipt.gasUsed / BigInt(size))
    }

    const percent = (gas: bigint) => Number((gas * 1000n) / perSingle) / 10
    console.log(
      [
        `one transferWithAuthorization per transaction: ${perSingle} gas per payment (mean of ${singles})`,
        ...sizes.map((size) => `batch of ${size}: ${perItem.get(size)} gas per payment (${percent(perItem.get(size)!)}% of single)`),
      ].join('\n'),
    )
    expect(percent(perItem.get(100)!)).toBeLessThanOrEqual(60)
    expect(perItem.get(500)!).toBeLessThanOrEqual(perItem.get(100)!)
    expect(perItem.get(10)!).toBeLessThan(perSingle)
  })
})
