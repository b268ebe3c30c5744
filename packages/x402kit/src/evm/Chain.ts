/** Chain: what every EVM mechanism checks of its RPC endpoint before it trusts an answer from it. */

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
