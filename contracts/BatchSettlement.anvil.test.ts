import {
  computeChannelId,
  createBatchSettlementEIP3009DepositPayload,
  signVoucher as referenceSignVoucher,
} from '@x402/evm/batch-settlement/client'
import { BatchSettlementEvmScheme } from '@x402/evm/batch-settlement/facilitator'
import { type Devnet, type DevnetAccount, startDevnet, USDC_ABI } from '@x402kit/devnet'
import {
  type Abi,
  type Address,
  createTestClient,
  encodeAbiParameters,
  encodeFunctionData,
  type Hex,
  hashTypedData,
  http,
  keccak256,
  parseEventLogs,
  type TypedDataDomain,
  toFunctionSelector,
  toHex,
  zeroAddress,
} from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { referenceSigner } from '../test/batch-settlement.seller.support.ts'
import {
  batchSettlementAbi,
  batchSettlementBytecode,
  erc3009DepositCollectorAbi,
  erc3009DepositCollectorBytecode,
  reentrantTokenAbi,
  reentrantTokenBytecode,
} from './artifacts/index.ts'

const CANONICAL_BATCH_SETTLEMENT = '0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003'
const CANONICAL_ERC3009_COLLECTOR = '0x4020806089470a89826cB9fB1f4059150b550004'
const DELAY = 900 // MIN_WITHDRAW_DELAY

type ChannelConfig = {
  payer: Address
  payerAuthorizer: Address
  receiver: Address
  receiverAuthorizer: Address
  token: Address
  withdrawDelay: number
  salt: Hex
}
type VoucherClaim = { voucher: { channel: ChannelConfig; maxClaimableAmount: bigint }; signature: Hex; totalClaimed: bigint }

const types = {
  ChannelConfig: [
    { name: 'payer', type: 'address' },
    { name: 'payerAuthorizer', type: 'address' },
    { name: 'receiver', type: 'address' },
    { name: 'receiverAuthorizer', type: 'address' },
    { name: 'token', type: 'address' },
    { name: 'withdrawDelay', type: 'uint40' },
    { name: 'salt', type: 'bytes32' },
  ],
  Voucher: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'maxClaimableAmount', type: 'uint128' },
  ],
  Refund: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'nonce', type: 'uint256' },
    { name: 'amount', type: 'uint128' },
  ],
  ClaimBatch: [{ name: 'claims', type: 'ClaimEntry[]' }],
  ClaimEntry: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'maxClaimableAmount', type: 'uint128' },
    { name: 'totalClaimed', type: 'uint128' },
  ],
  ReceiveWithAuthorization: [
    { name: 'from', type: 'address' },
    { name: 'to', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'validAfter', type: 'uint256' },
    { name: 'validBefore', type: 'uint256' },
    { name: 'nonce', type: 'bytes32' },
  ],
} as const

const randomHex = (): Hex => toHex(crypto.getRandomValues(new Uint8Array(32)))
const freshAddress = () => privateKeyToAccount(generatePrivateKey()).address
const reentrancyError = toFunctionSelector('ReentrancyGuardReentrantCall()')

let devnet: Devnet
let payer: DevnetAccount
let receiver: DevnetAccount
let authorizer: DevnetAccount
let relayer: DevnetAccount
let stranger: DevnetAccount
let escrow: Address
let collector: Address

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 6 })
  let deployer: DevnetAccount
  ;[deployer, payer, receiver, authorizer, relayer, stranger] = devnet.accounts as [
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
    DevnetAccount,
  ]
  escrow = await deploy(deployer.privateKey, batchSettlementAbi, batchSettlementBytecode)
  collector = await deploy(deployer.privateKey, erc3009DepositCollectorAbi, erc3009DepositCollectorBytecode, [escrow])
})
afterAll(() => devnet?.stop())

// Chain helpers

async function deploy(key: Hex, abi: Abi, bytecode: Hex, args: readonly unknown[] = []): Promise<Address> {
  const hash = await devnet.walletClient(key).deployContract({ abi, bytecode, args } as never)
  const { contractAddress, status } = await devnet.publicClient.waitForTransactionReceipt({ hash })
  if (status !== 'success' || !contractAddress) throw new Error(`deployment reverted (${hash})`)
  return contractAddress
}

/** Sends a call to the escrow (or `address` with `abi`), expects success and returns the escrow's events. */
async function send(key: Hex, functionName: string, args: readonly unknown[], address = escrow, abi: Abi = batchSettlementAbi) {
  const data = encodeFunctionData({ abi, functionName, args } as never)
  const hash = await devnet.walletClient(key).sendTransaction({ to: address, data })
  const receipt = await devnet.publicClient.waitForTransactionReceipt({ hash })
  expect(receipt.status, `${functionName} reverted`).toBe('success')
  return parseEventLogs({ abi: batchSettlementAbi, logs: receipt.logs }).map(({ eventName, args }) => ({ eventName, args }))
}

/** Expects the call to revert with `error` (a custom error name or a revert string). */
async function reverts(
  from: Address,
  functionName: string,
  args: readonly unknown[],
  error: string,
  address = escrow,
  abi: Abi = batchSettlementAbi,
) {
  await expect(devnet.publicClient.simulateContract({ account: from, address, abi, functionName, args } as never)).rejects.toThrow(error)
}

const read = {
  channel: async (id: Hex, at = escrow) => {
    const [balance, totalClaimed] = await devnet.publicClient.readContract({
      address: at,
      abi: batchSettlementAbi,
      functionName: 'channels',
      args: [id],
    })
    return { balance, totalClaimed }
  },
  receiver: async (address: Address, token: Address, at = escrow) => {
    const [totalClaimed, totalSettled] = await devnet.publicClient.readContract({
      address: at,
      abi: batchSettlementAbi,
      functionName: 'receivers',
      args: [address, token],
    })
    return { totalClaimed, totalSettled }
  },
  pending: async (id: Hex) => {
    const [amount, initiatedAt] = await devnet.publicClient.readContract({
      address: escrow,
      abi: batchSettlementAbi,
      functionName: 'pendingWithdrawals',
      args: [id],
    })
    return { amount, initiatedAt }
  },
  refundNonce: (id: Hex) =>
    devnet.publicClient.readContract({ address: escrow, abi: batchSettlementAbi, functionName: 'refundNonce', args: [id] }),
}

const testClient = () => createTestClient({ chain: devnet.chain, mode: 'anvil', transport: http(devnet.rpcUrl) })
async function elapse(seconds: number) {
  await testClient().increaseTime({ seconds })
  await devnet.mine(1)
}
const latestTimestamp = async () => (await devnet.publicClient.getBlock()).timestamp

// Protocol helpers

const domainOf = (verifyingContract: Address = escrow, chainId: number = devnet.chainId): TypedDataDomain => ({
  name: 'x402 Batch Settlement',
  version: '1',
  chainId,
  verifyingContract,
})

function channel(overrides: Partial<ChannelConfig> = {}): ChannelConfig {
  return {
    payer: payer.address,
    payerAuthorizer: zeroAddress,
    receiver: receiver.address,
    receiverAuthorizer: authorizer.address,
    token: devnet.usdc,
    withdrawDelay: DELAY,
    salt: randomHex(),
    ...overrides,
  }
}

const channelIdOf = (config: ChannelConfig, domain = domainOf()) =>
  hashTypedData({ domain, types, primaryType: 'ChannelConfig', message: config })

const signVoucher = (key: Hex, channelId: Hex, maxClaimableAmount: bigint, domain = domainOf()) =>
  privateKeyToAccount(key).signTypedData({ domain, types, primaryType: 'Voucher', message: { channelId, maxClaimableAmount } })

async function claimRow(
  key: Hex,
  config: ChannelConfig,
  maxClaimableAmount: bigint,
  totalClaimed = maxClaimableAmount,
): Promise<VoucherClaim> {
  const signature = await signVoucher(key, channelIdOf(config), maxClaimableAmount)
  return { voucher: { channel: config, maxClaimableAmount }, signature, totalClaimed }
}

const signClaimBatch = (key: Hex, rows: VoucherClaim[], domain = domainOf()) =>
  privateKeyToAccount(key).signTypedData({
    domain,
    types,
    primaryType: 'ClaimBatch',
    message: {
      claims: rows.map((row) => ({
        channelId: channelIdOf(row.voucher.channel, domain),
        maxClaimableAmount: row.voucher.maxClaimableAmount,
        totalClaimed: row.totalClaimed,
      })),
    },
  })

const signRefund = (key: Hex, channelId: Hex, nonce: bigint, amount: bigint) =>
  privateKeyToAccount(key).signTypedData({ domain: domainOf(), types, primaryType: 'Refund', message: { channelId, nonce, amount } })

/** `collectorData` of an EIP-3009 deposit the payer signed for `channelId`, to `to` (the collector). */
async function receiveAuthorization(key: Hex, channelId: Hex, amount: bigint, to: Address = collector) {
  const salt = BigInt(randomHex())
  const validBefore = (await latestTimestamp()) + 3600n
  const nonce = keccak256(encodeAbiParameters([{ type: 'bytes32' }, { type: 'uint256' }], [channelId, salt]))
  const signature = await privateKeyToAccount(key).signTypedData({
    domain: { name: 'USD Coin', version: '2', chainId: devnet.chainId, verifyingContract: devnet.usdc },
    types,
    primaryType: 'ReceiveWithAuthorization',
    message: { from: privateKeyToAccount(key).address, to, value: amount, validAfter: 0n, validBefore, nonce },
  })
  const collectorData = encodeAbiParameters(
    [{ type: 'uint256' }, { type: 'uint256' }, { type: 'uint256' }, { type: 'bytes' }],
    [0n, validBefore, salt, signature],
  )
  return { collectorData, nonce }
}

/** The payer signs, the relayer submits: the payer spends no gas. */
async function deposit(config: ChannelConfig, amount: bigint, key = payer.privateKey) {
  const { collectorData } = await receiveAuthorization(key, channelIdOf(config), amount)
  return send(relayer.privateKey, 'deposit', [config, amount, collector, collectorData])
}

describe('deposit', () => {
  it('takes an EIP-3009 receiveWithAuthorization signed by the payer and relayed by anyone; the payer pays no gas', async () => {
    const config = channel()
    const id = channelIdOf(config)
    expect(
      await devnet.publicClient.readContract({ address: escrow, abi: batchSettlementAbi, functionName: 'getChannelId', args: [config] }),
    ).toBe(id)
    const [payerUsdc, payerEth, escrowUsdc] = await Promise.all([
      devnet.usdcBalance(payer.address),
      devnet.publicClient.getBalance({ address: payer.address }),
      devnet.usdcBalance(escrow),
    ])
    const { collectorData, nonce } = await receiveAuthorization(payer.privateKey, id, 1_000_000n)

    const events = await send(relayer.privateKey, 'deposit', [config, 1_000_000n, collector, collectorData])

    expect(events).toEqual([
      { eventName: 'ChannelCreated', args: { channelId: id, config } },
      { eventName: 'Deposited', args: { channelId: id, sender: relayer.address, amount: 1_000_000n, newBalance: 1_000_000n } },
    ])
    expect(await read.channel(id)).toEqual({ balance: 1_000_000n, totalClaimed: 0n })
    expect(await devnet.usdcBalance(payer.address)).toBe(payerUsdc - 1_000_000n)
    expect(await devnet.publicClient.getBalance({ address: payer.address })).toBe(payerEth)
    expect(await devnet.usdcBalance(escrow)).toBe(escrowUsdc + 1_000_000n)
    expect(await devnet.usdcBalance(collector)).toBe(0n)
    const used = await devnet.publicClient.readContract({
      address: devnet.usdc,
      abi: USDC_ABI,
      functionName: 'authorizationState',
      args: [payer.address, nonce],
    })
    expect(used).toBe(true)

    // A top-up adds to the balance without announcing a new channel; the same authorization is spent.
    expect(await deposit(config, 500_000n)).toEqual([
      { eventName: 'Deposited', args: { channelId: id, sender: relayer.address, amount: 500_000n, newBalance: 1_500_000n } },
    ])
    await reverts(relayer.address, 'deposit', [config, 1_000_000n, collector, collectorData], 'authorization is used or canceled')
  })

  it('binds the authorization to one channel: it cannot fund another, be redirected, or be collected directly', async () => {
    const config = channel()
    const { collectorData } = await receiveAuthorization(payer.privateKey, channelIdOf(config), 1_000n)
    // Same payer, another receiver: the channel id, hence the EIP-3009 nonce, differs.
    await reverts(
      relayer.address,
      'deposit',
      [{ ...config, receiver: stranger.address }, 1_000n, collector, collectorData],
      'invalid signature',
    )
    await reverts(relayer.address, 'deposit', [config, 1_001n, collector, collectorData], 'invalid signature')
    await reverts(
      stranger.address,
      'collect',
      [payer.address, devnet.usdc, 1_000n, channelIdOf(config), collectorData],
      'OnlyBatchSettlement',
      collector,
      erc3009DepositCollectorAbi,
    )
  })

  it('refuses a config out of bounds, a zero amount, and a collector that delivers less than promised', async () => {
    const { collectorData } = await receiveAuthorization(payer.privateKey, channelIdOf(channel()), 1_000n)
    const args = (config: ChannelConfig, amount = 1_000n, via: Address = collector) => [config, amount, via, collectorData] as const
    await reverts(relayer.address, 'deposit', args(channel({ receiverAuthorizer: zeroAddress })), 'InvalidChannel')
    await reverts(relayer.address, 'deposit', args(channel({ receiver: zeroAddress })), 'InvalidChannel')
    await reverts(relayer.address, 'deposit', args(channel({ withdrawDelay: DELAY - 1 })), 'WithdrawDelayOutOfRange')
    await reverts(relayer.address, 'deposit', args(channel({ withdrawDelay: 30 * 86_400 + 1 })), 'WithdrawDelayOutOfRange')
    await reverts(relayer.address, 'deposit', args(channel(), 0n), 'ZeroDeposit')
    await reverts(relayer.address, 'deposit', args(channel(), 1_000n, zeroAddress), 'InvalidCollector')

    // A "collector" that moves nothing: the escrow's own balance check refuses to credit the channel.
    const token = await deploy(relayer.privateKey, reentrantTokenAbi, reentrantTokenBytecode)
    await reverts(relayer.address, 'deposit', args(channel(), 1_000n, token), 'DepositCollectionFailed')
  })
})

describe('claim', () => {
  it('records vouchers of several channels in one signed batch, and settle pays each receiver exactly once', async () => {
    const [first, second] = [freshAddress(), freshAddress()]
    const configs = [channel({ receiver: first }), channel({ receiver: first }), channel({ receiver: second })]
    for (const config of configs) await deposit(config, 100_000n)
    const rows = await Promise.all([
      claimRow(payer.privateKey, configs[0]!, 30_000n),
      claimRow(payer.privateKey, configs[1]!, 50_000n, 45_000n), // a receiver may take less than signed
      claimRow(payer.privateKey, configs[2]!, 10_000n),
    ])
    const signature = await signClaimBatch(authorizer.privateKey, rows)
    expect(
      await devnet.publicClient.readContract({
        address: escrow,
        abi: batchSettlementAbi,
        functionName: 'getClaimBatchDigest',
        args: [rows],
      }),
    ).toBe(
      hashTypedData({
        domain: domainOf(),
        types,
        primaryType: 'ClaimBatch',
        message: {
          claims: rows.map((row) => ({
            channelId: channelIdOf(row.voucher.channel),
            maxClaimableAmount: row.voucher.maxClaimableAmount,
            totalClaimed: row.totalClaimed,
          })),
        },
      }),
    )
    const escrowUsdc = await devnet.usdcBalance(escrow)

    const events = await send(relayer.privateKey, 'claimWithSignature', [rows, signature])

    expect(events).toEqual(
      rows.map((row) => ({
        eventName: 'Claimed',
        args: {
          channelId: channelIdOf(row.voucher.channel),
          sender: relayer.address,
          claimAmount: row.totalClaimed,
          newTotalClaimed: row.totalClaimed,
        },
      })),
    )
    expect(await Promise.all(configs.map((config) => read.channel(channelIdOf(config))))).toEqual([
      { balance: 100_000n, totalClaimed: 30_000n },
      { balance: 100_000n, totalClaimed: 45_000n },
      { balance: 100_000n, totalClaimed: 10_000n },
    ])
    expect(await read.receiver(first, devnet.usdc)).toEqual({ totalClaimed: 75_000n, totalSettled: 0n })
    expect(await read.receiver(second, devnet.usdc)).toEqual({ totalClaimed: 10_000n, totalSettled: 0n })
    expect(await devnet.usdcBalance(escrow)).toBe(escrowUsdc) // claiming moves no tokens

    // Anyone may sweep; a second sweep finds nothing.
    expect(await send(stranger.privateKey, 'settle', [first, devnet.usdc])).toEqual([
      { eventName: 'Settled', args: { receiver: first, token: devnet.usdc, sender: stranger.address, amount: 75_000n } },
    ])
    expect(await send(stranger.privateKey, 'settle', [first, devnet.usdc])).toEqual([])
    await send(relayer.privateKey, 'settle', [second, devnet.usdc])
    expect([await devnet.usdcBalance(first), await devnet.usdcBalance(second)]).toEqual([75_000n, 10_000n])
    expect(await devnet.usdcBalance(escrow)).toBe(escrowUsdc - 85_000n)
    expect(await read.receiver(first, devnet.usdc)).toEqual({ totalClaimed: 75_000n, totalSettled: 75_000n })

    // Claimed directly by the receiver side, without a batch signature; a later voucher takes only the difference.
    const own = channel()
    await deposit(own, 100_000n)
    const owed = await read.receiver(receiver.address, devnet.usdc)
    await send(receiver.privateKey, 'claim', [[await claimRow(payer.privateKey, own, 60_000n, 20_000n)]])
    expect(await send(authorizer.privateKey, 'claim', [[await claimRow(payer.privateKey, own, 60_000n)]])).toEqual([
      {
        eventName: 'Claimed',
        args: { channelId: channelIdOf(own), sender: authorizer.address, claimAmount: 40_000n, newTotalClaimed: 60_000n },
      },
    ])
    expect(await read.receiver(receiver.address, devnet.usdc)).toEqual({ ...owed, totalClaimed: owed.totalClaimed + 60_000n })
  })

  it('refuses a voucher above the deposit, and a claim above the voucher', async () => {
    const config = channel({ receiver: freshAddress() })
    await deposit(config, 100_000n)
    const above = await claimRow(payer.privateKey, config, 150_000n)
    await reverts(
      relayer.address,
      'claimWithSignature',
      [[above], await signClaimBatch(authorizer.privateKey, [above])],
      'ClaimExceedsBalance',
    )
    const overdrawn = { ...(await claimRow(payer.privateKey, config, 40_000n)), totalClaimed: 40_001n }
    await reverts(
      relayer.address,
      'claimWithSignature',
      [[overdrawn], await signClaimBatch(authorizer.privateKey, [overdrawn])],
      'ClaimExceedsCeiling',
    )

    // The same over-deposit voucher still pays what the deposit covers.
    const covered = { ...above, totalClaimed: 100_000n }
    await send(relayer.privateKey, 'claimWithSignature', [[covered], await signClaimBatch(authorizer.privateKey, [covered])])
    expect(await read.channel(channelIdOf(config))).toEqual({ balance: 100_000n, totalClaimed: 100_000n })
  })

  it('refuses a voucher replayed on another channel, signed for another chain or contract, or by someone else', async () => {
    const config = channel({ receiver: freshAddress() })
    const other = channel({ receiver: config.receiver })
    await deposit(config, 100_000n)
    await deposit(other, 100_000n)
    const forConfig = await signVoucher(payer.privateKey, channelIdOf(config), 10_000n)
    const claims: [string, VoucherClaim][] = [
      [
        'replayed on another channel',
        { voucher: { channel: other, maxClaimableAmount: 10_000n }, signature: forConfig, totalClaimed: 10_000n },
      ],
      [
        'chain id 1',
        {
          voucher: { channel: config, maxClaimableAmount: 10_000n },
          signature: await signVoucher(payer.privateKey, channelIdOf(config, domainOf(escrow, 1)), 10_000n, domainOf(escrow, 1)),
          totalClaimed: 10_000n,
        },
      ],
      [
        'the canonical contract',
        {
          voucher: { channel: config, maxClaimableAmount: 10_000n },
          signature: await signVoucher(payer.privateKey, channelIdOf(config), 10_000n, domainOf(CANONICAL_BATCH_SETTLEMENT)),
          totalClaimed: 10_000n,
        },
      ],
      ['a stranger', await claimRow(stranger.privateKey, config, 10_000n)],
      [
        'the payer for a channel with a payer authorizer',
        await claimRow(payer.privateKey, { ...config, payerAuthorizer: stranger.address }, 10_000n),
      ],
    ]
    await deposit({ ...config, payerAuthorizer: stranger.address }, 100_000n)
    for (const [, row] of claims) {
      await reverts(relayer.address, 'claimWithSignature', [[row], await signClaimBatch(authorizer.privateKey, [row])], 'InvalidSignature')
    }
    // The payer authorizer's key is what counts once one is committed.
    const delegated = await claimRow(stranger.privateKey, { ...config, payerAuthorizer: stranger.address }, 10_000n)
    await send(relayer.privateKey, 'claimWithSignature', [[delegated], await signClaimBatch(authorizer.privateKey, [delegated])])
    expect(await read.channel(channelIdOf(config))).toEqual({ balance: 100_000n, totalClaimed: 0n })
    expect(await read.channel(channelIdOf(other))).toEqual({ balance: 100_000n, totalClaimed: 0n })
  })

  it('refuses a claim by the wrong party', async () => {
    const config = channel({ receiver: freshAddress() })
    await deposit(config, 100_000n)
    const row = await claimRow(payer.privateKey, config, 10_000n)
    for (const account of [payer, stranger, relayer]) await reverts(account.address, 'claim', [[row]], 'NotAuthorizedToClaim')
    await reverts(relayer.address, 'claimWithSignature', [[row], await signClaimBatch(stranger.privateKey, [row])], 'InvalidSignature')
    await reverts(relayer.address, 'claimWithSignature', [[row], await signClaimBatch(payer.privateKey, [row])], 'InvalidSignature')
    // A batch signature covers exactly its rows: not a larger total, not an added row.
    const signature = await signClaimBatch(authorizer.privateKey, [row])
    await reverts(relayer.address, 'claimWithSignature', [[{ ...row, totalClaimed: 9_999n }], signature], 'InvalidSignature')
    await reverts(relayer.address, 'claimWithSignature', [[row, row], signature], 'InvalidSignature')
    // Every row of a signed batch must name the signing authorizer.
    const foreign = channel({ receiverAuthorizer: stranger.address })
    await deposit(foreign, 100_000n)
    const mixed = [row, await claimRow(payer.privateKey, foreign, 10_000n)]
    await reverts(
      relayer.address,
      'claimWithSignature',
      [mixed, await signClaimBatch(authorizer.privateKey, mixed)],
      'NotReceiverAuthorizer',
    )
    await reverts(relayer.address, 'claim', [[]], 'EmptyBatch')
    await reverts(relayer.address, 'claimWithSignature', [[], '0x'], 'EmptyBatch')
    expect(await read.channel(channelIdOf(config))).toEqual({ balance: 100_000n, totalClaimed: 0n })
  })

  it('treats a voucher at or below the claimed total as a no-op that moves nothing', async () => {
    const config = channel({ receiver: freshAddress() })
    await deposit(config, 100_000n)
    const high = await claimRow(payer.privateKey, config, 80_000n)
    await send(relayer.privateKey, 'claimWithSignature', [[high], await signClaimBatch(authorizer.privateKey, [high])])
    const low = await claimRow(payer.privateKey, config, 50_000n)
    const partial = await claimRow(payer.privateKey, config, 100_000n, 70_000n)
    for (const rows of [[low], [high], [partial], [low, high, partial]]) {
      expect(await send(relayer.privateKey, 'claimWithSignature', [rows, await signClaimBatch(authorizer.privateKey, rows)])).toEqual([])
    }
    expect(await read.channel(channelIdOf(config))).toEqual({ balance: 100_000n, totalClaimed: 80_000n })
    expect(await read.receiver(config.receiver, devnet.usdc)).toEqual({ totalClaimed: 80_000n, totalSettled: 0n })
  })
})

describe('withdrawal', () => {
  it('lets the receiver claim during the delay; afterwards the payer takes only what is unclaimed, and no claim takes more than remains', async () => {
    const config = channel({ receiver: freshAddress() })
    const id = channelIdOf(config)
    await deposit(config, 100_000n)
    const payerUsdc = await devnet.usdcBalance(payer.address)

    await reverts(stranger.address, 'initiateWithdraw', [config, 100_000n], 'NotAuthorizedToWithdraw')
    await reverts(payer.address, 'initiateWithdraw', [config, 100_001n], 'WithdrawAmountExceedsAvailable')
    await reverts(payer.address, 'initiateWithdraw', [config, 0n], 'NothingToWithdraw')
    await reverts(payer.address, 'finalizeWithdraw', [config], 'WithdrawalNotPending')
    const [initiated] = await send(payer.privateKey, 'initiateWithdraw', [config, 100_000n])
    const startedAt = await latestTimestamp()
    expect(initiated).toEqual({
      eventName: 'WithdrawInitiated',
      args: { channelId: id, amount: 100_000n, finalizeAfter: Number(startedAt) + DELAY },
    })
    expect(await read.pending(id)).toEqual({ amount: 100_000n, initiatedAt: Number(startedAt) })
    await reverts(payer.address, 'initiateWithdraw', [config, 1n], 'WithdrawalAlreadyPending')

    // Within the delay the receiver's claim lands, and the payer cannot finish yet.
    const first = await claimRow(payer.privateKey, config, 40_000n)
    await send(relayer.privateKey, 'claimWithSignature', [[first], await signClaimBatch(authorizer.privateKey, [first])])
    await reverts(payer.address, 'finalizeWithdraw', [config], 'WithdrawDelayNotElapsed')
    await reverts(stranger.address, 'finalizeWithdraw', [config], 'NotAuthorizedToFinalizeWithdraw')

    await elapse(DELAY)
    expect(await send(payer.privateKey, 'finalizeWithdraw', [config])).toEqual([
      { eventName: 'WithdrawFinalized', args: { channelId: id, sender: payer.address, amount: 60_000n } },
    ])
    expect(await devnet.usdcBalance(payer.address)).toBe(payerUsdc + 60_000n)
    expect(await read.channel(id)).toEqual({ balance: 40_000n, totalClaimed: 40_000n })
    expect(await read.pending(id)).toEqual({ amount: 0n, initiatedAt: 0 })

    // A voucher signed for more than what is left cannot take it.
    const late = await claimRow(payer.privateKey, config, 100_000n)
    await reverts(
      relayer.address,
      'claimWithSignature',
      [[late], await signClaimBatch(authorizer.privateKey, [late])],
      'ClaimExceedsBalance',
    )
    const rest = { ...late, totalClaimed: 40_001n }
    await reverts(
      relayer.address,
      'claimWithSignature',
      [[rest], await signClaimBatch(authorizer.privateKey, [rest])],
      'ClaimExceedsBalance',
    )
    await send(relayer.privateKey, 'settle', [config.receiver, devnet.usdc])
    expect(await devnet.usdcBalance(config.receiver)).toBe(40_000n)
  })

  it('lets the payer authorizer withdraw for the payer, paying the payer', async () => {
    const config = channel({ receiver: freshAddress(), payerAuthorizer: stranger.address })
    await deposit(config, 10_000n)
    const payerUsdc = await devnet.usdcBalance(payer.address)
    await send(stranger.privateKey, 'initiateWithdraw', [config, 10_000n])
    await elapse(DELAY)
    const events = await send(stranger.privateKey, 'finalizeWithdraw', [config])
    expect(events.map(({ eventName }) => eventName)).toEqual(['WithdrawFinalized', 'ChannelClosed'])
    expect(await devnet.usdcBalance(payer.address)).toBe(payerUsdc + 10_000n)
  })
})

describe('refund', () => {
  it('returns unclaimed escrow to the payer, directly or by a relayed signature, one nonce at a time', async () => {
    const config = channel({ receiver: freshAddress() })
    const id = channelIdOf(config)
    await deposit(config, 100_000n)
    const row = await claimRow(payer.privateKey, config, 30_000n)
    await send(relayer.privateKey, 'claimWithSignature', [[row], await signClaimBatch(authorizer.privateKey, [row])])
    const payerUsdc = await devnet.usdcBalance(payer.address)

    await reverts(payer.address, 'refund', [config, 1n], 'NotAuthorizedToRefund')
    await reverts(authorizer.address, 'refund', [config, 0n], 'ZeroRefund')
    expect(await send(authorizer.privateKey, 'refund', [config, 50_000n])).toEqual([
      { eventName: 'Refunded', args: { channelId: id, sender: authorizer.address, amount: 50_000n } },
    ])
    expect(await read.refundNonce(id)).toBe(1n)

    // A signature for the spent nonce, or from anyone but the receiver authorizer, is refused.
    await reverts(
      relayer.address,
      'refundWithSignature',
      [config, 1_000n, 0n, await signRefund(authorizer.privateKey, id, 0n, 1_000n)],
      'InvalidRefundNonce',
    )
    await reverts(
      relayer.address,
      'refundWithSignature',
      [config, 1_000n, 1n, await signRefund(stranger.privateKey, id, 1n, 1_000n)],
      'InvalidSignature',
    )
    await reverts(
      relayer.address,
      'refundWithSignature',
      [config, 2_000n, 1n, await signRefund(authorizer.privateKey, id, 1n, 1_000n)],
      'InvalidSignature',
    )
    // More than is unclaimed is capped: the claimed 30,000 stay the receiver's.
    const signature = await signRefund(authorizer.privateKey, id, 1n, 1_000_000n)
    expect(await send(relayer.privateKey, 'refundWithSignature', [config, 1_000_000n, 1n, signature])).toEqual([
      { eventName: 'Refunded', args: { channelId: id, sender: relayer.address, amount: 20_000n } },
    ])
    await reverts(relayer.address, 'refundWithSignature', [config, 1_000_000n, 1n, signature], 'InvalidRefundNonce')
    expect(await devnet.usdcBalance(payer.address)).toBe(payerUsdc + 70_000n)
    expect(await read.channel(id)).toEqual({ balance: 30_000n, totalClaimed: 30_000n })

    // Nothing left: the nonce still advances, nothing moves.
    expect(await send(authorizer.privateKey, 'refund', [config, 1n])).toEqual([])
    expect(await read.refundNonce(id)).toBe(3n)
    await send(relayer.privateKey, 'settle', [config.receiver, devnet.usdc])
    expect(await devnet.usdcBalance(config.receiver)).toBe(30_000n)
  })

  it('shrinks or cancels a pending withdrawal, and closes a channel it empties', async () => {
    const config = channel({ receiver: freshAddress() })
    const id = channelIdOf(config)
    await deposit(config, 100_000n)
    await send(payer.privateKey, 'initiateWithdraw', [config, 60_000n])
    await send(authorizer.privateKey, 'refund', [config, 20_000n])
    expect((await read.pending(id)).amount).toBe(40_000n)
    await send(authorizer.privateKey, 'refund', [config, 50_000n])
    expect(await read.pending(id)).toEqual({ amount: 0n, initiatedAt: 0 })
    const events = await send(authorizer.privateKey, 'refund', [config, 30_000n])
    expect(events).toEqual([
      { eventName: 'Refunded', args: { channelId: id, sender: authorizer.address, amount: 30_000n } },
      { eventName: 'ChannelClosed', args: { channelId: id, config } },
    ])
    expect(await read.channel(id)).toEqual({ balance: 0n, totalClaimed: 0n })
    // A drained channel is refunded again as a new one.
    expect((await deposit(config, 1_000n)).map(({ eventName }) => eventName)).toEqual(['ChannelCreated', 'Deposited'])
  })
})

describe('re-entrancy through the token', () => {
  let token: Address
  const arm = (data: Hex) => send(relayer.privateKey, 'arm', [escrow, data], token, reentrantTokenAbi)
  const callBack = async () => {
    const at = { address: token, abi: reentrantTokenAbi } as const
    const [succeeded, result] = await Promise.all([
      devnet.publicClient.readContract({ ...at, functionName: 'lastSucceeded' }),
      devnet.publicClient.readContract({ ...at, functionName: 'lastResult' }),
    ])
    return { succeeded, result }
  }
  const hostile = (overrides: Partial<ChannelConfig> = {}) => channel({ token, receiver: freshAddress(), ...overrides })
  const depositHostile = (config: ChannelConfig, amount: bigint) => send(relayer.privateKey, 'deposit', [config, amount, token, '0x'])
  const encode = (functionName: string, args: readonly unknown[]) =>
    encodeFunctionData({ abi: batchSettlementAbi, functionName, args } as never)

  beforeAll(async () => {
    token = await deploy(relayer.privateKey, reentrantTokenAbi, reentrantTokenBytecode)
  })

  it('a deposit cannot be credited twice from inside its collector', async () => {
    const config = hostile()
    await arm(encode('deposit', [config, 1_000n, token, '0x']))
    await depositHostile(config, 1_000n)
    expect(await callBack()).toEqual({ succeeded: false, result: reentrancyError })
    expect(await read.channel(channelIdOf(config))).toEqual({ balance: 1_000n, totalClaimed: 0n })
    expect(await devnet.tokenBalance(token, escrow)).toBe(1_000n)
  })

  it('settle pays once although the token calls settle again while paying', async () => {
    const config = hostile()
    await depositHostile(config, 10_000n)
    const row = await claimRow(payer.privateKey, config, 7_000n)
    await send(relayer.privateKey, 'claimWithSignature', [[row], await signClaimBatch(authorizer.privateKey, [row])])
    await arm(encode('settle', [config.receiver, token]))
    await send(relayer.privateKey, 'settle', [config.receiver, token])
    expect(await callBack()).toEqual({ succeeded: false, result: reentrancyError })
    expect(await devnet.tokenBalance(token, config.receiver)).toBe(7_000n)
    expect(await read.receiver(config.receiver, token)).toEqual({ totalClaimed: 7_000n, totalSettled: 7_000n })
    // Through multicall too: the guard holds for every inner call.
    await arm(encode('multicall', [[encode('settle', [config.receiver, token])]]))
    const more = await claimRow(payer.privateKey, config, 9_000n)
    await send(relayer.privateKey, 'claimWithSignature', [[more], await signClaimBatch(authorizer.privateKey, [more])])
    await send(relayer.privateKey, 'settle', [config.receiver, token])
    expect(await callBack()).toEqual({ succeeded: false, result: reentrancyError })
    expect(await devnet.tokenBalance(token, config.receiver)).toBe(9_000n)
  })

  it('a withdrawal and a signed refund pay the payer once although the token calls them again', async () => {
    // The token is the payer authorizer here, so its call-back would pass the caller check.
    const config = hostile({ payerAuthorizer: token })
    const id = channelIdOf(config)
    await depositHostile(config, 10_000n)
    const signature = await signRefund(authorizer.privateKey, id, 0n, 4_000n)
    await arm(encode('refundWithSignature', [config, 4_000n, 0n, signature]))
    await send(relayer.privateKey, 'refundWithSignature', [config, 4_000n, 0n, signature])
    expect(await callBack()).toEqual({ succeeded: false, result: reentrancyError })
    expect(await devnet.tokenBalance(token, payer.address)).toBe(4_000n)

    await send(payer.privateKey, 'initiateWithdraw', [config, 6_000n])
    await elapse(DELAY)
    await arm(encode('finalizeWithdraw', [config]))
    const held = await devnet.tokenBalance(token, escrow)
    await send(payer.privateKey, 'finalizeWithdraw', [config])
    expect(await callBack()).toEqual({ succeeded: false, result: reentrancyError })
    expect(await devnet.tokenBalance(token, payer.address)).toBe(10_000n)
    expect(await devnet.tokenBalance(token, escrow)).toBe(held - 6_000n)
    expect(await read.channel(id)).toEqual({ balance: 0n, totalClaimed: 0n })
  })
})

describe('at the canonical address, with the reference client and facilitator', () => {
  beforeAll(async () => {
    // The runtime code of our deployment, unchanged: the EIP-712 domain follows the address it runs at.
    const runtime = await devnet.publicClient.getCode({ address: escrow })
    await devnet.setCode(CANONICAL_BATCH_SETTLEMENT, runtime!)
    // The collector's one immutable is the escrow it serves, so it is built for the canonical escrow first.
    const built = await deploy(relayer.privateKey, erc3009DepositCollectorAbi, erc3009DepositCollectorBytecode, [
      CANONICAL_BATCH_SETTLEMENT,
    ])
    await devnet.setCode(CANONICAL_ERC3009_COLLECTOR, (await devnet.publicClient.getCode({ address: built }))!)
  })

  it('answers with its own domain and the channel ids the reference client computes', async () => {
    const at = { address: CANONICAL_BATCH_SETTLEMENT, abi: batchSettlementAbi } as const
    const [, name, version, chainId, verifyingContract] = await devnet.publicClient.readContract({ ...at, functionName: 'eip712Domain' })
    expect({ name, version, chainId, verifyingContract }).toEqual({
      name: 'x402 Batch Settlement',
      version: '1',
      chainId: BigInt(devnet.chainId),
      verifyingContract: CANONICAL_BATCH_SETTLEMENT,
    })
    const config = channel()
    const id = await devnet.publicClient.readContract({ ...at, functionName: 'getChannelId', args: [config] })
    expect(id).toBe(computeChannelId(config, devnet.network))
    expect(id).not.toBe(channelIdOf(config)) // the same terms at our own deployment name another channel
    const voucher = await referenceSignVoucher(privateKeyToAccount(payer.privateKey), id, '5000', devnet.network)
    const digest = await devnet.publicClient.readContract({ ...at, functionName: 'getVoucherDigest', args: [id, 5_000n] })
    expect(digest).toBe(
      hashTypedData({
        domain: domainOf(CANONICAL_BATCH_SETTLEMENT),
        types,
        primaryType: 'Voucher',
        message: { channelId: id, maxClaimableAmount: 5_000n },
      }),
    )
    expect(voucher.signature).toBe(await signVoucher(payer.privateKey, id, 5_000n, domainOf(CANONICAL_BATCH_SETTLEMENT)))
  })

  it('takes a deposit, a claim and a sweep driven by the reference facilitator from a reference client payload', async () => {
    const payTo = freshAddress()
    const requirements = {
      scheme: 'batch-settlement',
      network: devnet.network,
      amount: '1000',
      asset: devnet.usdc,
      payTo,
      maxTimeoutSeconds: 86_400,
      extra: { receiverAuthorizer: authorizer.address, withdrawDelay: DELAY, name: 'USD Coin', version: '2' },
    }
    const config = channel({ receiver: payTo })
    const id = computeChannelId(config, devnet.network)
    const client = privateKeyToAccount(payer.privateKey)
    const { payload } = await createBatchSettlementEIP3009DepositPayload(client, 2, requirements, config, '100000', '1000')
    const payment = { x402Version: 2, accepted: requirements, payload }
    const facilitator = new BatchSettlementEvmScheme(
      referenceSigner(devnet, relayer.privateKey),
      privateKeyToAccount(authorizer.privateKey),
    )
    const payerUsdc = await devnet.usdcBalance(payer.address)

    expect(await facilitator.verify(payment as never, requirements as never, undefined as never, undefined as never)).toMatchObject({
      isValid: true,
    })
    const deposited = await facilitator.settle(payment as never, requirements as never, undefined as never)
    expect(deposited).toMatchObject({ success: true, amount: '100000' })
    expect(await devnet.usdcBalance(payer.address)).toBe(payerUsdc - 100_000n)
    expect(await read.channel(id, CANONICAL_BATCH_SETTLEMENT)).toEqual({ balance: 100_000n, totalClaimed: 0n })

    const voucher = (payload as { voucher: { maxClaimableAmount: string; signature: Hex } }).voucher
    const claim = {
      type: 'claim',
      claims: [
        {
          voucher: { channel: config, maxClaimableAmount: voucher.maxClaimableAmount },
          signature: voucher.signature,
          totalClaimed: '1000',
        },
      ],
    }
    expect(await facilitator.settle({ ...payment, payload: claim } as never, requirements as never, undefined as never)).toMatchObject({
      success: true,
    })
    expect(await read.channel(id, CANONICAL_BATCH_SETTLEMENT)).toEqual({ balance: 100_000n, totalClaimed: 1_000n })

    const sweep = { type: 'settle', receiver: payTo, token: devnet.usdc }
    expect(await facilitator.settle({ ...payment, payload: sweep } as never, requirements as never, undefined as never)).toMatchObject({
      success: true,
    })
    expect(await devnet.usdcBalance(payTo)).toBe(1_000n)
    expect(await read.receiver(payTo, devnet.usdc, CANONICAL_BATCH_SETTLEMENT)).toEqual({ totalClaimed: 1_000n, totalSettled: 1_000n })
  })
})
