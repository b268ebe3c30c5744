import net from 'node:net'
import { type Hex, parseEther, parseEventLogs, parseSignature, toHex } from 'viem'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type Devnet,
  type DevnetAccount,
  PERMIT_TOKEN_ABI,
  PERMIT_TOKEN_DOMAIN,
  SETTLEMENT_BATCHER_ADDRESS,
  startDevnet,
  USDC_ABI,
} from './index.ts'

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

const randomNonce = (): Hex => toHex(crypto.getRandomValues(new Uint8Array(32)))

describe('startDevnet', () => {
  let devnet: Devnet
  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 3 })
  })
  afterAll(() => devnet?.stop())

  it('deploys Circle USDC (FiatTokenV2_2) behind its proxy', async () => {
    const read = (functionName: 'name' | 'version' | 'decimals' | 'DOMAIN_SEPARATOR') =>
      devnet.publicClient.readContract({ address: devnet.usdc, abi: USDC_ABI, functionName })
    expect(await read('name')).toBe('USD Coin')
    expect(await read('version')).toBe('2')
    expect(await read('decimals')).toBe(6)
    expect(await read('DOMAIN_SEPARATOR')).toMatch(/^0x[0-9a-f]{64}$/)
    expect(devnet).toMatchObject({ chainId: 31337, network: 'eip155:31337' })
    expect(await devnet.publicClient.getChainId()).toBe(31337)
  })

  it('funds the handed-out accounts with ETH and 10,000 USDC, apart from the deployer', async () => {
    expect(devnet.accounts).toHaveLength(3)
    expect(devnet.accounts.map((account) => account.address)).not.toContain(devnet.deployer.address)
    for (const { address } of devnet.accounts) {
      expect(await devnet.usdcBalance(address)).toBe(10_000_000_000n)
      expect(await devnet.publicClient.getBalance({ address })).toBe(parseEther('10000'))
    }
  })

  it('settles a transferWithAuthorization signed with EIP-712', async () => {
    const [payer, payee, relayer] = devnet.accounts as [DevnetAccount, DevnetAccount, DevnetAccount]
    const before = await Promise.all([payer, payee, relayer].map(({ address }) => devnet.usdcBalance(address)))
    const authorization = {
      from: payer.address,
      to: payee.address,
      value: 1_234_567n,
      validAfter: 0n,
      validBefore: BigInt(Math.floor(Date.now() / 1000) + 3600),
      nonce: randomNonce(),
    }
    const signature = await devnet.walletClient(payer.privateKey).signTypedData({
      domain: { name: 'USD Coin', version: '2', chainId: 31337, verifyingContract: devnet.usdc },
      types: TRANSFER_WITH_AUTHORIZATION,
      primaryType: 'TransferWithAuthorization',
      message: authorization,
    })
    const { from, to, value, validAfter, validBefore, nonce } = authorization
    const args = [from, to, value, validAfter, validBefore, nonce, signature] as const

    const hash = await devnet.walletClient(relayer.privateKey).writeContract({
      address: devnet.usdc,
      abi: USDC_ABI,
      functionName: 'transferWithAuthorization',
      args,
    })
    const receipt = await devnet.publicClient.waitForTransactionReceipt({ hash })

    expect(receipt.status).toBe('success')
    const events = parseEventLogs({ abi: USDC_ABI, logs: receipt.logs })
    expect(events.map(({ eventName, args }) => ({ eventName, args }))).toEqual([
      { eventName: 'AuthorizationUsed', args: { authorizer: from, nonce } },
      { eventName: 'Transfer', args: { from, to, value } },
    ])
    const after = await Promise.all([payer, payee, relayer].map(({ address }) => devnet.usdcBalance(address)))
    expect(after).toEqual([(before[0] as bigint) - value, (before[1] as bigint) + value, before[2]])
    expect(
      await devnet.publicClient.readContract({
        address: devnet.usdc,
        abi: USDC_ABI,
        functionName: 'authorizationState',
        args: [from, nonce],
      }),
    ).toBe(true)
    await expect(
      devnet.publicClient.simulateContract({
        account: relayer.address,
        address: devnet.usdc,
        abi: USDC_ABI,
        functionName: 'transferWithAuthorization',
        args,
      }),
    ).rejects.toThrow(/authorization is used or canceled/)
  })

  it('mints USDC on request, concurrent calls included', async () => {
    const { address } = devnet.accounts[1] as DevnetAccount
    const before = await devnet.usdcBalance(address)
    await Promise.all([devnet.mintUsdc(address, 5n), devnet.mintUsdc(address, 7n)])
    expect(await devnet.usdcBalance(address)).toBe(before + 12n)
  })

  it('deploys PUSD (PermitToken) at its fixed address, after USDC, and funds the accounts with 10,000 PUSD', async () => {
    expect(devnet.usdc).toBe('0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0')
    expect(devnet.permitToken).toBe('0x8A791620dd6260079BF849Dc5567aDC3F2FdC318')
    const token = { address: devnet.permitToken, abi: PERMIT_TOKEN_ABI } as const
    const read = devnet.publicClient.readContract
    expect(
      await Promise.all([
        read({ ...token, functionName: 'name' }),
        read({ ...token, functionName: 'symbol' }),
        read({ ...token, functionName: 'decimals' }),
        read({ ...token, functionName: 'owner' }),
        read({ ...token, functionName: 'nonces', args: [devnet.accounts[0]!.address] }),
      ]),
    ).toEqual(['Permit Dollar', 'PUSD', 6, devnet.deployer.address, 0n])
    const [, name, version] = await devnet.publicClient.readContract({
      address: devnet.permitToken,
      abi: PERMIT_TOKEN_ABI,
      functionName: 'eip712Domain',
    })
    expect({ name, version }).toEqual(PERMIT_TOKEN_DOMAIN)
    for (const { address } of devnet.accounts) expect(await devnet.tokenBalance(devnet.permitToken, address)).toBe(10_000_000_000n)
    expect(await devnet.tokenBalance(devnet.usdc, devnet.accounts[0]!.address)).toBe(await devnet.usdcBalance(devnet.accounts[0]!.address))
  })

  it('PUSD moves by permit and transferFrom, and only its owner mints', async () => {
    const [owner, spender, payee] = devnet.accounts as [DevnetAccount, DevnetAccount, DevnetAccount]
    const before = await Promise.all([owner, payee].map(({ address }) => devnet.tokenBalance(devnet.permitToken, address)))
    const value = 2_500n
    const deadline = BigInt(Math.floor(Date.now() / 1000) + 600)
    const nonce = await devnet.publicClient.readContract({
      address: devnet.permitToken,
      abi: PERMIT_TOKEN_ABI,
      functionName: 'nonces',
      args: [owner.address],
    })
    const signature = await devnet.walletClient(owner.privateKey).signTypedData({
      domain: { ...PERMIT_TOKEN_DOMAIN, chainId: devnet.chainId, verifyingContract: devnet.permitToken },
      types: {
        Permit: [
          { name: 'owner', type: 'address' },
          { name: 'spender', type: 'address' },
          { name: 'value', type: 'uint256' },
          { name: 'nonce', type: 'uint256' },
          { name: 'deadline', type: 'uint256' },
        ],
      },
      primaryType: 'Permit',
      message: { owner: owner.address, spender: spender.address, value, nonce, deadline },
    })
    const { r, s, v } = parseSignature(signature)
    const wallet = devnet.walletClient(spender.privateKey)
    const write = async (request: Parameters<typeof wallet.writeContract>[0]) =>
      (await devnet.publicClient.waitForTransactionReceipt({ hash: await wallet.writeContract(request) })).status
    expect(
      await write({
        address: devnet.permitToken,
        abi: PERMIT_TOKEN_ABI,
        functionName: 'permit',
        args: [owner.address, spender.address, value, deadline, Number(v), r, s],
      }),
    ).toBe('success')
    expect(
      await write({
        address: devnet.permitToken,
        abi: PERMIT_TOKEN_ABI,
        functionName: 'transferFrom',
        args: [owner.address, payee.address, value],
      }),
    ).toBe('success')
    const after = await Promise.all([owner, payee].map(({ address }) => devnet.tokenBalance(devnet.permitToken, address)))
    expect(after).toEqual([before[0]! - value, before[1]! + value])
    await expect(
      devnet.publicClient.simulateContract({
        account: spender.address,
        address: devnet.permitToken,
        abi: PERMIT_TOKEN_ABI,
        functionName: 'mint',
        args: [spender.address, 1n],
      }),
    ).rejects.toThrow(/OwnableUnauthorizedAccount/)
  })

  it('deploys SettlementBatcher at its fixed address, after PUSD', async () => {
    expect(devnet.batcher).toBe('0x610178dA211FEF7D417bC0e6FeD39F05609AD788')
    expect(devnet.batcher).toBe(SETTLEMENT_BATCHER_ADDRESS)
    expect(await devnet.publicClient.getCode({ address: devnet.batcher })).toMatch(/^0x[0-9a-f]{200,}$/)
  })

  it('sets code and mines blocks', async () => {
    const address = '0x000000000000000000000000000000000000c0de'
    await devnet.setCode(address, '0x6001600055')
    expect(await devnet.publicClient.getCode({ address })).toBe('0x6001600055')
    const height = await devnet.publicClient.getBlockNumber()
    await devnet.mine(3)
    expect(await devnet.publicClient.getBlockNumber()).toBe(height + 3n)
  })
})

describe('startDevnet options', () => {
  it('mines on an interval with blockTime, still starting fast', async () => {
    const started = performance.now()
    const devnet = await startDevnet({ blockTime: 1, accounts: 2, usdcPerAccount: 42n })
    try {
      expect(performance.now() - started).toBeLessThan(3_000)
      expect(await devnet.usdcBalance((devnet.accounts[0] as DevnetAccount).address)).toBe(42n)
      expect(await devnet.tokenBalance(devnet.permitToken, (devnet.accounts[1] as DevnetAccount).address)).toBe(10_000_000_000n)
      const height = await devnet.publicClient.getBlockNumber()
      await new Promise((resolve) => setTimeout(resolve, 1_500))
      expect(await devnet.publicClient.getBlockNumber()).toBeGreaterThan(height)
    } finally {
      await devnet.stop()
    }
  })

  it('stop() ends anvil and frees its port', async () => {
    const devnet = await startDevnet({ accounts: 1 })
    const port = Number(new URL(devnet.rpcUrl).port)
    expect(await canConnect(port)).toBe(true)
    await devnet.stop()
    expect(await canConnect(port)).toBe(false)
    await devnet.stop()
  })
})

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}
