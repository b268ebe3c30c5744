/**
 * The state of a `batch-settlement` EVM facilitator: per network the RPC client, the signer (the
 * channels' receiver authorizer) and its one-at-a-time sends; per channel what it holds and has been
 * charged, changed under the channel's own lock.
 */
import {
  type Address,
  type Chain,
  createPublicClient,
  createWalletClient,
  getAddress,
  type Hex,
  type HttpTransport,
  http,
  type PrivateKeyAccount,
  type PublicClient,
} from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { BaseError } from '../../core/Errors.ts'
import type { Network } from '../../core/Network.ts'
import { chainOf } from '../Chain.ts'
import { escrowAbi } from './abi.ts'
import * as Channel from './Channel.ts'
import type { ChannelState } from './check.ts'

export type BatchSettlementEvmNetworkConfig = {
  rpcUrl: string
  /** Private keys that send deposits, claims and sweeps; the first is the receiver authorizer of the channels. */
  signers: Hex[]
  /** The escrow; default the canonical `x402BatchSettlement` address. */
  escrow?: Address
  /** The EIP-3009 deposit collector; default its canonical address. */
  collector?: Address
}

export type BatchSettlementEvmFacilitatorConfig = {
  networks: Record<string, BatchSettlementEvmNetworkConfig>
  /** Claims recorded vouchers every this many milliseconds; default never (call `claim()`). */
  claimIntervalMs?: number
  /** Claims as soon as this much charged value (atomic units, all channels) is unclaimed; default never. */
  claimThreshold?: bigint
  /** How far ahead a deposit's `validBefore` must be; default 6 s. */
  minValidSeconds?: number
  /** Faults of claims run by the timer or the threshold. Default `console.error`. */
  onError?: (error: unknown) => void
}

/** What one round of claims did on a network. */
export type ClaimResult = { network: string; channels: number; claimed: bigint; transactions: Hex[] }

export type NetworkState = {
  network: Network
  chainId: number
  escrow: Address
  collector: Address
  client: PublicClient<HttpTransport, Chain>
  account: PrivateKeyAccount
  /** Transactions of this network's signer are sent one at a time. */
  sending: Promise<unknown>
}

export type Context = {
  networks: Map<string, NetworkState>
  /** Funded channels by id. */
  channels: Map<string, ChannelState>
  locks: Map<string, Promise<unknown>>
  minValidSeconds: number
  /** Charged and not yet claimed, across channels. */
  unclaimed: bigint
  /** Told of each charge, so that claims can follow a value threshold. */
  charged(): void
}

export function createContext(config: BatchSettlementEvmFacilitatorConfig, charged: () => void = () => {}): Context {
  const networks = new Map<string, NetworkState>()
  for (const [network, entry] of Object.entries(config.networks ?? {})) {
    const { chainId, chain } = chainOf(network, entry?.rpcUrl, (message) => new ConfigError(message))
    const key = entry.signers?.[0]
    if (!key) throw new ConfigError(`${network} has no signer key.`)
    networks.set(network, {
      network: network as Network,
      chainId,
      escrow: getAddress(entry.escrow ?? Channel.escrowAddress),
      collector: getAddress(entry.collector ?? Channel.erc3009CollectorAddress),
      client: createPublicClient({ chain, transport: http(entry.rpcUrl, { timeout: 10_000 }), pollingInterval: 100 }),
      account: privateKeyToAccount(key),
      sending: Promise.resolve(),
    })
  }
  if (networks.size === 0) throw new ConfigError('No network is configured.')
  return { networks, channels: new Map(), locks: new Map(), minValidSeconds: config.minValidSeconds ?? 6, unclaimed: 0n, charged }
}

/** Runs `task` after every earlier task of the channel: one state change at a time per channel. */
export function locked<result>(context: Context, id: string, task: () => Promise<result>): Promise<result> {
  const previous = context.locks.get(id) ?? Promise.resolve()
  const run = previous.then(task, task)
  const tail = run.catch(() => undefined)
  context.locks.set(id, tail)
  void tail.then(() => context.locks.get(id) === tail && context.locks.delete(id))
  return run
}

/** Sends a transaction from the network's signer, after its earlier ones, and waits for the receipt. */
export function send(state: NetworkState, data: Hex, to: Address): Promise<{ hash: Hex; success: boolean }> {
  const run = state.sending.then(async () => {
    const wallet = createWalletClient({ account: state.account, chain: state.client.chain, transport: http(state.client.transport.url) })
    const hash = await wallet.sendTransaction({ to, data })
    const receipt = await state.client.waitForTransactionReceipt({ hash, timeout: 60_000 })
    return { hash, success: receipt.status === 'success' }
  })
  state.sending = run.catch(() => undefined)
  return run
}

/** The channel's balance, total claimed and pending withdrawal, as the escrow has them. */
export async function readChannel(state: NetworkState, id: Hex) {
  const at = { address: state.escrow, abi: escrowAbi } as const
  const [[balance, claimed], [pending]] = await Promise.all([
    state.client.readContract({ ...at, functionName: 'channels', args: [id] }),
    state.client.readContract({ ...at, functionName: 'pendingWithdrawals', args: [id] }),
  ])
  return { balance, claimed, closing: pending > 0n }
}

/** The channel's state, read from the escrow the first time it is seen. */
export async function channelOf(context: Context, state: NetworkState, id: Hex, config: Channel.ChannelConfig): Promise<ChannelState> {
  const known = context.channels.get(id)
  if (known) return known
  const { balance, claimed, closing } = await readChannel(state, id)
  const fresh: ChannelState = {
    id,
    config,
    network: state.network,
    balance,
    claimed,
    charged: claimed,
    signedMax: claimed,
    signature: undefined,
    closing,
  }
  // Only funded channels are kept: vouchers for empty ones cannot fill the memory.
  const raced = context.channels.get(id)
  if (raced) return raced
  if (fresh.balance > 0n) context.channels.set(id, fresh)
  return fresh
}

export function messageOf(error: unknown): string {
  return (error instanceof Error ? ((error as { shortMessage?: string }).shortMessage ?? error.message) : String(error)).slice(0, 300)
}

export class ConfigError extends BaseError {
  override name = 'BatchSettlementEvmConfigError'
  constructor(shortMessage: string) {
    super(shortMessage, { code: 'invalid_config', hint: 'Check the batchSettlementEvmFacilitator configuration.' })
  }
}
