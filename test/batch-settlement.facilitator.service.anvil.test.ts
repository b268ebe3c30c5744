/**
 * batch-settlement in the facilitator service as an operator runs it: enabled by configuration, its
 * records in the service's database (PGlite here), a reference resource server claiming and sweeping
 * through it with its merchant API key, the channel endpoints and `x402 facilitator channels` scoped
 * to that key, the claim figures at `/metrics`, and the records still there after a restart.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HTTPFacilitatorClient } from '@x402/core/server'
import { BatchSettlementEvmScheme as ClientScheme, computeChannelId, signVoucher } from '@x402/evm/batch-settlement/client'
import { type BatchSettlementChannelManager, BatchSettlementEvmScheme as ServerScheme } from '@x402/evm/batch-settlement/server'
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch'
import { type Devnet, startDevnet } from '@x402kit/devnet'
import { createLogger, type FacilitatorService, startFacilitatorService } from '@x402kit/facilitator'
import { type Abi, type Address, type Hex, zeroAddress } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Channel } from 'x402kit/evm'
import { facilitatorChannels } from '../apps/cli/src/commands/facilitatorChannels.ts'
import {
  batchSettlementAbi,
  batchSettlementBytecode,
  erc3009DepositCollectorAbi,
  erc3009DepositCollectorBytecode,
} from '../contracts/artifacts/index.ts'
import { startReferenceChannelShop } from './batch-settlement.seller.support.ts'
import type { Listening } from './reference.ts'

const apiKey = 'sk_test_channels_0123456789abcdef'
const price = 1_000n
const deposit = 50_000n

let devnet: Devnet
let service: FacilitatorService
let dataDir: string
let shop: Listening
let manager: BatchSettlementChannelManager
const payTo = privateKeyToAccount(generatePrivateKey()).address
const otherMerchant = privateKeyToAccount(generatePrivateKey()).address
const logs: string[] = []

async function deploy(abi: Abi, bytecode: Hex, args: readonly unknown[] = []): Promise<Address> {
  const hash = await devnet.walletClient(devnet.deployer.privateKey).deployContract({ abi, bytecode, args } as never)
  const { contractAddress } = await devnet.publicClient.waitForTransactionReceipt({ hash })
  return contractAddress!
}

const start = () =>
  startFacilitatorService(
    {
      port: 0,
      dataDir,
      networks: {
        [devnet.network]: {
          rpcUrl: devnet.rpcUrl,
          signers: [devnet.accounts[0]!.privateKey],
          pollingIntervalMs: 50,
          batchSettlement: { claimWindowMs: 50, signer: devnet.accounts[1]!.privateKey },
        },
      },
      access: { apiKeys: [{ key: apiKey, merchant: 'shop', payTo: [payTo] }] },
    },
    { logger: createLogger({ level: 'warn', write: (line) => void logs.push(line) }) },
  )

const auth = { authorization: `Bearer ${apiKey}` }
const get = (path: string, headers: Record<string, string> = auth) => fetch(`${service.url}${path}`, { headers })

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 3 })
  const escrow = await deploy(batchSettlementAbi, batchSettlementBytecode)
  await devnet.setCode(Channel.escrowAddress, (await devnet.publicClient.getCode({ address: escrow }))!)
  const collector = await deploy(erc3009DepositCollectorAbi, erc3009DepositCollectorBytecode, [Channel.escrowAddress])
  await devnet.setCode(Channel.erc3009CollectorAddress, (await devnet.publicClient.getCode({ address: collector }))!)
  dataDir = await mkdtemp(join(tmpdir(), 'x402-channels-service-'))
  service = await start()

  const client = new HTTPFacilitatorClient({
    url: service.url,
    createAuthHeaders: async () => ({ verify: auth, settle: auth, supported: auth }),
  })
  const server = new ServerScheme(payTo)
  shop = await startReferenceChannelShop(devnet, { client, server, payTo, price, minDeposit: deposit })
  manager = server.createChannelManager(client, devnet.network as `${string}:${string}`, devnet.usdc)
}, 60_000)

afterAll(async () => {
  await shop?.close()
  await service?.close({ graceMs: 200 })
  await devnet?.stop()
  if (dataDir) await rm(dataDir, { recursive: true, force: true })
})

describe('batch-settlement in the facilitator service', () => {
  const payer = () => devnet.accounts[2]!
  const config = () => ({
    payer: payer().address,
    payerAuthorizer: payer().address,
    receiver: payTo,
    receiverAuthorizer: devnet.accounts[1]!.address,
    token: devnet.usdc,
    withdrawDelay: Channel.minWithdrawDelay,
    salt: `0x${'00'.repeat(32)}` as Hex,
  })
  const channelId = () => computeChannelId(config(), devnet.network)

  it('advertises its own batch-settlement key as the receiver authorizer', async () => {
    const supported = (await (await get('/supported')).json()) as { kinds: { scheme: string; extra?: Record<string, unknown> }[] }
    const kind = supported.kinds.find((entry) => entry.scheme === 'batch-settlement')
    expect(kind?.extra?.receiverAuthorizer).toBe(devnet.accounts[1]!.address)
    expect(kind?.extra?.receiverAuthorizer).not.toBe(zeroAddress)
  })

  it('takes the deposit, then the claim and the sweep of a reference resource server', async () => {
    const pay = wrapFetchWithPaymentFromConfig(fetch, {
      schemes: [{ network: 'eip155:*', client: new ClientScheme(privateKeyToAccount(payer().privateKey) as never) }],
      spendControls: { allowedAssets: [{ network: devnet.network, asset: devnet.usdc }] },
    } as never)
    for (let i = 0; i < 3; i++) expect((await pay(`${shop.url}/quote`)).status).toBe(200)
    const [claimed] = await manager.claim()
    expect(claimed).toMatchObject({ vouchers: 1, transaction: expect.stringMatching(/^0x/) })
    await manager.settle()
    expect(await devnet.usdcBalance(payTo)).toBe(3n * price)
  })

  it('answers the channel endpoints for the key’s own receiver only', async () => {
    const list = await get(`/channels?receiver=${payTo}`)
    expect(list.status).toBe(200)
    const body = (await list.json()) as { items: Record<string, unknown>[]; pagination: unknown }
    expect(body.pagination).toEqual({ limit: 50, offset: 0, total: 1 })
    expect(body.items[0]).toMatchObject({
      channelId: channelId(),
      payer: payer().address,
      receiver: payTo,
      token: devnet.usdc,
      balance: deposit.toString(),
      claimed: (3n * price).toString(),
      pendingWithdrawal: '0',
    })
    const one = (await (await get(`/channels/${channelId()}`)).json()) as { claimed: string; transactions: Record<string, unknown>[] }
    expect(one.claimed).toBe('3000')
    expect(one.transactions).toEqual([expect.objectContaining({ kind: 'claim', status: 'confirmed', vouchers: 1, amount: '3000' })])

    expect((await get(`/channels?receiver=${payTo}`, {})).status).toBe(401)
    expect((await get(`/channels?receiver=${otherMerchant}`)).status).toBe(403)
    expect((await get(`/channels?payer=${payer().address}`)).status).toBe(403)
    expect((await get(`/channels?receiver=nope`)).status).toBe(400)
    expect((await get(`/channels/0x${'ab'.repeat(32)}`)).status).toBe(404)
  })

  it('refuses a claim or refund of another merchant’s channel with this key', async () => {
    const foreign = { ...config(), receiver: otherMerchant }
    const voucher = await signVoucher(
      privateKeyToAccount(payer().privateKey),
      computeChannelId(foreign, devnet.network),
      '1000',
      devnet.network,
    )
    const requirements = {
      scheme: 'batch-settlement',
      network: devnet.network,
      asset: devnet.usdc,
      amount: '0',
      payTo,
      maxTimeoutSeconds: 0,
      extra: {},
    }
    for (const payload of [
      {
        type: 'claim',
        claims: [{ voucher: { channel: foreign, maxClaimableAmount: '1000' }, signature: voucher.signature, totalClaimed: '1000' }],
      },
      { type: 'refund', channelConfig: foreign, voucher, amount: '1000', refundNonce: '0', claims: [] },
      { type: 'settle', receiver: otherMerchant, token: devnet.usdc },
    ]) {
      const response = await fetch(`${service.url}/settle`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({
          x402Version: 2,
          paymentPayload: { x402Version: 2, accepted: requirements, payload },
          paymentRequirements: requirements,
        }),
      })
      expect(response.status).toBe(403)
    }
  })

  it('lists the channels with x402 facilitator channels', async () => {
    const lines: string[] = []
    expect(await facilitatorChannels({ url: service.url, key: apiKey, receiver: payTo, out: (line) => lines.push(line) })).toBe(0)
    expect(lines[0]).toMatch(/^channel\s+payer\s+receiver\s+balance\s+claimed/)
    expect(lines[1]).toContain(channelId())
    expect(lines.at(-1)).toBe("1 of 1 (offset 0); amounts in the token's atomic units.")
    const refused: string[] = []
    expect(await facilitatorChannels({ url: service.url, key: apiKey, receiver: otherMerchant, out: (line) => refused.push(line) })).toBe(1)
    expect(refused[0]).toMatch(/^403 forbidden/)
  })

  it('counts claims, their vouchers and gas at /metrics', async () => {
    const text = await (await get('/metrics')).text()
    expect(text).toContain(`x402_facilitator_channel_transactions_total{network="${devnet.network}",kind="claim",outcome="mined"} 1`)
    expect(text).toContain(`x402_facilitator_claim_vouchers_sum{network="${devnet.network}"} 1`)
    expect(text).toMatch(new RegExp(`x402_facilitator_channel_gas_used_total\\{network="${devnet.network}",kind="claim"\\} [1-9]\\d+`))
    expect(text).toContain(`x402_facilitator_channel_value_total{network="${devnet.network}",kind="claim"} 3000`)
  })

  it('puts the claimed value and its gas in the merchant’s statement', async () => {
    const response = await get(`/statements/${payTo}`)
    expect(response.status).toBe(200)
    const body = (await response.json()) as { rows: { payments: number; volume: string; gasUsed: string }[] }
    expect(body.rows).toHaveLength(1)
    expect(body.rows[0]).toMatchObject({ payments: 1, volume: '3000' })
    expect(BigInt(body.rows[0]!.gasUsed)).toBeGreaterThan(21_000n)
  })

  it('keeps the channel and its transactions across a restart', async () => {
    await service.close({ graceMs: 200 })
    service = await start()
    const one = (await (await get(`/channels/${channelId()}`)).json()) as { claimed: string; transactions: unknown[] }
    expect(one.claimed).toBe('3000')
    expect(one.transactions).toHaveLength(1)
  })
})
