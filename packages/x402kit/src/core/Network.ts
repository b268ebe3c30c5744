/**
 * Networks: CAIP-2 identifiers (`eip155:<chainId>`), the version 1 names, and each network's default
 * stablecoin with its EIP-712 domain. Chain ids and token addresses are public facts of each chain.
 */
import { BaseError } from './Errors.ts'

export type Network = `${string}:${string}`

export type Asset = {
  address: `0x${string}`
  /** EIP-712 domain name of the token. */
  name: string
  /** EIP-712 domain version of the token. */
  version: string
  decimals: number
  symbol: string
  /** How a signed transfer of this token is settled. */
  transfer: 'eip3009' | 'eip2612' | 'permit2'
}

export type NetworkInfo = {
  network: Network
  chainId: number
  /** The version 1 name, where version 1 knows this network. */
  v1Name?: string
  assets: Asset[]
}

const usdc = (address: `0x${string}`, name = 'USD Coin'): Asset => ({
  address,
  name,
  version: '2',
  decimals: 6,
  symbol: 'USDC',
  transfer: 'eip3009',
})

const table: NetworkInfo[] = [
  { network: 'eip155:8453', chainId: 8453, v1Name: 'base', assets: [usdc('0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913')] },
  { network: 'eip155:84532', chainId: 84532, v1Name: 'base-sepolia', assets: [usdc('0x036CbD53842c5426634e7929541eC2318f3dCF7e', 'USDC')] },
  { network: 'eip155:1', chainId: 1, v1Name: 'ethereum', assets: [usdc('0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48')] },
  { network: 'eip155:11155111', chainId: 11155111, v1Name: 'sepolia', assets: [] },
  { network: 'eip155:43114', chainId: 43114, v1Name: 'avalanche', assets: [usdc('0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E')] },
  { network: 'eip155:43113', chainId: 43113, v1Name: 'avalanche-fuji', assets: [] },
  { network: 'eip155:137', chainId: 137, v1Name: 'polygon', assets: [usdc('0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359')] },
  { network: 'eip155:80002', chainId: 80002, v1Name: 'polygon-amoy', assets: [] },
  { network: 'eip155:42161', chainId: 42161, assets: [usdc('0xaf88d065e77c8cC2239327C5EDb3A432268e5831')] },
  { network: 'eip155:421614', chainId: 421614, assets: [usdc('0x75faf114eafb1BDbe2F0316DF893fd58CE46AA4d')] },
  { network: 'eip155:1329', chainId: 1329, v1Name: 'sei', assets: [usdc('0xe15fC38F6D8c56aF07bbCBe3BAf5708A2Bf42392', 'USDC')] },
  { network: 'eip155:1328', chainId: 1328, v1Name: 'sei-testnet', assets: [usdc('0x4fCF1784B31630811181f670Aea7A7bEF803eaED', 'USDC')] },
  { network: 'eip155:143', chainId: 143, v1Name: 'monad', assets: [usdc('0x754704Bc059F8C67012fEd69BC8A327a5aafb603', 'USDC')] },
  { network: 'eip155:42220', chainId: 42220, v1Name: 'celo', assets: [usdc('0xcebA9300f2b948710d2653dD7B07f33A8B32118C', 'USDC')] },
  { network: 'eip155:11142220', chainId: 11142220, assets: [usdc('0x01C5C0122039549AD1493B8220cABEdD739BC44E', 'USDC')] },
  { network: 'eip155:50', chainId: 50, assets: [usdc('0xfA2958CB79b0491CC627c1557F441eF849Ca8eb1', 'USDC')] },
  { network: 'eip155:51', chainId: 51, assets: [usdc('0xb5AB69F7bBada22B28e79C8FFAECe55eF1c771D4', 'USDC')] },
  {
    network: 'eip155:36900',
    chainId: 36900,
    assets: [{ ...usdc('0x9cb8142aEBBcdc60AF7c97Af897A67A8f3CA71C2', 'USDC.e'), symbol: 'USDC.e' }],
  },
  {
    network: 'eip155:190415',
    chainId: 190415,
    assets: [{ ...usdc('0x401eCb1D350407f13ba348573E5630B83638E30D', 'Bridged USDC'), symbol: 'USDC.e' }],
  },
  {
    network: 'eip155:181228',
    chainId: 181228,
    assets: [{ ...usdc('0x401eCb1D350407f13ba348573E5630B83638E30D', 'Bridged USDC'), symbol: 'USDC.e' }],
  },
  {
    network: 'eip155:988',
    chainId: 988,
    v1Name: 'stable',
    assets: [
      {
        address: '0x779Ded0c9e1022225f8E0630b35a9b54bE713736',
        name: 'USDT0',
        version: '1',
        decimals: 6,
        symbol: 'USDT0',
        transfer: 'eip3009',
      },
    ],
  },
  {
    network: 'eip155:2201',
    chainId: 2201,
    v1Name: 'stable-testnet',
    assets: [
      {
        address: '0x78Cf24370174180738C5B8E352B6D14c83a6c9A9',
        name: 'USDT0',
        version: '1',
        decimals: 6,
        symbol: 'USDT0',
        transfer: 'eip3009',
      },
    ],
  },
  {
    network: 'eip155:14',
    chainId: 14,
    v1Name: 'flare',
    assets: [
      {
        address: '0xe7cd86e13AC4309349F30B3435a9d337750fC82D',
        name: 'USD\u20ae0',
        version: '1',
        decimals: 6,
        symbol: 'USDT0',
        transfer: 'eip3009',
      },
    ],
  },
  { network: 'eip155:4326', chainId: 4326, v1Name: 'megaeth', assets: [] },
  { network: 'eip155:2741', chainId: 2741, v1Name: 'abstract', assets: [] },
  { network: 'eip155:11124', chainId: 11124, v1Name: 'abstract-testnet', assets: [] },
  { network: 'eip155:4689', chainId: 4689, v1Name: 'iotex', assets: [] },
  { network: 'eip155:3338', chainId: 3338, v1Name: 'peaq', assets: [] },
  { network: 'eip155:1514', chainId: 1514, v1Name: 'story', assets: [] },
  { network: 'eip155:41923', chainId: 41923, v1Name: 'educhain', assets: [] },
  { network: 'eip155:324705682', chainId: 324705682, v1Name: 'skale-base-sepolia', assets: [] },
  // The local development chain: `@x402kit/devnet` deploys USDC from a fixed account at a fixed nonce,
  // so it always lands here; another deployment can be added with `registerAsset`.
  { network: 'eip155:31337', chainId: 31337, v1Name: 'localhost', assets: [usdc('0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0')] },
]

const byNetwork = new Map<string, NetworkInfo>(table.map((info) => [info.network, info]))
const byV1Name = new Map<string, NetworkInfo>(table.flatMap((info) => (info.v1Name ? [[info.v1Name, info] as const] : [])))

export class UnknownNetworkError extends BaseError {
  override name = 'UnknownNetworkError'
  constructor(network: string) {
    super(`Unknown network "${network.slice(0, 80)}".`, {
      code: 'invalid_network',
      hint: 'Use a CAIP-2 identifier such as "eip155:8453", or a version 1 name such as "base".',
    })
  }
}

const caip2 = /^eip155:(\d{1,12})$/

/**
 * Resolves a CAIP-2 identifier or a version 1 name to the network's facts. Any `eip155:<id>` is
 * accepted even when not in the table (with no default assets).
 *
 * @example
 * ```ts
 * import { Network } from 'x402kit'
 * Network.get('base').network // 'eip155:8453'
 * ```
 */
export function get(network: string): NetworkInfo {
  const info = byNetwork.get(network) ?? byV1Name.get(network)
  if (info) return info
  const match = caip2.exec(network)
  if (match) return { network: network as Network, chainId: Number(match[1]), assets: [] }
  throw new UnknownNetworkError(network)
}

/** Like `get`, but `undefined` for an unknown network. */
export function find(network: string): NetworkInfo | undefined {
  try {
    return get(network)
  } catch {
    return undefined
  }
}

/** The CAIP-2 identifier of a network given either way. */
export function toCaip2(network: string): Network {
  return get(network).network
}

/** The version 1 name of a network; throws when version 1 has none for it. */
export function toV1Name(network: string): string {
  const info = get(network)
  if (!info.v1Name) throw new BaseError(`Network ${info.network} has no version 1 name.`, { code: 'invalid_network' })
  return info.v1Name
}

/** The chain id of an `eip155` network. */
export function chainId(network: string): number {
  return get(network).chainId
}

/** The default asset (first listed) of a network, or the asset at `address` among its known ones. */
export function asset(network: string, address?: string): Asset | undefined {
  const { assets } = get(network)
  if (address === undefined) return assets[0]
  const wanted = address.toLowerCase()
  return assets.find((a) => a.address.toLowerCase() === wanted)
}

/**
 * Registers an asset for a network (or a whole network), as the local chain does once it has
 * deployed its token. The newest registration of an address wins.
 */
export function registerAsset(network: Network, chain: number, entry: Asset): void {
  const info = byNetwork.get(network) ?? { network, chainId: chain, assets: [] }
  info.assets = [entry, ...info.assets.filter((a) => a.address.toLowerCase() !== entry.address.toLowerCase())]
  byNetwork.set(network, info)
  if (info.v1Name) byV1Name.set(info.v1Name, info)
}

/** All known networks. */
export function list(): NetworkInfo[] {
  return [...byNetwork.values()]
}
