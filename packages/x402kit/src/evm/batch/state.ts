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
  type Log,
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
import { type ActionRecord, type BatchSettlementStore, type ChannelRecord, memoryBatchSettlementStore } from './facilitatorStore.ts'

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
  /** Where channels and claim, sweep and refund records are kept; default in memory. */
  store?: BatchSettlementStore
  /** How long claims from several resource servers are gathered into one transaction, in ms; default 25. */
  claimWindowMs?: number
  /** Most voucher rows in one claim transaction; default 100. */
  maxClaimsPerTransaction?: number
  /** Told of each claim, sweep and refund transaction the chain answered (for metrics). */
  onAction?: (event: ActionEvent) => void
}

/** A claim, sweep or refund transaction the chain answered. */
export type ActionEvent = {
  network: string
  kind: 'claim' | 'settle' | 'refund'
  success: boolean
  /** Vouchers in a claim. */
  vouchers: number
  amount: bigint
  gasUsed: bigint
  /** The transaction's effective gas price, in wei. */
  gasPrice: bigint
  transaction: Hex
  /** Per channel of a claim, the value it claimed now. */
  claims: { channelId: Hex; payer: string; receiver: string; token: string; amount: bigint }[]
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
  /** Claims waiting for the next claim transaction (`claimBatch.ts`). */
  pending: import('./claimBatch.ts').ClaimGroup[]
  flushTimer: ReturnType<typeof setTimeout> | undefined
  /** Claim transactions are built one after the other: each reads the chain as the previous one left it. */
  flushing: Promise<void>
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
  store: BatchSettlementStore
  claimWindowMs: number
  maxClaimsPerTransaction: number
  onAction: (event: ActionEvent) => void
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
      pending: [],
      flushTimer: undefined,
      flushing: Promise.resolve(),
    })
  }
  if (networks.size === 0) throw new ConfigError('No network is configured.')
  return {
    networks,
    channels: new Map(),
    locks: new Map(),
    minValidSeconds: config.minValidSeconds ?? 6,
    unclaimed: 0n,
    charged,
    store: config.store ?? memoryBatchSettlementStore(),
    claimWindowMs: config.claimWindowMs ?? 25,
    maxClaimsPerTransaction: config.maxClaimsPerTransaction ?? 100,
    onAction: config.onAction ?? (() => {}),
  }
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
export function send(
  state: NetworkState,
  data: Hex,
  to: Address,
  onSent?: (hash: Hex) => Promise<void>,
): Promise<{ hash: Hex; success: boolean; gasUsed: bigint; gasPrice: bigint; logs: Log[] }> {
  const run = state.sending.then(async () => {
    const wallet = createWalletClient({ account: state.account, chain: state.client.chain, transport: http(state.client.transport.url) })
    const hash = await wallet.sendTransaction({ to, data })
    await onSent?.(hash)
    const receipt = await state.client.waitForTransactionReceipt({ hash, timeout: 60_000 })
    return {
      hash,
      success: receipt.status === 'success',
      gasUsed: receipt.gasUsed,
      gasPrice: receipt.effectiveGasPrice,
      logs: receipt.logs,
    }
  })
  state.sending = run.catch(() => undefined)
  return run
}

/** Writes a new action, `open`, before its transaction is built into a send: a crash after it is reconciled at start. */
export async function openAction(
  context: Context,
  fields: Pick<ActionRecord, 'network' | 'kind' | 'channels' | 'count' | 'amount' | 'receiver' | 'token'>,
): Promise<ActionRecord> {
  const now = Date.now()
  const action: ActionRecord = {
    id: crypto.randomUUID(),
    status: 'open',
    transaction: undefined,
    gasUsed: undefined,
    errorReason: undefined,
    createdAt: now,
    updatedAt: now,
    ...fields,
  }
  await context.store.putAction(action)
  return action
}

export type Sent = Awaited<ReturnType<typeof send>>

/**
 * Sends the transaction of an action already in the store to the escrow: its hash is recorded as soon
 * as it is known, and a send that throws or reverts is recorded as failed with `reason`. `error` reads
 * after the action's name: "The sweep was not sent: …", "The claim reverted."
 */
export async function sendAction(
  context: Context,
  state: NetworkState,
  actionId: string,
  data: Hex,
  reason: string,
): Promise<{ sent: Sent; error?: undefined } | { sent?: Sent; error: string }> {
  const failed = (gasUsed?: bigint) =>
    context.store.updateAction(actionId, {
      status: 'failed',
      errorReason: reason,
      ...(gasUsed !== undefined && { gasUsed }),
      updatedAt: Date.now(),
    })
  let sent: Sent
  try {
    sent = await send(state, data, state.escrow, (hash) =>
      context.store.updateAction(actionId, { transaction: hash, updatedAt: Date.now() }),
    )
  } catch (error) {
    await failed()
    return { error: `was not sent: ${messageOf(error)}` }
  }
  if (sent.success) return { sent }
  await failed(sent.gasUsed)
  return { sent, error: 'reverted.' }
}

/** The channel's balance, total claimed, pending withdrawal and refund nonce, as the escrow has them. */
export async function readChannel(state: NetworkState, id: Hex) {
  const at = { address: state.escrow, abi: escrowAbi } as const
  const [[balance, claimed], [withdrawal, initiatedAt], refundNonce] = await Promise.all([
    state.client.readContract({ ...at, functionName: 'channels', args: [id] }),
    state.client.readContract({ ...at, functionName: 'pendingWithdrawals', args: [id] }),
    state.client.readContract({ ...at, functionName: 'refundNonce', args: [id] }),
  ])
  return { balance, claimed, closing: withdrawal > 0n, withdrawal, withdrawRequestedAt: Number(initiatedAt), refundNonce }
}

/** The channel's claimed total as the escrow has it (one read). */
export async function readClaimed(state: NetworkState, id: Hex): Promise<bigint> {
  const [, claimed] = await state.client.readContract({ address: state.escrow, abi: escrowAbi, functionName: 'channels', args: [id] })
  return claimed
}

/** The channel as the escrow has it, in the form the resource servers read (`extra` of verify and settle). */
export function channelStateExtra(id: Hex, read: Awaited<ReturnType<typeof readChannel>>) {
  return {
    channelId: id,
    balance: read.balance.toString(),
    totalClaimed: read.claimed.toString(),
    withdrawRequestedAt: read.withdrawRequestedAt,
    refundNonce: read.refundNonce.toString(),
  }
}

/** Writes what the facilitator knows of a channel to the store. */
export async function persist(context: Context, channel: ChannelState, read?: Partial<Awaited<ReturnType<typeof readChannel>>>) {
  const known = await context.store.getChannel(channel.id)
  const record: ChannelRecord = {
    id: channel.id,
    network: channel.network,
    config: channel.config,
    balance: channel.balance,
    claimed: channel.claimed,
    charged: larger(channel.charged, channel.claimed),
    signedMax: channel.signedMax,
    signature: channel.signature,
    withdrawal: read?.withdrawal ?? known?.withdrawal ?? 0n,
    withdrawRequestedAt: read?.withdrawRequestedAt ?? known?.withdrawRequestedAt ?? 0,
    refundNonce: read?.refundNonce ?? known?.refundNonce ?? 0n,
    updatedAt: Date.now(),
  }
  await context.store.putChannel(record)
}

/** The channel's state, read from the escrow the first time it is seen. */
export async function channelOf(context: Context, state: NetworkState, id: Hex, config: Channel.ChannelConfig): Promise<ChannelState> {
  const known = context.channels.get(id)
  if (known) return known
  const [read, stored] = await Promise.all([readChannel(state, id), context.store.getChannel(id)])
  const { balance, claimed, closing } = read
  // What was charged and the voucher held survive a restart in the store; the chain has the rest.
  const charged = stored?.charged !== undefined && stored.charged > claimed ? stored.charged : claimed
  const fresh: ChannelState = {
    id,
    config,
    network: state.network,
    balance,
    claimed,
    charged,
    signedMax: stored && stored.signedMax > claimed ? stored.signedMax : claimed,
    signature: stored && stored.signedMax > claimed ? stored.signature : undefined,
    closing,
    withdrawRequestedAt: read.withdrawRequestedAt,
    refundNonce: read.refundNonce,
  }
  // Only funded channels are kept: vouchers for empty ones cannot fill the memory.
  const raced = context.channels.get(id)
  if (raced) return raced
  if (fresh.balance > 0n) context.channels.set(id, fresh)
  return fresh
}

/** The larger and the smaller of two amounts (`Math.max` and `Math.min` take no bigint). */
export function larger(a: bigint, b: bigint): bigint {
  if (a > b) return a
  return b
}
export function smaller(a: bigint, b: bigint): bigint {
  if (a < b) return a
  return b
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
