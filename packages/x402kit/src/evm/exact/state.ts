/**
 * The state of an `exact` EVM facilitator: its configuration, and per network the RPC clients, the
 * signer pool with nonce sequences, and what is cached about tokens and fees.
 */
import {
  type Address,
  type Chain,
  createPublicClient,
  getAddress,
  type Hex,
  type HttpTransport,
  http,
  isAddress,
  type PrivateKeyAccount,
  type PublicClient,
} from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { BaseError } from '../../core/Errors.ts'
import type { Network } from '../../core/Network.ts'
import { chainOf, checkChain as checkChainOnce } from '../Chain.ts'
import * as NonceManager from '../NonceManager.ts'
import type { AdmissionConfig } from './admission.ts'

export type ExactEvmNetworkConfig = {
  rpcUrl: string
  /** Private keys of the accounts that send settlement transactions (and pay their gas). */
  signers: Hex[]
  /** Blocks a settlement waits for before it is reported; default 1. */
  confirmations?: number
  /** Gas limit of a `transferWithAuthorization` signed by a plain key, and of each of `permit` and `transferFrom`; default 120,000. */
  gasLimit?: bigint
  /** How often receipts and blocks are polled; default 250 ms. */
  pollingIntervalMs?: number
  /**
   * A `SettlementBatcher` contract on the network: with it, EIP-3009 payments are settled in batches
   * through the facilitator's settlement pipeline (many payments per transaction).
   */
  batcher?: Address
}

export type ExactEvmFacilitatorConfig = {
  networks: Record<string, ExactEvmNetworkConfig>
  /**
   * Factories whose ERC-6492 deployment calls this facilitator may send for a payer whose wallet is
   * not yet deployed. Default none: such payments are refused with `eip6492_factory_not_allowed`.
   */
  eip6492Factories?: Address[]
  /** Timeout of each RPC request; default 10 s. */
  rpcTimeoutMs?: number
  /** How long a settlement waits for its receipt before it reports `settlement_pending`; default 60 s. */
  receiptTimeoutMs?: number
  /**
   * How long a sent transaction may go without a receipt before it is replaced by the same call at
   * the same nonce with higher fees (at most 3 times); default 6 s.
   */
  replaceAfterMs?: number
  /** How far ahead `validBefore` (or a permit's `deadline`) must be for the payment to settle in time; default 6 s. */
  minValidSeconds?: number
  /**
   * Verification of an EIP-3009 payment from a plain key without a chain call while its payer was
   * seen funded within `maxAgeBlocks` blocks (`admission.ts`); settlement checks the chain in every
   * case. `false`: every verification reads the chain and simulates the transfer. Default `{ maxAgeBlocks: 2 }`.
   */
  admission?: AdmissionConfig | false
}

/** A key that sends settlements, with its nonce sequence and the settlements it has in flight. */
export type SignerState = { account: PrivateKeyAccount; nonces: NonceManager.NonceManager; inFlight: number }

/** What the token says about itself; `name`/`version` are `undefined` where it does not expose them. */
export type TokenInfo = { deployed: boolean; name: string | undefined; version: string | undefined }

/**
 * What an EIP-2612 token says about its domain: `DOMAIN_SEPARATOR` (`undefined`: no permit) and, where
 * it implements ERC-5267 `eip712Domain`, the name and version that separator was built from.
 */
export type PermitTokenInfo = {
  deployed: boolean
  domainSeparator: Hex | undefined
  domain: { name: string; version: string } | undefined
}

export type Fees = { type: 'eip1559'; maxFeePerGas: bigint; maxPriorityFeePerGas: bigint } | { type: 'legacy'; gasPrice: bigint }

/** A signed settlement transaction: enough to sign it again at the same nonce with other fees. */
export type Signed = { signer: SignerState; nonce: number; gas: bigint; to: Address; data: Hex; fees: Fees }

export type NetworkState = {
  network: Network
  chainId: number
  /** Reads: requests made in the same tick go out as one JSON-RPC batch. */
  client: PublicClient<HttpTransport, Chain>
  /**
   * Reads that group themselves (`reads.ts`, the head for `admission.ts`): no transport batching,
   * whose timer would add a millisecond to each.
   */
  reader: PublicClient<HttpTransport, Chain>
  /** Sends: no batching, no automatic retries (the settlement decides what a failed send means). */
  sender: PublicClient<HttpTransport, Chain>
  signers: SignerState[]
  confirmations: number
  gasLimit: bigint
  pollingIntervalMs: number
  tokens: Map<string, Promise<TokenInfo>>
  permitTokens: Map<string, Promise<PermitTokenInfo>>
  fees: { at: number; value: Promise<Fees> } | undefined
  /** The `SettlementBatcher` that batches are sent to, when the network has one. */
  batcher: Address | undefined
  /** What each transaction awaiting its receipt was signed with, so that it can be replaced if it sticks. */
  unmined: Map<string, Signed>
  chainChecked: Promise<void> | undefined
}

export type Context = {
  networks: Map<string, NetworkState>
  factories: Set<string>
  minValidSeconds: number
  receiptTimeoutMs: number
  replaceAfterMs: number
  /** Settlement keys of payments being settled by this instance right now. */
  settling: Set<string>
  admission: AdmissionConfig | false
}

export function createContext(config: ExactEvmFacilitatorConfig): Context {
  const timeout = config.rpcTimeoutMs ?? 10_000
  const networks = new Map<string, NetworkState>()
  for (const [network, entry] of Object.entries(config.networks ?? {})) {
    // Room for six full blocks of base-fee growth, since fee estimates are shared for a moment.
    const { chainId, chain } = chainOf(network, entry?.rpcUrl, (message) => new ConfigError(message), { baseFeeMultiplier: 2 })
    const pollingIntervalMs = entry.pollingIntervalMs ?? 250
    const client = createPublicClient({
      chain,
      transport: http(entry.rpcUrl, { timeout, batch: true }),
      pollingInterval: pollingIntervalMs,
    })
    const reader = createPublicClient({ chain, transport: http(entry.rpcUrl, { timeout }), pollingInterval: pollingIntervalMs })
    const sender = createPublicClient({
      chain,
      transport: http(entry.rpcUrl, { timeout, retryCount: 0 }),
      pollingInterval: pollingIntervalMs,
    })
    const keys = [...new Set((entry.signers ?? []).map((key) => key.toLowerCase() as Hex))]
    const signers = keys.map((key): SignerState => {
      let account: PrivateKeyAccount
      try {
        account = privateKeyToAccount(key)
      } catch (cause) {
        throw new ConfigError(`A signer key of ${network} is not a private key.`, cause)
      }
      const nonces = NonceManager.create(() => client.getTransactionCount({ address: account.address, blockTag: 'pending' }))
      return { account, nonces, inFlight: 0 }
    })
    networks.set(network, {
      network: network as Network,
      chainId,
      client,
      reader,
      sender,
      signers,
      confirmations: Math.max(1, entry.confirmations ?? 1),
      gasLimit: entry.gasLimit ?? 120_000n,
      pollingIntervalMs,
      tokens: new Map(),
      permitTokens: new Map(),
      fees: undefined,
      unmined: new Map(),
      chainChecked: undefined,
      batcher: batcherOf(network, entry.batcher),
    })
  }
  if (networks.size === 0) throw new ConfigError('No network is configured.')
  const factories = new Set<string>()
  for (const factory of config.eip6492Factories ?? []) {
    if (!isAddress(factory, { strict: false })) throw new ConfigError(`"${String(factory).slice(0, 80)}" is not an address.`)
    factories.add(getAddress(factory).toLowerCase())
  }
  return {
    networks,
    factories,
    minValidSeconds: config.minValidSeconds ?? 6,
    receiptTimeoutMs: config.receiptTimeoutMs ?? 60_000,
    replaceAfterMs: config.replaceAfterMs ?? 6_000,
    settling: new Set(),
    admission: config.admission ?? {},
  }
}

function batcherOf(network: string, batcher: unknown): Address | undefined {
  if (batcher === undefined) return undefined
  if (typeof batcher !== 'string' || !isAddress(batcher, { strict: false }))
    throw new ConfigError(`The batcher of ${network} is not an address.`)
  return getAddress(batcher)
}

/** Resolves once the RPC endpoint has been seen to serve the configured chain (checked once). */
export function checkChain(state: NetworkState): Promise<void> {
  return checkChainOnce(state, (message) => new ConfigError(message, undefined, 'Point rpcUrl at a node of that chain.'))
}

export class ConfigError extends BaseError {
  override name = 'ExactEvmConfigError'
  constructor(shortMessage: string, cause?: unknown, hint = 'Check the exactEvmFacilitator configuration.') {
    super(shortMessage, { code: 'invalid_config', hint, cause })
  }
}
