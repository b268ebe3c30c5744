/**
 * The payer's part of `batch-settlement` on EVM (x402 `specs/schemes/batch-settlement/`, as the
 * reference `@x402/evm` 2.27 sends it): the first paid request opens a channel with a gasless EIP-3009
 * `receiveWithAuthorization` deposit to the collector, every request signs a cumulative `Voucher`, a
 * request the channel cannot cover tops it up, and the channel is closed by a cooperative refund or a
 * withdrawal (`clientClose.ts`).
 *
 * One request at a time per channel: the channel's lock is taken when a voucher is signed and released
 * when the server's answer is known, so two concurrent requests never sign the same increment. The
 * record is written (`PayerChannelStore`) before the voucher leaves.
 */
import {
  type Address,
  getAddress,
  type Hex,
  isAddress,
  isAddressEqual,
  type PublicClient,
  toHex,
  type WalletClient,
  zeroAddress,
} from 'viem'
import { BaseError, Reason } from '../../core/Errors.ts'
import * as Money from '../../core/Money.ts'
import * as Network from '../../core/Network.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import type { PaymentOutcome, SchemeClient } from '../../core/Scheme.ts'
import type { EvmSigner } from '../Signer.ts'
import * as Channel from './Channel.ts'
import { type CloseResult, closeChannels, finishWithdrawal, readEscrow, refundChannel, startWithdrawal } from './clientClose.ts'
import { memoryPayerChannelStore, type PayerChannelRecord, type PayerChannelStore } from './clientStore.ts'

export type DepositPolicy = string | number | { atomic: bigint | string } | { requests: number }

export type BatchSettlementEvmClientOptions = {
  /** Where the channels are kept; default in memory. Use `filePayerChannelStore(dir)` to survive restarts. */
  store?: PayerChannelStore
  /**
   * How much a deposit puts in: dollars (`'$1'`), atomic units (`{ atomic: 1_000_000n }`) or a number of
   * requests at the offer's price (`{ requests: 100 }`, the default). Never below the offer's
   * `extra.minDeposit` nor below what the next voucher needs.
   */
  deposit?: DepositPolicy
  /** The most one channel may hold (dollars or `{ atomic }`); an offer whose `minDeposit` is higher is not paid. */
  maxDeposit?: string | number | { atomic: bigint | string }
  /** Reads the escrow (`channels(id)`): recovery after a restart, reconciliation, withdrawal. */
  publicClient?: PublicClient
  /** Sends the payer's own withdrawal transactions (`initiateWithdraw`, `finalizeWithdraw`); the payer pays their gas. */
  walletClient?: WalletClient
  /** The escrow and EIP-3009 collector; default their canonical addresses. */
  escrow?: Address
  collector?: Address
  /** The channel salt; default zero, as the reference client uses. */
  salt?: Hex
  /** Releases a channel's lock when no answer is reported within this time (ms); default 120 000. */
  lockTimeoutMs?: number
}

/** A channel as a payer sees it. */
export type ChannelSummary = PayerChannelRecord & {
  /** Deposited and not yet charged: what the payer could still get back. */
  held: bigint
}

export type Channels = {
  list(): Promise<ChannelSummary[]>
  get(id: Hex): Promise<ChannelSummary | undefined>
  /** Loads every stored channel and reconciles it with the escrow (needs `publicClient`). */
  recover(): Promise<ChannelSummary[]>
  /** Asks the server for a cooperative refund of what the channel holds beyond what it was charged. */
  refund(id: Hex, options?: { amount?: bigint; fetch?: typeof fetch }): Promise<CloseResult>
  /** Starts a unilateral withdrawal of the unclaimed balance (needs `walletClient`; the payer pays gas). */
  withdraw(id: Hex): Promise<{ hash: Hex; amount: bigint; finalizeAfter: number }>
  /** Finishes a withdrawal once the channel's delay has passed. */
  finishWithdraw(id: Hex): Promise<{ hash: Hex; amount: bigint }>
  /** Closes every open channel: a cooperative refund, else (with `walletClient`) a withdrawal started. */
  close(options?: { fetch?: typeof fetch }): Promise<CloseResult[]>
  /** Writes every channel's latest state to the store. */
  flush(): Promise<void>
}

export type BatchSettlementEvmClient = SchemeClient & {
  paymentResult(outcome: PaymentOutcome): Promise<{ retry?: boolean } | undefined>
  readonly channels: Channels
}

export class ChannelClientError extends BaseError {
  override name = 'ChannelClientError'
}

/** Codes by which a server says it has already charged the voucher the client sent. */
const alreadyCharged = new Set<string>([
  Reason.batchVoucherAlreadyUsed,
  Reason.batchCumulativeBelowClaimed,
  Reason.batchCumulativeAmountMismatch,
])

/**
 * `batch-settlement` on EVM for a payer.
 *
 * @example
 * ```ts
 * import { batchSettlementEvmClient, filePayerChannelStore, toEvmSigner } from 'x402kit/evm'
 * import { wrapFetch } from 'x402kit/client'
 * const channels = batchSettlementEvmClient(await toEvmSigner(account), { deposit: '$1', store: filePayerChannelStore('.channels') })
 * const pay = wrapFetch(fetch, { schemes: [channels], budget: { perRequest: '$0.01' } })
 * await pay('https://api.example.com/quote') // deposits $1 once, then one voucher per request
 * await channels.channels.close() // cooperative refund of what was not spent
 * ```
 */
export function batchSettlementEvmClient(signer: EvmSigner, options: BatchSettlementEvmClientOptions = {}): BatchSettlementEvmClient {
  const store = options.store ?? memoryPayerChannelStore()
  const escrow = getAddress(options.escrow ?? Channel.escrowAddress)
  const collector = getAddress(options.collector ?? Channel.erc3009CollectorAddress)
  const salt = (options.salt ?? `0x${'00'.repeat(32)}`).toLowerCase() as Hex
  const lockTimeoutMs = options.lockTimeoutMs ?? 120_000
  const chainOfClient = options.publicClient?.chain?.id
  /** The records in use, authoritative in this process; written through to the store. */
  const records = new Map<string, PayerChannelRecord>()
  const locks = new Map<string, Promise<unknown>>()
  const inFlight = new WeakMap<object, InFlight>()

  /** A payload sent and not yet answered; `signedBefore` is the highest voucher signed before it. */
  type InFlight = { id: Hex; voucher: bigint; signedBefore: bigint; price: bigint; deposit: bigint | undefined; release: () => void }

  function lock(id: string): Promise<() => void> {
    const previous = locks.get(id) ?? Promise.resolve()
    let release!: () => void
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    const tail = previous.then(() => held)
    locks.set(id, tail)
    void tail.then(() => locks.get(id) === tail && locks.delete(id))
    return previous.then(() => {
      let done = false
      const timer = setTimeout(() => finish(), lockTimeoutMs)
      timer.unref?.()
      function finish() {
        if (done) return
        done = true
        clearTimeout(timer)
        release()
      }
      return finish
    })
  }

  async function load(id: Hex): Promise<PayerChannelRecord | undefined> {
    const key = id.toLowerCase()
    const known = records.get(key)
    if (known) return known
    const stored = await store.get(id)
    if (stored) records.set(key, stored)
    return stored
  }

  // The channel of an offer, by its terms: hashing the config for every request would cost more than the voucher.
  const channelOf = new Map<string, { config: Channel.ChannelConfig; id: Hex }>()
  function channelFor(offer: PaymentRequirements): { config: Channel.ChannelConfig; id: Hex } {
    const extra = offer.extra ?? {}
    const key = [offer.network, offer.payTo, offer.asset, extra.receiverAuthorizer, extra.withdrawDelay].join('|').toLowerCase()
    let known = channelOf.get(key)
    if (!known) {
      const config = configFor(offer)
      known = { config, id: Channel.id(config, Network.chainId(offer.network), escrow) }
      if (channelOf.size >= 1_000) channelOf.clear()
      channelOf.set(key, known)
    }
    return known
  }

  function configFor(offer: PaymentRequirements): Channel.ChannelConfig {
    const extra = offer.extra ?? {}
    return {
      payer: getAddress(signer.address),
      payerAuthorizer: getAddress(signer.address),
      receiver: getAddress(offer.payTo),
      receiverAuthorizer: getAddress(extra.receiverAuthorizer as string),
      token: getAddress(offer.asset),
      withdrawDelay: typeof extra.withdrawDelay === 'number' ? extra.withdrawDelay : Channel.minWithdrawDelay,
      salt,
    }
  }

  function decimalsOf(offer: PaymentRequirements): number {
    const decimals = offer.extra?.decimals
    if (typeof decimals === 'number') return decimals
    return Network.find(offer.network)?.assets.find((a) => a.address.toLowerCase() === offer.asset.toLowerCase())?.decimals ?? 6
  }

  function maxDepositOf(offer: PaymentRequirements): bigint | undefined {
    return options.maxDeposit === undefined ? undefined : Money.parse(options.maxDeposit, decimalsOf(offer))
  }

  function minDepositOf(offer: PaymentRequirements): bigint {
    const value = offer.extra?.minDeposit
    return typeof value === 'string' && /^\d{1,39}$/.test(value) ? BigInt(value) : 0n
  }

  function depositFor(offer: PaymentRequirements, record: PayerChannelRecord, needed: bigint): bigint {
    const price = BigInt(offer.amount)
    const policy = options.deposit ?? { requests: 100 }
    const target =
      typeof policy === 'object' && 'requests' in policy ? price * BigInt(policy.requests) : Money.parse(policy, decimalsOf(offer))
    let amount = [target, minDepositOf(offer), needed].reduce((a, b) => (a > b ? a : b))
    const max = maxDepositOf(offer)
    if (max !== undefined && record.balance + amount > max) amount = max - record.balance
    if (amount < needed || amount <= 0n)
      throw new ChannelClientError(`The channel would hold more than the ${max} atomic units allowed (maxDeposit).`, {
        code: 'channel_deposit_over_limit',
        hint: 'Raise maxDeposit, or close the channel to get its balance back.',
      })
    return amount
  }

  function fresh(offer: PaymentRequirements, resource: string): PayerChannelRecord {
    const config = configFor(offer)
    return {
      id: Channel.id(config, Network.chainId(offer.network), escrow),
      network: offer.network,
      escrow,
      config,
      offer,
      resource,
      balance: 0n,
      signed: 0n,
      charged: 0n,
      claimed: 0n,
    }
  }

  /** Where the escrow can be read, its word on the balance and claims replaces what was believed. */
  async function reconcile(record: PayerChannelRecord): Promise<void> {
    if (!options.publicClient) return
    const chain = await readEscrow(options.publicClient, escrow, record.id)
    record.claimed = chain.totalClaimed
    if (record.charged < chain.totalClaimed) record.charged = chain.totalClaimed
    if (record.signed < chain.totalClaimed) record.signed = chain.totalClaimed
    if (record.pendingDeposit && chain.balance >= record.balance + record.pendingDeposit.amount) record.pendingDeposit = undefined
    record.balance = chain.balance
    record.withdrawal = chain.withdrawal
    if (chain.balance > chain.totalClaimed) record.closed = false
  }

  async function sign(channelId: Hex, maxClaimableAmount: bigint, chainId: number): Promise<Hex> {
    return signer.signTypedData({
      domain: Channel.domainOf(chainId, escrow),
      types: Channel.types,
      primaryType: 'Voucher',
      message: { channelId, maxClaimableAmount },
    } as never)
  }

  async function createPayload(offer: PaymentRequirements, context: { resource: string }): Promise<Record<string, unknown>> {
    const chainId = Network.chainId(offer.network)
    const { config, id } = channelFor(offer)
    const release = await lock(id.toLowerCase())
    try {
      let record = await load(id)
      if (!record) {
        record = fresh(offer, context.resource)
        await reconcile(record)
        records.set(id.toLowerCase(), record)
      }
      record.offer = offer
      record.resource = context.resource
      if (record.pendingDeposit) {
        // A deposit sent with no answer: the escrow says whether it landed; without it, it is assumed to
        // have, and a server that finds no deposit says so (the next request then deposits again).
        if (options.publicClient) await reconcile(record)
        if (record.pendingDeposit) {
          record.balance += record.pendingDeposit.amount
          record.pendingDeposit = undefined
        }
      }
      if (record.withdrawal) throw new ChannelClientError('The channel is being withdrawn from.', { code: Reason.batchChannelClosing })
      const price = BigInt(offer.amount)
      const voucher = record.charged + price
      let deposit: { amount: bigint; authorization: Channel.Erc3009Authorization } | undefined
      if (voucher > record.balance) {
        const amount = depositFor(offer, record, voucher - record.balance)
        deposit = { amount, authorization: await authorize(offer, id, amount) }
        record.pendingDeposit = { amount, salt: deposit.authorization.salt, validBefore: deposit.authorization.validBefore }
        record.closed = false
      }
      const signature = await sign(id, voucher, chainId)
      const signedBefore = record.signed
      if (voucher > record.signed) record.signed = voucher
      // Write-ahead: the voucher and the deposit are on disk before they leave.
      await store.put(record)
      const voucherFields = { channelId: id, maxClaimableAmount: voucher.toString(), signature }
      const payload: Record<string, unknown> = deposit
        ? {
            type: 'deposit',
            channelConfig: config,
            voucher: voucherFields,
            deposit: {
              amount: deposit.amount.toString(),
              authorization: {
                erc3009Authorization: {
                  validAfter: deposit.authorization.validAfter.toString(),
                  validBefore: deposit.authorization.validBefore.toString(),
                  salt: deposit.authorization.salt,
                  signature: deposit.authorization.signature,
                },
              },
            },
          }
        : { type: 'voucher', channelConfig: config, voucher: voucherFields }
      inFlight.set(payload, { id, voucher, signedBefore, price, deposit: deposit?.amount, release })
      return payload
    } catch (error) {
      release()
      throw error
    }
  }

  async function authorize(offer: PaymentRequirements, id: Hex, amount: bigint): Promise<Channel.Erc3009Authorization> {
    const { name, version } = offer.extra as { name: string; version: string }
    const depositSalt = toHex(crypto.getRandomValues(new Uint8Array(32)))
    const validBefore = BigInt(Math.floor(Date.now() / 1000) + offer.maxTimeoutSeconds)
    const signature = await signer.signTypedData({
      domain: { name, version, chainId: Network.chainId(offer.network), verifyingContract: getAddress(offer.asset) },
      types: Channel.receiveWithAuthorizationTypes,
      primaryType: 'ReceiveWithAuthorization',
      message: {
        from: getAddress(signer.address),
        to: collector,
        value: amount,
        validAfter: 0n,
        validBefore,
        nonce: Channel.depositNonce(id, depositSalt),
      },
    } as never)
    return { validAfter: 0n, validBefore, salt: depositSalt, signature }
  }

  async function paymentResult(outcome: PaymentOutcome): Promise<{ retry?: boolean } | undefined> {
    const sent = inFlight.get(outcome.payload)
    if (!sent) return undefined
    inFlight.delete(outcome.payload)
    try {
      const record = await load(sent.id)
      if (!record) return undefined
      const { status, settlement, refusal } = outcome
      if (status !== undefined && status < 400) {
        // Served without a settlement reported (a route that turned free): nothing is counted as charged.
        if (settlement?.success === true) accept(record, sent, settlement.extra as Record<string, unknown> | undefined)
        return undefined
      }
      const code = refusal?.error ?? settlement?.errorReason ?? undefined
      if (status !== 402 || !code) return undefined // no answer, or a fault: the write-ahead record stands
      if (sent.deposit !== undefined) record.pendingDeposit = undefined
      if (alreadyCharged.has(code)) return { retry: resync(record, sent, refusal?.accepts ?? []) }
      if (code === Reason.batchChannelNotFound || code === Reason.batchCumulativeExceedsBalance) {
        const before = record.balance
        if (options.publicClient) await reconcile(record)
        else record.balance = record.charged
        // Retried once, with a deposit: only when the belief changed, so a server cannot loop the client.
        return { retry: record.balance !== before || record.balance < record.charged + sent.price }
      }
      if (code === Reason.batchChannelClosing && options.publicClient) await reconcile(record)
      return undefined
    } finally {
      sent.release()
    }
  }

  function accept(record: PayerChannelRecord, sent: InFlight, extra: Record<string, unknown> | undefined) {
    // The server's count is advisory: the client charges itself what it signed for, less what the server
    // says it did not charge; a server reporting more than the voucher changes nothing.
    const reported =
      typeof extra?.chargedAmount === 'string' && /^\d{1,39}$/.test(extra.chargedAmount) ? BigInt(extra.chargedAmount) : undefined
    const charged = reported !== undefined && reported <= sent.price ? sent.voucher - sent.price + reported : sent.voucher
    if (charged > record.charged) record.charged = charged
    if (sent.deposit !== undefined) {
      record.balance += sent.deposit
      record.pendingDeposit = undefined
    }
    const state = extra?.channelState as { totalClaimed?: unknown } | undefined
    if (typeof state?.totalClaimed === 'string' && /^\d{1,39}$/.test(state.totalClaimed)) {
      const claimed = BigInt(state.totalClaimed)
      if (claimed <= record.charged && claimed > record.claimed) record.claimed = claimed
    }
  }

  /**
   * The server says it has charged the voucher sent. That is possible only for a voucher signed before
   * (its answer lost, or a restart between sending and recording): the client then counts up to that
   * voucher as charged and pays the request once more above it. A server that says so of a voucher it
   * had never seen gets nothing more, unless it shows a voucher of ours that covers its count (the
   * reference server's corrective 402, which lets a client that lost its store go on).
   */
  function resync(record: PayerChannelRecord, sent: InFlight, accepts: readonly PaymentRequirements[]): boolean {
    const chainId = Network.chainId(record.network)
    // The reference server reports its count with the voucher it holds; that voucher must be one we signed.
    const state = accepts.find((offer) => offer.scheme === Channel.scheme)?.extra as
      | {
          channelState?: { chargedCumulativeAmount?: unknown; balance?: unknown }
          voucherState?: { signedMaxClaimable?: unknown; signature?: unknown }
        }
      | undefined
    const reported = state?.channelState?.chargedCumulativeAmount
    const held = state?.voucherState?.signedMaxClaimable
    const signature = state?.voucherState?.signature
    if (typeof reported === 'string' && /^\d{1,39}$/.test(reported) && typeof held === 'string' && /^\d{1,39}$/.test(held)) {
      const count = BigInt(reported)
      const holder =
        typeof signature === 'string' && /^0x[0-9a-fA-F]{130}$/.test(signature)
          ? Channel.recoverVoucherSigner(
              { channelId: record.id, maxClaimableAmount: BigInt(held), signature: signature as Hex },
              chainId,
              escrow,
            )
          : undefined
      // A voucher of ours the server holds can be claimed whatever this client remembers: counting up to
      // it and paying the next increment above the count adds at most this request's price.
      if (holder && isAddressEqual(holder, signer.address) && count <= BigInt(held) && count >= record.charged) {
        record.charged = count
        if (BigInt(held) > record.signed) record.signed = BigInt(held)
        // The balance it reports spares a second deposit; overstated, it only lets vouchers through that no claim can cash.
        const balance = state?.channelState?.balance
        if (typeof balance === 'string' && /^\d{1,39}$/.test(balance) && BigInt(balance) > record.balance) record.balance = BigInt(balance)
        return true
      }
      return false
    }
    if (sent.voucher <= sent.signedBefore && sent.voucher > record.charged - sent.price) {
      if (sent.voucher > record.charged) record.charged = sent.voucher
      return true
    }
    return false
  }

  function summary(record: PayerChannelRecord): ChannelSummary {
    return { ...record, held: record.balance > record.charged ? record.balance - record.charged : 0n }
  }

  async function all(): Promise<PayerChannelRecord[]> {
    for (const record of await store.list()) if (!records.has(record.id.toLowerCase())) records.set(record.id.toLowerCase(), record)
    return [...records.values()]
  }

  async function withLock<result>(id: Hex, task: (record: PayerChannelRecord) => Promise<result>): Promise<result> {
    const release = await lock(id.toLowerCase())
    try {
      const record = await load(id)
      if (!record) throw new ChannelClientError(`No channel ${id} is known.`, { code: 'channel_unknown' })
      const result = await task(record)
      await store.put(record)
      return result
    } finally {
      release()
    }
  }

  const closeContext = () => ({ signer, escrow, publicClient: options.publicClient, walletClient: options.walletClient, sign, reconcile })

  const channels: Channels = {
    list: async () => (await all()).map(summary),
    get: async (id) => {
      const record = await load(id)
      return record && summary(record)
    },
    async recover() {
      const known = await all()
      for (const record of known) await withLock(record.id, (locked) => reconcile(locked))
      return known.map(summary)
    },
    refund: (id, refundOptions) => withLock(id, (record) => refundChannel(closeContext(), record, refundOptions)),
    withdraw: (id) => withLock(id, (record) => startWithdrawal(closeContext(), record)),
    finishWithdraw: (id) => withLock(id, (record) => finishWithdrawal(closeContext(), record)),
    close: async (closeOptions) =>
      closeChannels(
        (await all()).filter((record) => !record.closed && record.balance > record.charged),
        (record, run) => withLock(record.id, run),
        closeContext(),
        closeOptions,
      ),
    async flush() {
      for (const record of records.values()) await store.put(record)
    },
  }

  return {
    scheme: Channel.scheme,
    canPay(offer) {
      if (offer.scheme !== Channel.scheme || !offer.network.startsWith('eip155:')) return false
      const extra = offer.extra ?? {}
      if (typeof extra.name !== 'string' || typeof extra.version !== 'string') return false
      if (extra.assetTransferMethod !== undefined && extra.assetTransferMethod !== 'eip3009') return false
      if (!isNonZeroAddress(extra.receiverAuthorizer) || !isNonZeroAddress(offer.payTo) || !isAddress(offer.asset, { strict: false }))
        return false
      const delay = extra.withdrawDelay
      if (delay !== undefined && (typeof delay !== 'number' || delay < Channel.minWithdrawDelay || delay > Channel.maxWithdrawDelay))
        return false
      // A channel in another escrow, or on a chain other than the one this client reads, is not opened.
      if (
        extra.escrow !== undefined &&
        (typeof extra.escrow !== 'string' || !isAddress(extra.escrow) || !isAddressEqual(extra.escrow, escrow))
      )
        return false
      if (chainOfClient !== undefined && Network.find(offer.network)?.chainId !== chainOfClient) return false
      const max = maxDepositOf(offer)
      return max === undefined || (minDepositOf(offer) <= max && BigInt(offer.amount) <= max)
    },
    createPayload,
    paymentResult,
    channels,
  }
}

function isNonZeroAddress(value: unknown): value is Address {
  return typeof value === 'string' && isAddress(value, { strict: false }) && getAddress(value) !== zeroAddress
}
