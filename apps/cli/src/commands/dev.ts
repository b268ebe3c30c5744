/**
 * `x402 dev`: the whole x402 stack on this machine — a local chain with real USDC, a facilitator
 * with its embedded store, a demo paid API — and an agent that pays for calls while you watch.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startDevnet } from '@x402kit/devnet'
import { startFacilitatorService } from '@x402kit/facilitator'
import type { Address } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { type Asset, Money, Network } from 'x402kit'
import { getPaymentResult, wrapFetch } from 'x402kit/client'
import { startDemoApi } from '../demoApi.ts'

export type DevOptions = {
  once?: boolean
  blockTime?: number
  dataDir?: string
  out?: (line: string) => void
}

type Call = { method: 'GET' | 'POST'; path: string; body?: unknown }

const agentCalls: Call[] = [
  { method: 'GET', path: '/weather?city=Lisbon' },
  { method: 'GET', path: '/quote' },
  {
    method: 'POST',
    path: '/summarize',
    body: { text: 'x402 turns HTTP 402 Payment Required into a way for machines to pay for what they use.' },
  },
  { method: 'GET', path: '/weather?city=Nairobi' },
]

/** Runs the stack and the demo; with `once`, stops and returns the exit code, else runs until SIGINT. */
export async function dev(options: DevOptions = {}): Promise<number> {
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`))
  const cleanups: Array<() => Promise<unknown>> = []
  const stop = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  }
  try {
    const devnet = await startDevnet({ blockTime: options.blockTime })
    cleanups.push(() => devnet.stop())
    const [payer, seller, facilitatorSigner] = devnet.accounts as [
      (typeof devnet.accounts)[0],
      (typeof devnet.accounts)[0],
      (typeof devnet.accounts)[0],
    ]
    const asset: Asset = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
    Network.registerAsset(devnet.network, devnet.chainId, asset)

    const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'x402-dev-')))
    if (!options.dataDir) cleanups.push(() => rm(dataDir, { recursive: true, force: true }))
    const facilitator = await startFacilitatorService({
      port: 0,
      host: '127.0.0.1',
      dataDir,
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [facilitatorSigner.privateKey] } },
    })
    cleanups.push(() => facilitator.close())
    const api = await startDemoApi({ facilitatorUrl: facilitator.url, payTo: seller.address, network: devnet.network, asset })
    cleanups.push(() => api.close())

    out('x402 dev: a local x402 stack')
    out(`  chain        ${devnet.rpcUrl} (chain id ${devnet.chainId}), USDC at ${devnet.usdc}`)
    out(`  facilitator  ${facilitator.url}`)
    out(`  paid API     ${api.url}  (GET /weather $0.001, GET /quote $0.0025, POST /summarize $0.01)`)
    out(`  agent        ${payer.address} pays ${seller.address}`)
    out('')

    const usdc = (atomic: bigint) => `${Money.format(atomic, 6)} USDC`
    const balances = async () => [await devnet.usdcBalance(payer.address), await devnet.usdcBalance(seller.address as Address)] as const
    const agent = wrapFetch(fetch, { account: privateKeyToAccount(payer.privateKey), budget: { perRequest: '$0.05' } })
    let failures = 0
    for (const call of agentCalls) {
      const [payerBefore, sellerBefore] = await balances()
      const started = performance.now()
      const response = await agent(`${api.url}${call.path}`, {
        method: call.method,
        headers: call.body ? { 'content-type': 'application/json' } : undefined,
        body: call.body ? JSON.stringify(call.body) : undefined,
      })
      const body = await response.text()
      const elapsed = Math.round(performance.now() - started)
      const result = getPaymentResult(response)
      const [payerAfter, sellerAfter] = await balances()
      const ok = response.ok && result?.paid === true && result.settlement?.success === true
      if (!ok) failures++
      out(`${ok ? 'paid' : 'FAILED'}  ${call.method} ${call.path}  → ${response.status} in ${elapsed} ms`)
      out(`      response     ${body.length > 160 ? `${body.slice(0, 160)}…` : body}`)
      if (result?.settlement) out(`      transaction  ${result.settlement.transaction}`)
      else out(`      not paid     ${result?.reason ?? 'no payment result'}`)
      out(`      agent        ${usdc(payerBefore)} → ${usdc(payerAfter)}`)
      out(`      seller       ${usdc(sellerBefore)} → ${usdc(sellerAfter)}`)
    }
    out('')
    out(failures === 0 ? `All ${agentCalls.length} calls paid and settled on chain.` : `${failures} of ${agentCalls.length} calls failed.`)
    out(
      JSON.stringify({
        rpcUrl: devnet.rpcUrl,
        chainId: devnet.chainId,
        usdc: devnet.usdc,
        facilitatorUrl: facilitator.url,
        apiUrl: `${api.url}/weather`,
        payerPrivateKey: payer.privateKey,
        payTo: seller.address,
      }),
    )
    if (options.once) {
      await stop()
      return failures === 0 ? 0 : 1
    }
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve)
      process.once('SIGTERM', resolve)
    })
    await stop()
    return 0
  } catch (error) {
    await stop()
    throw error
  }
}
