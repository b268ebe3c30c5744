/**
 * Chain: how every EVM mechanism reads a configured network (a CAIP-2 `eip155:<id>` and an http(s)
 * RPC URL), and what it checks of the RPC endpoint before it trusts an answer from it.
 */
import { type Chain, type ChainFees, defineChain } from 'viem'

const caip2 = /^eip155:(\d{1,12})$/

/**
 * The chain of a configured network, its id, and its checked RPC URL; `invalid` builds the error for
 * a network that is not eip155 CAIP-2 or a URL that is not http(s).
 */
export function chainOf(
  network: string,
  rpcUrl: unknown,
  invalid: (message: string) => Error,
  fees?: ChainFees,
): { chainId: number; chain: Chain; rpcUrl: string } {
  const match = caip2.exec(network)
  if (!match) throw invalid(`"${network.slice(0, 80)}" is not an eip155 CAIP-2 network.`)
  if (typeof rpcUrl !== 'string' || !/^https?:\/\//.test(rpcUrl)) throw invalid(`The RPC URL of ${network} must be an http(s) URL.`)
  const chainId = Number(match[1])
  const chain = defineChain({
    id: chainId,
    name: network,
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [rpcUrl] } },
    ...(fees && { fees }),
  })
  return { chainId, chain, rpcUrl }
}

export type CheckedChain = {
  network: string
  chainId: number
  client: { getChainId(): Promise<number> }
  chainChecked: Promise<void> | undefined
}

/**
 * Resolves once the RPC endpoint has been seen to serve the configured chain: checked once, and asked
 * again after a failed attempt. `mismatch` builds the error for an endpoint of another chain.
 */
export function checkChain(state: CheckedChain, mismatch: (message: string) => Error): Promise<void> {
  state.chainChecked ??= state.client.getChainId().then(
    (id) => {
      if (id !== state.chainId) throw mismatch(`The RPC endpoint of ${state.network} serves chain ${id}.`)
    },
    (error) => {
      state.chainChecked = undefined
      throw error
    },
  )
  return state.chainChecked
}
