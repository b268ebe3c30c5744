/**
 * Shared setup of the channel client suites: our escrow's code and an EIP-3009 collector built for it
 * at their canonical addresses, USDC registered for the local chain, and a shop — our paywall with an
 * in-process facilitator — that offers `batch-settlement` (and optionally `exact`) for `GET /quote`.
 */
import type { Devnet } from '@x402kit/devnet'
import { Hono } from 'hono'
import type { Abi, Address, Hex } from 'viem'
import { type Asset, HttpHeader, Network, PaymentPayload } from 'x402kit'
import {
  type BatchSettlementEvmFacilitator,
  batchSettlementEvmFacilitator,
  batchSettlementEvmServer,
  Channel,
  exactEvmFacilitator,
  exactEvmServer,
} from 'x402kit/evm'
import { createFacilitator } from 'x402kit/facilitator'
import { paywall } from 'x402kit/hono'
import {
  batchSettlementAbi,
  batchSettlementBytecode,
  erc3009DepositCollectorAbi,
  erc3009DepositCollectorBytecode,
} from '../contracts/artifacts/index.ts'

export { batchSettlementAbi }

async function deploy(devnet: Devnet, abi: Abi, bytecode: Hex, args: readonly unknown[] = []): Promise<Address> {
  const hash = await devnet.walletClient(devnet.deployer.privateKey).deployContract({ abi, bytecode, args } as never)
  const { contractAddress } = await devnet.publicClient.waitForTransactionReceipt({ hash })
  return contractAddress!
}

/** Places our escrow and its collector at the canonical addresses, and registers USDC; returns the asset. */
export async function placeEscrow(devnet: Devnet): Promise<Asset> {
  const escrow = await deploy(devnet, batchSettlementAbi, batchSettlementBytecode)
  await devnet.setCode(Channel.escrowAddress, (await devnet.publicClient.getCode({ address: escrow }))!)
  const collector = await deploy(devnet, erc3009DepositCollectorAbi, erc3009DepositCollectorBytecode, [Channel.escrowAddress])
  await devnet.setCode(Channel.erc3009CollectorAddress, (await devnet.publicClient.getCode({ address: collector }))!)
  const usdc: Asset = { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' }
  Network.registerAsset(devnet.network, devnet.chainId, usdc)
  return usdc
}

export type Shop = {
  app: Hono
  channels: BatchSettlementEvmFacilitator
  /** Requests the handler served. */
  served: () => number
  /** Requests the shop was sent through `fetch`, paid or not. */
  requests: () => number
  /** Every payload the shop was sent, in order. */
  payloads: { type?: string; voucher?: { maxClaimableAmount: string }; [key: string]: unknown }[]
  /** The shop as a fetch, recording the payloads. */
  fetch: typeof fetch
  stop(): void
}

/** Our paywall and facilitator, offering `batch-settlement` (and `exact` too with `exact: true`) for `GET /quote`. */
export function startShop(
  devnet: Devnet,
  options: {
    usdc: Asset
    payTo: Address
    authorizerKey: Hex
    authorizer: Address
    price: bigint
    minDeposit?: bigint
    exact?: boolean
    extra?: Record<string, unknown>
  },
): Shop {
  const rpc = { rpcUrl: devnet.rpcUrl, signers: [options.authorizerKey] }
  const channels = batchSettlementEvmFacilitator({ networks: { [devnet.network]: rpc } })
  const schemes = options.exact ? [channels, exactEvmFacilitator({ networks: { [devnet.network]: rpc } })] : [channels]
  const price = { atomic: options.price.toString() }
  const batch = { price, scheme: 'batch-settlement', asset: options.usdc, ...(options.extra && { extra: options.extra }) }
  const app = new Hono()
  app.use(
    paywall({
      facilitator: createFacilitator({ schemes }),
      payTo: options.payTo,
      network: devnet.network,
      schemes: [batchSettlementEvmServer({ receiverAuthorizer: options.authorizer, minDeposit: options.minDeposit }), exactEvmServer()],
      routes: { 'GET /quote': options.exact ? { accepts: [{ price, scheme: 'exact', asset: options.usdc }, batch] } : batch },
    }),
  )
  let served = 0
  app.get('/quote', (c) => {
    served++
    return c.json({ symbol: 'ETH', usd: 3_000 })
  })
  const payloads: Shop['payloads'] = []
  let requests = 0
  return {
    app,
    channels,
    served: () => served,
    requests: () => requests,
    payloads,
    fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init)
      requests++
      const header = request.headers.get(HttpHeader.paymentSignature)
      if (header) payloads.push(PaymentPayload.decode(header).payload as Shop['payloads'][number])
      return app.request(request)
    }) as typeof fetch,
    stop: () => channels.stop(),
  }
}

/** The escrow's record of a channel. */
export async function escrowChannel(devnet: Devnet, id: Hex) {
  const [balance, totalClaimed] = await devnet.publicClient.readContract({
    address: Channel.escrowAddress,
    abi: batchSettlementAbi,
    functionName: 'channels',
    args: [id],
  })
  return { balance, totalClaimed }
}
