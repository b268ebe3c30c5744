/**
 * The channel part of `x402 dev`: our `batch-settlement` escrow at its canonical address, a paid route
 * `GET /tick` offered over payment channels (a paywall with an in-process channel facilitator), and an
 * agent that makes thousands of calls over one channel — one deposit, a voucher per call, one claim.
 */
import type { Devnet, DevnetAccount } from '@x402kit/devnet'
import type { Hono } from 'hono'
import type { Abi, Address, Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { type Asset, Money } from 'x402kit'
import { getPaymentResult, wrapFetch } from 'x402kit/client'
import { type BatchSettlementEvmFacilitator, batchSettlementEvmFacilitator, batchSettlementEvmServer, Channel } from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import {
  batchSettlementAbi,
  batchSettlementBytecode,
  erc3009DepositCollectorAbi,
  erc3009DepositCollectorBytecode,
} from '../../../contracts/artifacts/index.ts'

export const tickPrice = '$0.0001'
export const tickRoute = { 'GET /tick': `${tickPrice} USDC, over a payment channel (batch-settlement)` } as const

/** Deploys our escrow and its EIP-3009 collector, and places their code at the canonical addresses. */
export async function placeEscrow(devnet: Devnet): Promise<void> {
  const deploy = async (abi: Abi, bytecode: Hex, args: readonly unknown[] = []) => {
    const hash = await devnet.walletClient(devnet.deployer.privateKey).deployContract({ abi, bytecode, args } as never)
    const { contractAddress } = await devnet.publicClient.waitForTransactionReceipt({ hash })
    return (await devnet.publicClient.getCode({ address: contractAddress! }))!
  }
  await devnet.setCode(Channel.escrowAddress, await deploy(batchSettlementAbi, batchSettlementBytecode))
  await devnet.setCode(
    Channel.erc3009CollectorAddress,
    await deploy(erc3009DepositCollectorAbi, erc3009DepositCollectorBytecode, [Channel.escrowAddress]),
  )
}

/** Adds the channel route to the demo app; its facilitator's signer claims the vouchers. */
export function addChannelRoute(app: Hono, options: { devnet: Devnet; signer: DevnetAccount; payTo: Address; usdc: Asset }) {
  const { devnet, signer } = options
  const channels = batchSettlementEvmFacilitator({
    networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [signer.privateKey] } },
  })
  app.use(
    paywall({
      facilitator: createFacilitator({ schemes: [channels] }),
      payTo: options.payTo,
      network: devnet.network,
      schemes: [batchSettlementEvmServer({ receiverAuthorizer: signer.address })],
      routes: { 'GET /tick': { price: tickPrice, scheme: 'batch-settlement', asset: options.usdc, description: 'One tick of a stream' } },
    }),
  )
  let tick = 0
  app.get('/tick', (c) => c.json({ tick: ++tick }))
  return channels
}

/** The agent's run over one channel: calls, time, what moved and the transactions it took. */
export async function runChannelAgent(options: {
  devnet: Devnet
  channels: BatchSettlementEvmFacilitator
  url: string
  payer: DevnetAccount
  seller: Address
  calls: number
  out: (line: string) => void
}): Promise<boolean> {
  const { devnet, out, calls } = options
  const agent = wrapFetch(fetch, {
    account: privateKeyToAccount(options.payer.privateKey),
    budget: { perRequest: '$0.001' },
    channels: { deposit: '$1' },
  })
  const usdc = (address: Address) => devnet.usdcBalance(address)
  const before = {
    payer: await usdc(options.payer.address),
    seller: await usdc(options.seller),
    block: await devnet.publicClient.getBlockNumber(),
  }
  let served = 0
  let paid = 0n
  const deposits: string[] = []
  const started = performance.now()
  for (let i = 0; i < calls; i++) {
    const response = await agent(options.url)
    await response.arrayBuffer()
    const result = getPaymentResult(response)
    if (response.ok && result?.paid && result.offer) {
      served++
      paid += BigInt(result.offer.amount)
      if (result.channel?.deposit && result.settlement?.transaction) deposits.push(result.settlement.transaction)
    }
  }
  const seconds = (performance.now() - started) / 1000
  const claims = await options.channels.claim()
  const claimed = claims.reduce((sum, claim) => sum + claim.claimed, 0n)
  const claimTransactions = claims.flatMap((claim) => claim.transactions)
  const after = {
    payer: await usdc(options.payer.address),
    seller: await usdc(options.seller),
    block: await devnet.publicClient.getBlockNumber(),
  }
  const [channel] = await agent.channels.list()
  const usd = (atomic: bigint) => `$${Money.format(atomic, 6)}`

  out(
    `channel    GET /tick × ${calls} over one channel → ${served} served in ${seconds.toFixed(2)} s (${Math.round(served / seconds)} calls/s)`,
  )
  out(`      paid         ${usd(paid)} in ${served} cumulative vouchers of ${tickPrice}, the last for ${usd(channel?.signed ?? 0n)}`)
  out(`      deposit      ${deposits.length} of ${usd(channel?.balance ?? 0n)} (gasless EIP-3009): ${deposits.join(', ')}`)
  out(`      claim        ${usd(claimed)} claimed and swept to the seller: ${claimTransactions.join(', ')}`)
  out(
    `      on chain     ${deposits.length + claimTransactions.length} transactions for ${served} calls; blocks ${before.block} → ${after.block}`,
  )
  out(`      agent        ${usd(before.payer)} → ${usd(after.payer)} USDC, ${usd(channel?.held ?? 0n)} still held in the channel`)
  out(`      seller       ${usd(before.seller)} → ${usd(after.seller)} USDC`)
  return (
    served === calls &&
    claimed === paid &&
    after.seller - before.seller === paid &&
    before.payer - after.payer === (channel?.balance ?? -1n)
  )
}
