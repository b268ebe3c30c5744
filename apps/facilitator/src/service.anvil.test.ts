/**
 * The facilitator service as an operator runs it, on the local chain: the settlement pipeline
 * (batches to the SettlementBatcher), merchant API keys, the deny list file, the largest payment,
 * the ledger of fees and gas behind `/statements`, and the pipeline's figures at `/metrics`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Devnet, startDevnet } from '@x402kit/devnet'
import { privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Asset, Network, type Payment } from 'x402kit'
import { exactEvmClient, exactEvmServer } from 'x402kit/evm'
import { httpFacilitator } from 'x402kit/facilitator'
import { createLogger } from './log.ts'
import { type FacilitatorService, startFacilitatorService } from './server.ts'

const apiKey = 'sk_test_0123456789abcdef0123456789abcdef'

describe('the facilitator service on a devnet', () => {
  let devnet: Devnet
  let service: FacilitatorService
  let dataDir: string
  let denyList: string
  let payTo: `0x${string}`
  const logs: string[] = []

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 8 })
    const usdc: Asset = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
    Network.registerAsset(devnet.network, devnet.chainId, usdc)
    payTo = devnet.accounts[1]!.address
    dataDir = await mkdtemp(join(tmpdir(), 'x402-service-chain-'))
    denyList = join(dataDir, 'deny.txt')
    await writeFile(denyList, '# nobody yet\n')
    service = await startFacilitatorService(
      {
        port: 0,
        dataDir,
        networks: {
          [devnet.network]: {
            rpcUrl: devnet.rpcUrl,
            signers: [devnet.accounts[0]!.privateKey],
            batcher: devnet.batcher,
            pollingIntervalMs: 50,
          },
        },
        access: { apiKeys: [{ key: apiKey, merchant: 'demo', payTo: [payTo] }] },
        fees: { default: { bps: 100 } },
        risk: { denyListFile: denyList, maxPaymentAmount: { [devnet.usdc]: '5000' } },
        pipeline: { instanceId: 'service-test' },
      },
      { logger: createLogger({ level: 'info', write: (line) => void logs.push(line) }) },
    )
  }, 60_000)

  afterAll(async () => {
    await service?.close({ graceMs: 500 })
    await devnet?.stop()
    if (dataDir) await rm(dataDir, { recursive: true, force: true })
  })

  const client = (key?: string) => httpFacilitator(service.url, key ? { headers: { authorization: `Bearer ${key}` } } : {})
  async function pay(index: number, price = 1_000n): Promise<Payment> {
    const offer = exactEvmServer().requirements({ price: { atomic: price }, network: devnet.network, payTo })
    const payload = await exactEvmClient(privateKeyToAccount(devnet.accounts[index]!.privateKey)).createPayload(offer, {
      resource: 'http://localhost/paid',
    })
    return { payload: { x402Version: 2, accepted: offer, payload }, requirements: offer }
  }

  it('asks for the merchant API key on verify, settle and enqueue', async () => {
    const payment = await pay(2)
    for (const call of [() => client().verify(payment), () => client().settle(payment), () => client().enqueue(payment)])
      await expect(call()).rejects.toThrow(/401|missing_api_key/)
    await expect(client('sk_test_wrongwrongwrongwrongwrong').verify(payment)).rejects.toThrow(/401|invalid_api_key/)
    expect(await client(apiKey).verify(payment)).toMatchObject({ isValid: true })
  })

  it('settles in a batch, records fee and gas in the ledger, and reports it in the statement', async () => {
    const payments = await Promise.all([pay(3), pay(4), pay(5)])
    const results = await Promise.all(payments.map((payment) => client(apiKey).settle(payment)))
    expect(results.map((result) => result.success)).toEqual([true, true, true])
    const unauthorized = await fetch(`${service.url}/statements/${payTo}?period=all`)
    expect(unauthorized.status).toBe(401)
    const other = await fetch(`${service.url}/statements/${devnet.accounts[6]!.address}?period=all`, {
      headers: { authorization: `Bearer ${apiKey}` },
    })
    expect(other.status).toBe(403)
    const response = await fetch(`${service.url}/statements/${payTo}?period=all`, { headers: { authorization: `Bearer ${apiKey}` } })
    expect(response.status).toBe(200)
    const statement = (await response.json()) as { rows: { payments: number; volume: string; fees: string; gasUsed: string }[] }
    expect(statement.rows).toHaveLength(1)
    expect(statement.rows[0]).toMatchObject({ payments: 3, volume: '3000', fees: '30' })
    expect(BigInt(statement.rows[0]!.gasUsed)).toBeGreaterThan(0n)
  }, 30_000)

  it('refuses a deny-listed payer once the file names it, and takes it back when it no longer does', async () => {
    const payer = devnet.accounts[6]!.address
    await writeFile(denyList, `${payer}\n`)
    await expect
      .poll(async () => (await client(apiKey).verify(await pay(6))).invalidReason, { timeout: 5_000, interval: 200 })
      .toBe('payer_denied')
    expect(await client(apiKey).settle(await pay(6))).toMatchObject({ success: false, errorReason: 'payer_denied' })
    await writeFile(denyList, '# cleared\n')
    await expect.poll(async () => (await client(apiKey).verify(await pay(6))).isValid, { timeout: 5_000, interval: 200 }).toBe(true)
  }, 20_000)

  it('refuses a payment above the largest allowed, and charges nothing', async () => {
    const payer = devnet.accounts[7]!.address
    const before = await devnet.usdcBalance(payer)
    expect(await client(apiKey).settle(await pay(7, 5_001n))).toMatchObject({ success: false, errorReason: 'payment_amount_too_large' })
    expect(await client(apiKey).settle(await pay(7, 5_000n))).toMatchObject({ success: true })
    expect(await devnet.usdcBalance(payer)).toBe(before - 5_000n)
  }, 20_000)

  it('reports batches, gas, queue depth and signer balances at /metrics, and logs each batch', async () => {
    await expect
      .poll(async () => await (await fetch(`${service.url}/metrics`)).text(), { timeout: 10_000, interval: 500 })
      .toMatch(/x402_facilitator_signer_balance_ether\{/)
    const text = await (await fetch(`${service.url}/metrics`)).text()
    expect(text).toMatch(/x402_facilitator_batches_total\{[^}]*outcome="mined"[^}]*\} [1-9]/)
    expect(text).toMatch(/x402_facilitator_gas_used_total\{[^}]*\} [1-9]/)
    expect(text).toMatch(/x402_facilitator_queue_depth\{[^}]*\} 0/)
    expect(logs.some((line) => /"msg":"batch settled"/.test(line) && /"component":"pipeline"/.test(line))).toBe(true)
    // No secret reaches a log line.
    expect(logs.join('\n')).not.toContain(apiKey)
    expect(logs.join('\n')).not.toContain(devnet.accounts[0]!.privateKey.slice(2))
  }, 20_000)
})
