/**
 * The facilitator's part of `batch-settlement` on EVM (x402 `specs/schemes/batch-settlement/`): a
 * deposit is checked and sent to the escrow through the EIP-3009 collector; a voucher is checked
 * against the channel's state without a chain call and recorded; recorded vouchers are claimed in
 * one `claim` across channels, and the claimed value swept to each receiver with `settle`.
 *
 * Each channel's state changes under its own lock, and a payment is checked again under it before
 * it is charged: two requests cannot both spend the same increment.
 */
import {
  type Address,
  type Chain,
  createPublicClient,
  createWalletClient,
  defineChain,
  encodeFunctionData,
  getAddress,
  type Hex,
  type HttpTransport,
  hashTypedData,
  http,
  isAddressEqual,
  type PrivateKeyAccount,
  type PublicClient,
} from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { BaseError, Reason } from '../../core/Errors.ts'
import type { Payment, SettleResponse, VerifyResponse } from '../../core/Facilitator.ts'
import type { Network } from '../../core/Network.ts'
import type { SchemeFacilitator } from '../../core/Scheme.ts'
import { recoverAddress } from '../recover.ts'
import { escrowAbi } from './abi.ts'
import * as Channel from './Channel.ts'
import { binding, type ChannelState, charge, type Refusal } from './check.ts'

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
  /** How far ahead a deposit's `validBefore` must be; default 6 s. */
  minValidSeconds?: number
}

/** What one round of claims did, per network. */
export type ClaimResult = { network: string; channels: number; claimed: bigint; transactions: Hex[] }

export type BatchSettlementEvmFacilitator = SchemeFacilitator & {
  /** Claims every channel's charged value not yet claimed, in one transaction per network, then sweeps it to the receivers. */
  claim(): Promise<ClaimResult[]>
  /** What the facilitator knows of a channel. */
  channel(channelId: Hex): Readonly<ChannelState> | undefined
  /** Stops the claim timer. */
  stop(): void
}

type NetworkState = {
  network: Network
  chainId: number
  escrow: Address
  collector: Address
  client: PublicClient<HttpTransport, Chain>
  account: PrivateKeyAccount
  /** Transactions of this network's signer are sent one at a time. */
  sending: Promise<unknown>
}

const caip2 = /^eip155:(\d{1,12})$/

/**
 * `batch-settlement` on EVM for a facilitator.
 *
 * @example
 * ```ts
 * import { batchSettlementEvmFacilitator } from 'x402kit/evm'
 * import { createFacilitator } from 'x402kit/facilitator'
 * const channels = batchSettlementEvmFacilitator({ networks: { 'eip155:8453': { rpcUrl, signers: [key] } }, claimIntervalMs: 60_000 })
 * const facilitator = createFacilitator({ schemes: [channels] })
 * ```
 */
export function batchSettlementEvmFacilitator(config: BatchSettlementEvmFacilitatorConfig): BatchSettlementEvmFacilitator {
  const networks = new Map<string, NetworkState>()
  for (const [network, entry] of Object.entries(config.networks)) {
    const match = caip2.exec(network)
    if (!match) throw new ConfigError(`"${network.slice(0, 80)}" is not an eip155 CAIP-2 network.`)
    const key = entry.signers?.[0]
    if (!key) throw new ConfigError(`${network} has no signer key.`)
    const chainId = Number(match[1])
    const chain = defineChain({
      id: chainId,
      name: network,
      nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
      rpcUrls: { default: { http: [entry.rpcUrl] } },
    })
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
  const minValidSeconds = config.minValidSeconds ?? 6
  const channels = new Map<string, ChannelState>()
  const locks = new Map<string, Promise<unknown>>()

  /** Runs `task` after every earlier task of the channel: one state change at a time per channel. */
  function locked<result>(id: string, task: () => Promise<result>): Promise<result> {
    const previous = locks.get(id) ?? Promise.resolve()
    const run = previous.then(task, task)
    const tail = run.catch(() => undefined)
    locks.set(id, tail)
    void tail.then(() => locks.get(id) === tail && locks.delete(id))
    return run
  }

  async function send(state: NetworkState, data: Hex, to: Address): Promise<{ hash: Hex; success: boolean }> {
    const run = state.sending.then(async () => {
      const wallet = createWalletClient({ account: state.account, chain: state.client.chain, transport: http(state.client.transport.url) })
      const hash = await wallet.sendTransaction({ to, data })
      const receipt = await state.client.waitForTransactionReceipt({ hash, timeout: 60_000 })
      return { hash, success: receipt.status === 'success' }
    })
    state.sending = run.catch(() => undefined)
    return run
  }

  /** The channel's state, read from the escrow the first time it is seen. */
  async function channelOf(state: NetworkState, id: Hex, config: Channel.ChannelConfig): Promise<ChannelState> {
    const known = channels.get(id)
    if (known) return known
    const at = { address: state.escrow, abi: escrowAbi } as const
    const [[balance, claimed], [pending]] = await Promise.all([
      state.client.readContract({ ...at, functionName: 'channels', args: [id] }),
      state.client.readContract({ ...at, functionName: 'pendingWithdrawals', args: [id] }),
    ])
    const fresh: ChannelState = {
      id,
      config,
      network: state.network,
      balance,
      claimed,
      charged: claimed,
      signedMax: claimed,
      signature: undefined,
      closing: pending > 0n,
    }
    // Only funded channels are kept: vouchers for empty ones cannot fill the memory.
    const raced = channels.get(id)
    if (raced) return raced
    if (fresh.balance > 0n) channels.set(id, fresh)
    return fresh
  }

  type Checked =
    | { ok: true; state: NetworkState; payload: Channel.Payload; channel: ChannelState; price: bigint }
    | { ok: false; refusal: Refusal }

  /** Every check of a payment; the chain is asked only for a deposit and a channel seen for the first time. */
  async function check(payment: Payment): Promise<Checked> {
    const refuse = (reason: Reason, message: string): Checked => ({ ok: false, refusal: { reason, message } })
    const { requirements, payload: sent } = payment
    if (requirements.scheme !== Channel.scheme || sent.accepted.scheme !== Channel.scheme)
      return refuse(Reason.batchScheme, 'The payment is not for batch-settlement.')
    if (sent.accepted.network !== requirements.network)
      return refuse(Reason.batchNetworkMismatch, `The payment is for ${sent.accepted.network}, the offer for ${requirements.network}.`)
    const state = networks.get(requirements.network)
    if (!state) return refuse(Reason.invalidNetwork, `This facilitator does not serve ${requirements.network}.`)
    const type = (sent.payload as { type?: unknown }).type
    if (type !== 'deposit' && type !== 'voucher')
      return refuse(Reason.batchPayloadType, 'Only deposit and voucher payloads pay for a request.')
    const parsed = Channel.payload.safeParse(sent.payload)
    if (!parsed.success) return refuse(Reason.invalidPayload, parsed.error.issues[0]?.message ?? 'The payload is malformed.')
    const payload = parsed.data
    if (!isAddressEqual(payload.channelConfig.receiverAuthorizer, state.account.address))
      return refuse(Reason.batchReceiverAuthorizerMismatch, "The channel's receiver authorizer is not this facilitator's signer.")
    const bound = binding(payload, requirements, { chainId: state.chainId, escrow: state.escrow })
    if (bound) return { ok: false, refusal: bound }
    const price = BigInt(requirements.amount)

    let deposit = 0n
    if (payload.type === 'deposit') {
      const refusal = await checkDeposit(state, payload, requirements.extra ?? {})
      if (refusal) return { ok: false, refusal }
      deposit = payload.deposit.amount
    }
    let channel: ChannelState
    try {
      channel = await channelOf(state, payload.voucher.channelId, payload.channelConfig)
    } catch (error) {
      return refuse(Reason.batchRpcReadFailed, `The channel could not be read: ${messageOf(error)}`)
    }
    if (payload.type === 'voucher' && channel.balance === 0n)
      return refuse(Reason.batchChannelNotFound, 'The channel has no deposit; open it with a deposit payload.')
    const refusal = charge(channel, payload.voucher.maxClaimableAmount, price, deposit)
    if (refusal) return { ok: false, refusal }
    return { ok: true, state, payload, channel, price }
  }

  async function checkDeposit(
    state: NetworkState,
    payload: Channel.DepositPayload,
    extra: Record<string, unknown>,
  ): Promise<Refusal | undefined> {
    const { channelConfig: config, voucher, deposit } = payload
    const authorization = deposit.authorization.erc3009Authorization
    if (typeof extra.name !== 'string' || typeof extra.version !== 'string')
      return { reason: Reason.batchMissingEip712Domain, message: "The offer lacks the token's EIP-712 name and version." }
    const now = BigInt(Math.floor(Date.now() / 1000))
    if (authorization.validBefore < now + BigInt(minValidSeconds))
      return { reason: Reason.batchValidBefore, message: 'The deposit authorization expires too soon to be sent.' }
    if (authorization.validAfter > now) return { reason: Reason.batchValidAfter, message: 'The deposit authorization is not valid yet.' }
    const digest = hashTypedData({
      domain: { name: extra.name, version: extra.version, chainId: state.chainId, verifyingContract: config.token },
      types: Channel.receiveWithAuthorizationTypes,
      primaryType: 'ReceiveWithAuthorization',
      message: {
        from: config.payer,
        to: state.collector,
        value: deposit.amount,
        validAfter: authorization.validAfter,
        validBefore: authorization.validBefore,
        nonce: Channel.depositNonce(voucher.channelId, authorization.salt),
      },
    })
    let signer: Address | undefined
    try {
      signer = recoverAddress(digest, authorization.signature)
    } catch {
      signer = undefined
    }
    if (!signer || !isAddressEqual(signer, config.payer))
      return { reason: Reason.batchReceiveAuthorizationSignature, message: 'The deposit authorization is not signed by the payer.' }
    try {
      await state.client.call({ account: state.account, to: state.escrow, data: depositCall(state, payload) })
    } catch (error) {
      return { reason: Reason.batchDepositSimulationFailed, message: `The deposit would revert: ${messageOf(error)}` }
    }
    return undefined
  }

  function depositCall(state: NetworkState, payload: Channel.DepositPayload): Hex {
    return encodeFunctionData({
      abi: escrowAbi,
      functionName: 'deposit',
      args: [
        payload.channelConfig,
        payload.deposit.amount,
        state.collector,
        Channel.collectorData(payload.deposit.authorization.erc3009Authorization),
      ],
    })
  }

  async function verify(payment: Payment): Promise<VerifyResponse> {
    const checked = await check(payment)
    if (!checked.ok) return { isValid: false, invalidReason: checked.refusal.reason, invalidMessage: checked.refusal.message }
    return { isValid: true, payer: checked.payload.channelConfig.payer }
  }

  async function settle(payment: Payment): Promise<SettleResponse> {
    const { network } = payment.requirements
    const fail = (reason: string, message: string, transaction = ''): SettleResponse => ({
      success: false,
      errorReason: reason,
      errorMessage: message,
      transaction,
      network,
    })
    const id = (payment.payload.payload as { voucher?: { channelId?: unknown } }).voucher?.channelId
    if (typeof id !== 'string') return fail(Reason.invalidPayload, 'The payload names no channel.')
    return locked(id.toLowerCase(), async () => {
      const checked = await check(payment)
      if (!checked.ok) return fail(checked.refusal.reason, checked.refusal.message)
      const { state, payload, channel, price } = checked
      let transaction = ''
      if (payload.type === 'deposit') {
        let sent: { hash: Hex; success: boolean }
        try {
          sent = await send(state, depositCall(state, payload), state.escrow)
        } catch (error) {
          return fail(Reason.batchDepositTransactionFailed, `The deposit was not sent: ${messageOf(error)}`)
        }
        if (!sent.success) return fail(Reason.batchDepositTransactionFailed, 'The deposit reverted.', sent.hash)
        channel.balance += payload.deposit.amount
        channels.set(channel.id, channel)
        transaction = sent.hash
      }
      channel.charged += price
      channel.signedMax = payload.voucher.maxClaimableAmount
      channel.signature = payload.voucher.signature
      return {
        success: true,
        transaction,
        network,
        payer: payload.channelConfig.payer,
        amount: price.toString(),
        extra: {
          chargedAmount: price.toString(),
          channelState: {
            channelId: channel.id,
            balance: channel.balance.toString(),
            totalClaimed: channel.claimed.toString(),
            chargedCumulativeAmount: channel.charged.toString(),
          },
        },
      }
    })
  }

  /**
   * Reads each channel's balance and pending withdrawal again: a payer who started to withdraw is
   * refused from here on, and the claim comes before the withdrawal delay ends.
   */
  async function refresh(state: NetworkState): Promise<void> {
    const at = { address: state.escrow, abi: escrowAbi } as const
    const known = [...channels.values()].filter((channel) => channel.network === state.network)
    await Promise.all(
      known.map(async (channel) => {
        const [[balance], [pending]] = await Promise.all([
          state.client.readContract({ ...at, functionName: 'channels', args: [channel.id] }),
          state.client.readContract({ ...at, functionName: 'pendingWithdrawals', args: [channel.id] }),
        ])
        channel.balance = balance
        channel.closing = pending > 0n
      }),
    )
  }

  async function claim(): Promise<ClaimResult[]> {
    const results: ClaimResult[] = []
    for (const state of networks.values()) {
      await refresh(state)
      // A consistent snapshot: each row's voucher covers its total, taken in one synchronous pass.
      const rows = [...channels.values()]
        .filter((channel) => channel.network === state.network && channel.charged > channel.claimed && channel.signature)
        .map((channel) => ({ channel, total: channel.charged, max: channel.signedMax, signature: channel.signature as Hex }))
      if (rows.length === 0) continue
      const data = encodeFunctionData({
        abi: escrowAbi,
        functionName: 'claim',
        args: [
          rows.map(({ channel, total, max, signature }) => ({
            voucher: { channel: channel.config, maxClaimableAmount: max },
            signature,
            totalClaimed: total,
          })),
        ],
      })
      const claimed = await send(state, data, state.escrow)
      if (!claimed.success) throw new BaseError('The claim reverted.', { code: 'claim_reverted', details: claimed.hash })
      let value = 0n
      for (const { channel, total } of rows) {
        if (total > channel.claimed) {
          value += total - channel.claimed
          channel.claimed = total
        }
      }
      const transactions = [claimed.hash]
      const receivers = new Map(rows.map(({ channel }) => [`${channel.config.receiver}:${channel.config.token}`, channel.config]))
      for (const { receiver, token } of receivers.values()) {
        const swept = await send(
          state,
          encodeFunctionData({ abi: escrowAbi, functionName: 'settle', args: [receiver, token] }),
          state.escrow,
        )
        if (!swept.success) throw new BaseError('The sweep reverted.', { code: 'settle_reverted', details: swept.hash })
        transactions.push(swept.hash)
      }
      results.push({ network: state.network, channels: rows.length, claimed: value, transactions })
    }
    return results
  }

  let claiming: Promise<unknown> = Promise.resolve()
  const timer =
    config.claimIntervalMs === undefined
      ? undefined
      : setInterval(() => {
          claiming = claiming.then(claim).catch(() => undefined)
        }, config.claimIntervalMs)
  timer?.unref?.()

  return {
    scheme: Channel.scheme,
    networks: [...networks.keys()] as Network[],
    verify,
    settle,
    settlementKey(payment) {
      const voucher = (payment.payload.payload as { voucher?: { channelId?: unknown; maxClaimableAmount?: unknown } }).voucher
      if (typeof voucher?.channelId !== 'string' || typeof voucher.maxClaimableAmount !== 'string') return undefined
      return `${Channel.scheme}:${payment.requirements.network}:${voucher.channelId.toLowerCase()}:${voucher.maxClaimableAmount}`
    },
    alreadyUsedReason: Reason.batchVoucherAlreadyUsed,
    signers: (network) => {
      const state = networks.get(network)
      return state ? [state.account.address] : []
    },
    extra: (network) => {
      const state = networks.get(network)
      return state && { receiverAuthorizer: state.account.address, escrow: state.escrow }
    },
    claim: () => {
      const run = claiming.then(claim)
      claiming = run.catch(() => undefined)
      return run
    },
    channel: (channelId) => channels.get(channelId.toLowerCase()),
    stop: () => clearInterval(timer),
  }
}

function messageOf(error: unknown): string {
  return (error instanceof Error ? ((error as { shortMessage?: string }).shortMessage ?? error.message) : String(error)).slice(0, 300)
}

export class ConfigError extends BaseError {
  override name = 'BatchSettlementEvmConfigError'
  constructor(shortMessage: string) {
    super(shortMessage, { code: 'invalid_config', hint: 'Check the batchSettlementEvmFacilitator configuration.' })
  }
}
