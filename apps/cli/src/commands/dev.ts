/**
 * `x402 dev`: the whole x402 stack on this machine — a local chain with real USDC and a permit-only
 * token, a facilitator with its embedded store, a demo paid API — and an agent that pays for calls
 * every way x402kit can while you watch.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PERMIT_TOKEN_DOMAIN, startDevnet } from '@x402kit/devnet'
import { createLogger, startFacilitatorService } from '@x402kit/facilitator'
import { privateKeyToAccount } from 'viem/accounts'
import { type Asset, Facilitator, Money, Network } from 'x402kit'
import { getPaymentResult, type PaymentResult, wrapFetch } from 'x402kit/client'
import { exactEvmClient, toEvmSigner, txproofClient } from 'x402kit/evm'
import { addChannelRoute, placeEscrow, runChannelAgent, tickRoute } from '../channelDemo.ts'
import { demoRoutes, startDemoApi } from '../demoApi.ts'

export type DevOptions = {
  once?: boolean
  blockTime?: number
  dataDir?: string
  /** Paid calls the agent makes over one channel; default 500 with `once`, else 5,000. */
  channelCalls?: number
  out?: (line: string) => void
}

type Call = { method: 'GET' | 'POST'; path: string; body?: unknown; expect: 'paid' | 'credential' }

const agentCalls: Call[] = [
  { method: 'GET', path: '/weather?city=Lisbon', expect: 'paid' },
  { method: 'GET', path: '/quote', expect: 'paid' },
  {
    method: 'POST',
    path: '/summarize',
    body: { text: 'x402 turns HTTP 402 Payment Required into a way for machines to pay for what they use.' },
    expect: 'paid',
  },
  { method: 'GET', path: '/report', expect: 'paid' },
  { method: 'GET', path: '/archive', expect: 'paid' },
  { method: 'GET', path: '/feed', expect: 'paid' },
  { method: 'GET', path: '/feed', expect: 'credential' },
  { method: 'GET', path: '/feed', expect: 'credential' },
  { method: 'GET', path: '/feed', expect: 'credential' },
]

const issuer = 'urn:x402kit:dev-facilitator'

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
    const [payer, seller, facilitatorSigner, channelSigner] = devnet.accounts as [
      (typeof devnet.accounts)[0],
      (typeof devnet.accounts)[0],
      (typeof devnet.accounts)[0],
      (typeof devnet.accounts)[0],
    ]
    const usdc: Asset = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
    const permitToken: Asset = { address: devnet.permitToken, ...PERMIT_TOKEN_DOMAIN, decimals: 6, symbol: 'PUSD', transfer: 'eip2612' }
    Network.registerAsset(devnet.network, devnet.chainId, permitToken)
    Network.registerAsset(devnet.network, devnet.chainId, usdc)

    const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'x402-dev-')))
    if (!options.dataDir) cleanups.push(() => rm(dataDir, { recursive: true, force: true }))
    const facilitator = await startFacilitatorService(
      {
        port: 0,
        host: '127.0.0.1',
        dataDir,
        // With the batcher, EIP-3009 payments settle through the settlement pipeline, many to a transaction.
        networks: {
          [devnet.network]: {
            rpcUrl: devnet.rpcUrl,
            signers: [facilitatorSigner.privateKey],
            batcher: devnet.batcher,
            pollingIntervalMs: 100,
          },
        },
        credentials: { issuer },
      },
      // The demo's own lines are the output; the service speaks only of faults, on stderr.
      { logger: createLogger({ level: 'error', write: (line) => process.stderr.write(`${line}\n`) }) },
    )
    cleanups.push(() => facilitator.close())
    await placeEscrow(devnet)
    let channels: ReturnType<typeof addChannelRoute> | undefined
    const api = await startDemoApi({
      extend: (app) => {
        channels = addChannelRoute(app, { devnet, signer: channelSigner, payTo: seller.address, usdc })
      },
      facilitatorUrl: facilitator.url,
      issuer,
      spender: facilitatorSigner.address,
      payTo: seller.address,
      network: devnet.network,
      usdc,
      permitToken,
    })
    cleanups.push(() => api.close())
    cleanups.push(async () => channels?.stop())

    out('x402 dev: a local x402 stack')
    out(`  chain        ${devnet.rpcUrl} (chain id ${devnet.chainId}), USDC at ${devnet.usdc}, PUSD at ${devnet.permitToken}`)
    out(`  facilitator  ${facilitator.url}`)
    out(`  paid API     ${api.url}`)
    for (const [route, price] of Object.entries({ ...demoRoutes, ...tickRoute })) out(`                 ${route.padEnd(16)} ${price}`)
    out(`  agent        ${payer.address} pays ${seller.address}`)
    out('')

    const wallet = devnet.walletClient(payer.privateKey)
    const agent = wrapFetch(fetch, {
      schemes: [
        exactEvmClient(await toEvmSigner(privateKeyToAccount(payer.privateKey)), { publicClient: devnet.publicClient }),
        txproofClient({ wallet, publicClient: devnet.publicClient }),
      ],
      budget: { perRequest: '$0.05', perRequestAtomic: { [devnet.permitToken]: Money.parse('0.05', 6) } },
    })
    const balances = async () => ({
      payer: [await devnet.usdcBalance(payer.address), await devnet.tokenBalance(devnet.permitToken, payer.address)] as const,
      seller: [await devnet.usdcBalance(seller.address), await devnet.tokenBalance(devnet.permitToken, seller.address)] as const,
    })
    const show = (pair: readonly [bigint, bigint]) => `${Money.format(pair[0], 6)} USDC, ${Money.format(pair[1], 6)} PUSD`
    let failures = 0
    // Answers released before settlement (after-response routes), and the USDC the seller must end with.
    let owed = 0n
    let expected = (await balances()).seller[0]
    for (const call of agentCalls) {
      const before = await balances()
      const started = performance.now()
      const response = await agent(`${api.url}${call.path}`, {
        method: call.method,
        headers: call.body ? { 'content-type': 'application/json' } : undefined,
        body: call.body ? JSON.stringify(call.body) : undefined,
      })
      const body = await response.text()
      const elapsed = Math.round(performance.now() - started)
      const result = getPaymentResult(response)
      const after = await balances()
      const how = outcome(result)
      if (how === 'paid' && result?.offer?.asset.toLowerCase() === devnet.usdc.toLowerCase()) expected += BigInt(result.offer.amount)
      const ok = response.ok && how === call.expect
      if (!ok) failures++
      out(`${ok ? how.padEnd(10) : 'FAILED    '} ${call.method} ${call.path}  → ${response.status} in ${elapsed} ms`)
      out(`      response     ${body.length > 160 ? `${body.slice(0, 160)}…` : body}`)
      if (result?.settlement?.transaction) out(`      transaction  ${result.settlement.transaction}`)
      if (result?.settlement && Facilitator.isQueued(result.settlement)) {
        owed += BigInt(result.settlement.amount ?? 0)
        out('      settlement   queued: answered before its block, settles in the next batch')
      }
      if (result?.granted)
        out(`      credential   granted for ${result.granted.scope}, ${result.granted.usesLeft ?? 'unlimited'} more uses`)
      if (result?.credential)
        out(`      credential   ${result.credential.usesLeft ?? 'unlimited'} uses left; nothing paid, no facilitator call`)
      if (!ok) out(`      not paid     ${result?.reason ?? 'no payment result'} ${result?.error ?? ''}`)
      out(`      agent        ${show(before.payer)} → ${show(after.payer)}`)
      out(`      seller       ${show(before.seller)} → ${show(after.seller)}`)
    }
    if (owed > 0n) {
      // The queued payments land in a batch: wait until the seller holds every USDC payment made.
      const deadline = Date.now() + 30_000
      while ((await balances()).seller[0] < expected && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200))
      const settled = (await balances()).seller[0] === expected
      if (!settled) failures++
      out(
        `${settled ? 'settled' : 'FAILED'}    ${Money.format(owed, 6)} USDC queued after its response ${settled ? 'reached the seller in a batch' : 'did not settle'}`,
      )
    }
    out('')
    const channelCalls = options.channelCalls ?? (options.once ? 500 : 5_000)
    const channelOk = await runChannelAgent({
      devnet,
      channels: channels!,
      url: `${api.url}/tick`,
      payer,
      seller: seller.address,
      calls: channelCalls,
      out,
    })
    if (!channelOk) failures++
    out('')
    out(
      failures === 0
        ? `All ${agentCalls.length} calls served and every payment settled on chain; ${channelCalls} more over one channel.`
        : `${failures} of ${agentCalls.length} calls failed.`,
    )
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

function outcome(result: PaymentResult | undefined): 'paid' | 'credential' | 'unpaid' {
  if (result?.credential) return 'credential'
  return result?.paid && result.settlement?.success ? 'paid' : 'unpaid'
}
