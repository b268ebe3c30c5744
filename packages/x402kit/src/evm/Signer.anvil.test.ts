import { startDevnet } from '@x402kit/devnet'
import { createWalletClient, type EIP1193Provider, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import { exactEvmClient } from './exact/client.ts'
import { exactEvmFacilitator } from './exact/facilitator.ts'
import { type EvmSignerSource, toEvmSigner } from './Signer.ts'

// Every way a payer can hold a key must produce a signature the facilitator accepts on chain.
describe('toEvmSigner on the local chain', () => {
  let devnet: Awaited<ReturnType<typeof startDevnet>>
  let facilitator: ReturnType<typeof exactEvmFacilitator>
  let offer: PaymentRequirements

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 6 })
    facilitator = exactEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [devnet.accounts[5]!.privateKey] } },
    })
    offer = {
      scheme: 'exact',
      network: devnet.network,
      amount: '2500',
      asset: devnet.usdc,
      payTo: devnet.accounts[4]!.address,
      maxTimeoutSeconds: 120,
      extra: { name: 'USD Coin', version: '2' },
    }
  })
  afterAll(() => devnet.stop())

  const sources: Array<[string, () => EvmSignerSource]> = [
    ['a local private-key account', () => privateKeyToAccount(devnet.accounts[0]!.privateKey)],
    // anvil holds its dev accounts unlocked, so it signs over JSON-RPC like a node wallet would.
    ['a JSON-RPC wallet client', () => createWalletClient({ account: devnet.accounts[1]!.address, transport: http(devnet.rpcUrl) })],
    [
      'an EIP-1193 provider',
      () => {
        const provider: EIP1193Provider = (async ({ method, params }: { method: string; params?: unknown }) => {
          const response = await fetch(devnet.rpcUrl, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: method === 'eth_requestAccounts' ? 'eth_accounts' : method, params }),
          })
          const body = (await response.json()) as { result?: unknown; error?: { message: string } }
          if (body.error) throw new Error(body.error.message)
          return method === 'eth_requestAccounts' ? [devnet.accounts[2]!.address] : body.result
        }) as never
        return { provider: { request: provider } as unknown as EIP1193Provider }
      },
    ],
  ]

  it.each(sources)('%s signs a payment that settles', async (_, source) => {
    const signer = await toEvmSigner(source())
    const payload = await exactEvmClient(signer).createPayload(offer, { resource: 'http://127.0.0.1/weather' })
    const payment = { requirements: offer, payload: { x402Version: 2 as const, accepted: offer, payload } }
    const before = await devnet.usdcBalance(signer.address)
    expect(await facilitator.verify(payment)).toMatchObject({ isValid: true, payer: signer.address })
    expect(await facilitator.settle(payment)).toMatchObject({ success: true, payer: signer.address })
    expect(await devnet.usdcBalance(signer.address)).toBe(before - 2500n)
  })

  it('refuses an object that cannot sign typed data, with a hint', async () => {
    await expect(toEvmSigner({ address: devnet.accounts[0]!.address } as never)).rejects.toThrow(/cannot sign typed data/)
  })
})
