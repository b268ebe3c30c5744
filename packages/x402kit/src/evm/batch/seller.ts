/**
 * The seller's side of `batch-settlement` on EVM (x402 `specs/schemes/batch-settlement/`, the
 * resource server's part): channel state kept here, each voucher checked here (signature and
 * cumulative amount, no facilitator call), deposits passed to the facilitator, and claims, sweeps and
 * refunds handed to the facilitator's `/settle` in batches.
 *
 * A voucher is verified without changing anything; `settle` checks it again and charges it in one
 * synchronous step, so two requests on one channel cannot both spend the same increment. State is
 * in memory and written behind to a `SellerChannelStore` (`sellerStore.ts`).
 */
import { type Address, getAddress, type Hex } from 'viem'
import { z } from 'zod'
import { Reason } from '../../core/Errors.ts'
import type { FacilitatorClient, Payment, SettleResponse, VerifyResponse } from '../../core/Facilitator.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import type { LocalVerdict, SchemeServer } from '../../core/Scheme.ts'
import { recoveryThreads } from '../recoverThreads.ts'
import * as Channel from './Channel.ts'
import { binding } from './check.ts'
import { type AuthorizerSigner, type Operations, submitClaim, submitRefund, submitSweep } from './sellerClaims.ts'
import { type Journal, memorySellerChannelStore, type SellerChannelRecord, type SellerChannelStore, sellerJournal } from './sellerStore.ts'
import { domainSeparator, fingerprintOf, readVoucher, type SellerChannel, signedByChannel, voucherStruct } from './sellerVoucher.ts'

export type BatchSettlementEvmSellerOptions = {
  /** Where deposits, claims, sweeps and refunds go (`httpFacilitator(url)` or an in-process facilitator). */
  facilitator: FacilitatorClient
  /** Where channels outlive the process. Default in memory (lost on restart). */
  store?: SellerChannelStore
  durability?: {
    /**
     * `'batched'` (default): a voucher is saved with the next group commit, and a request waits for
     * one only when its channel is `maxUnsaved` commits ahead of the store. `'strict'`: every paid
     * answer waits for the commit that holds its voucher.
     */
    mode?: 'batched' | 'strict'
    /**
     * Milliseconds between group commits. Default 20. The loss bound is `maxUnsaved`, not this: a request
     * that must wait for a commit (a deposit, `strict`, a channel at `maxUnsaved`) starts one at once.
     */
    intervalMs?: number
    /**
     * Vouchers a channel may have accepted beyond the store before a request waits for a commit. Default
     * 32: enough that a busy channel does not wait on a commit that stalls for a few milliseconds, and a
     * crash loses at most that many vouchers per channel, which the payer's next (cumulative) voucher recovers.
     */
    maxUnsaved?: number
  }
  claims?: {
    /** Claims every this many milliseconds. Default never (call `claim()`). */
    intervalMs?: number
    /** Claims once this much charged value (atomic units, all channels) is unclaimed. */
    threshold?: bigint
    /** Vouchers per `claim` payload. Default 100. */
    maxPerBatch?: number
  }
  /**
   * Reads the escrow state of channels active since the last round again, through the facilitator's
   * verify, every this many milliseconds: a payer who starts a withdrawal is refused from then on.
   * Default 300,000 (below the escrow's least withdraw delay, 900 s).
   */
  refreshIntervalMs?: number
  /** Refunds a channel idle this many milliseconds what its payer has not spent. Default never. */
  refundIdleAfterMs?: number
  /**
   * Signs claims and refunds as the channels' receiver authorizer. Without it the facilitator signs
   * them, which it can only do when it is the receiver authorizer.
   */
  receiverAuthorizerSigner?: AuthorizerSigner
  /** Channels held at most; a deposit that would open one more is refused. Default 100,000. */
  maxChannels?: number
  /** Unknown channels looked up at the facilitator at once; more are refused. Default 32. */
  maxLookups?: number
  /** The escrow; default the canonical `x402BatchSettlement` address. */
  escrow?: Address
  /** Faults of background work (commits, claims, refunds). Default `console.error`. */
  onError?: (error: unknown) => void
  /**
   * Worker threads that recover voucher signatures, off the event loop. Default 1 where the machine
   * has more than one core and the native secp256k1 binding loads, else 0 (on the event loop).
   */
  recoveryThreads?: number
}

/** What one round of claims did on a network. */
export type SellerClaimResult = { network: string; channels: number; claimed: bigint; transactions: string[] }

export type BatchSettlementEvmSeller = SchemeServer & {
  verify(payment: Payment): Promise<LocalVerdict> | undefined
  settle(payment: Payment): Promise<SettleResponse> | undefined
  /** Loads the channels from the store; requests wait for it on their own, this surfaces a failure early. */
  ready(): Promise<void>
  /** Claims every channel's charged value not yet claimed, then sweeps it to the receivers. */
  claim(): Promise<SellerClaimResult[]>
  /** Refunds channels (default: every one with unspent balance) what their payers have not spent. */
  refund(channelIds?: readonly string[]): Promise<{ channelId: Hex; transaction: string }[]>
  /** Reads channels' escrow state again through the facilitator (default: every channel holding a voucher). */
  refresh(channelIds?: readonly string[]): Promise<void>
  /** What the seller holds of a channel. */
  channel(channelId: string): Readonly<SellerChannel> | undefined
  /** Resolves once every voucher accepted so far is in the store. */
  flush(): Promise<void>
  /** Stops the timers and writes what is left to the store. */
  close(): Promise<void>
}

/** A payer's request for a cooperative refund: a zero-charge voucher at what it was charged, and the amount (default all it has left). */
const refundPayload = z.object({
  type: z.literal('refund'),
  channelConfig: Channel.channelConfig,
  voucher: Channel.voucher,
  amount: z
    .string()
    .regex(/^\d{1,39}$/)
    .transform((value) => BigInt(value))
    .optional(),
})

type Verified = { channel: SellerChannel; maxClaimableAmount: bigint; signature: Hex; price: bigint }
type Refusal = { reason: string; message: string }

export function createSeller(base: SchemeServer, options: BatchSettlementEvmSellerOptions): BatchSettlementEvmSeller {
  const { facilitator } = options
  const store = options.store ?? memorySellerChannelStore()
  const strict = options.durability?.mode === 'strict'
  const maxUnsaved = options.durability?.maxUnsaved ?? 32
  const maxChannels = options.maxChannels ?? 100_000
  const maxLookups = options.maxLookups ?? 32
  const escrow = getAddress(options.escrow ?? Channel.escrowAddress)
  const onError = options.onError ?? ((error: unknown) => console.error('[x402kit batch-settlement seller]', error))
  const channels = new Map<string, SellerChannel>()
  const verified = new WeakMap<Payment, Verified>()
  const deposits = new WeakMap<Payment, Channel.DepositPayload>()
  const refunds = new WeakMap<Payment, { channel: SellerChannel; amount: bigint }>()
  const separators = new Map<string, Uint8Array>()
  const locks = new Map<string, Promise<unknown>>()
  const recovery = recoveryThreads({ threads: options.recoveryThreads })
  let lookups = 0
  let unclaimed = 0n

  const chainIdOf = (network: string) => Number(network.split(':')[1])
  const separatorOf = (network: string) => {
    let separator = separators.get(network)
    if (!separator) {
      separator = domainSeparator(chainIdOf(network), escrow)
      separators.set(network, separator)
    }
    return separator
  }
  /** Whether a voucher on `channel` is signed by the channel's signer. */
  const signedVoucher = (channel: SellerChannel, voucher: { channelId: Hex; maxClaimableAmount: bigint; signature: unknown }) =>
    signedByChannel(
      separatorOf(channel.network),
      voucherStruct(voucher.channelId, voucher.maxClaimableAmount),
      voucher.signature,
      channel,
      recovery,
    )
  const operations: Operations = { facilitator, chainIdOf, signer: options.receiverAuthorizerSigner }

  const recordOf = (id: string): SellerChannelRecord | undefined => {
    const channel = channels.get(id)
    return (
      channel && {
        id: channel.id,
        network: channel.network,
        config: channel.config,
        balance: channel.balance,
        totalClaimed: channel.totalClaimed,
        charged: channel.charged,
        signature: channel.signature,
        withdrawRequestedAt: channel.withdrawRequestedAt,
        refundNonce: channel.refundNonce,
        lastRequestAt: channel.lastRequestAt,
      }
    )
  }
  const journal: Journal = sellerJournal({ store, intervalMs: options.durability?.intervalMs ?? 20, read: recordOf, onError })

  function hold(record: Omit<SellerChannelRecord, 'id'> & { id: string }): SellerChannel {
    const channel: SellerChannel = {
      ...record,
      id: record.id.toLowerCase() as Hex,
      fingerprint: fingerprintOf(record.config)!,
      signer: Channel.voucherSigner(record.config).toLowerCase(),
    }
    channels.set(channel.id, channel)
    if (channel.charged > channel.totalClaimed) unclaimed += channel.charged - channel.totalClaimed
    return channel
  }

  let loaded = false
  let loading: Promise<void> | undefined
  const ready = () =>
    (loading ??= store.load().then((records) => {
      for (const record of records) hold(record)
      loaded = true
    }))

  const refuse = (reason: string, message: string, payer?: string): VerifyResponse => ({
    isValid: false,
    invalidReason: reason,
    invalidMessage: message,
    ...(payer && { payer }),
  })

  /** The offer's terms the channel must carry: receiver, token, receiver authorizer, withdraw delay. */
  function offerRefusal(channel: SellerChannel, requirements: PaymentRequirements): Refusal | undefined {
    const { config } = channel
    if (config.receiver.toLowerCase() !== requirements.payTo.toLowerCase())
      return { reason: Reason.batchReceiverMismatch, message: 'The channel pays another receiver than the offer.' }
    if (config.token.toLowerCase() !== requirements.asset.toLowerCase())
      return { reason: Reason.batchTokenMismatch, message: 'The channel holds another token than the offer asks for.' }
    const extra = requirements.extra ?? {}
    if (typeof extra.receiverAuthorizer !== 'string' || extra.receiverAuthorizer.toLowerCase() !== config.receiverAuthorizer.toLowerCase())
      return { reason: Reason.batchReceiverAuthorizerMismatch, message: "The channel's receiver authorizer is not the offer's." }
    if (config.withdrawDelay !== (typeof extra.withdrawDelay === 'number' ? extra.withdrawDelay : Channel.minWithdrawDelay))
      return { reason: Reason.batchWithdrawDelayMismatch, message: "The channel's withdraw delay is not the offer's." }
    return undefined
  }

  /** Whether a voucher of `max` pays `price` on the channel now (with `deposit` arriving with it). */
  function chargeRefusal(channel: SellerChannel, max: bigint, price: bigint, deposit = 0n): Refusal | undefined {
    if (channel.withdrawRequestedAt > 0)
      return { reason: Reason.batchChannelClosing, message: 'The payer is withdrawing from this channel.' }
    if (max === channel.charged && channel.signature)
      return { reason: Reason.batchVoucherAlreadyUsed, message: 'This voucher was already spent; sign the next one.' }
    if (max <= channel.charged)
      return {
        reason: Reason.batchCumulativeBelowClaimed,
        message: `The voucher (${max}) is not above the last one accepted (${channel.charged}).`,
      }
    if (max < channel.charged + price)
      return {
        reason: Reason.batchCumulativeAmountMismatch,
        message: `The voucher (${max}) does not cover ${channel.charged} already charged plus the price ${price}.`,
      }
    if (max > channel.balance + deposit)
      return {
        reason: Reason.batchCumulativeExceedsBalance,
        message: `The voucher (${max}) is above what the channel holds (${channel.balance + deposit}).`,
      }
    return undefined
  }

  async function verify(payment: Payment): Promise<LocalVerdict> {
    if (!loaded) await ready()
    const { requirements } = payment
    const raw = payment.payload.payload as { type?: unknown; voucher?: unknown; channelConfig?: unknown }
    if (raw.type === 'deposit') return verifyDeposit(payment)
    if (raw.type === 'refund') return verifyRefund(payment)
    if (raw.type !== 'voucher') return refuse(Reason.batchPayloadType, 'A paid request carries a deposit or a voucher payload.')
    const voucher = readVoucher(raw.voucher)
    if (!voucher) return refuse(Reason.invalidPayload, 'The voucher is malformed.')
    const channel = channels.get(voucher.channelId)
    if (!channel) return lookup(payment)
    if (fingerprintOf(raw.channelConfig) !== channel.fingerprint)
      return refuse(Reason.batchChannelIdMismatch, 'The channel config is not the one the channel id names.')
    const payer = channel.config.payer
    const terms = offerRefusal(channel, requirements)
    if (terms) return refuse(terms.reason, terms.message, payer)
    if (!(await signedVoucher(channel, voucher)))
      return refuse(Reason.batchVoucherSignature, "The voucher is not signed by the channel's payer.", payer)
    const price = BigInt(requirements.amount)
    const refusal = chargeRefusal(channel, voucher.maxClaimableAmount, price)
    // Only to the payer (the signature is its): where the server's count is, and the voucher behind it.
    if (refusal) return { ...refuse(refusal.reason, refusal.message, payer), ...(miscounted.has(refusal.reason) && correction(channel)) }
    // One request at a time per channel, as the reference server has it: a voucher sent again while its
    // first sending is being served (a replay, a retry) is refused before any handler runs twice.
    if (channel.serving && Date.now() - channel.serving.since < abandonedAfterMs)
      return refuse(Reason.batchChannelBusy, 'A request on this channel is being served; send the next voucher once it is answered.', payer)
    channel.serving = { payment, since: Date.now() }
    verified.set(payment, { channel, maxClaimableAmount: voucher.maxClaimableAmount, signature: voucher.signature, price })
    return { isValid: true, payer }
  }

  /** A voucher for a channel not held here: the facilitator reads it from the escrow, once, within a bound. */
  async function lookup(payment: Payment): Promise<VerifyResponse> {
    const parsed = Channel.voucherPayload.safeParse(payment.payload.payload)
    if (!parsed.success) return refuse(Reason.invalidPayload, parsed.error.issues[0]?.message ?? 'The payload is malformed.')
    const payload = parsed.data
    const bound = binding(payload, payment.requirements, { chainId: chainIdOf(payment.requirements.network), escrow })
    if (bound) return refuse(bound.reason, bound.message, payload.channelConfig.payer)
    if (channels.size >= maxChannels) return refuse(Reason.batchChannelLimit, 'This server holds as many channels as it may.')
    if (lookups >= maxLookups) return refuse(Reason.batchChannelBusy, 'Too many unknown channels are being looked up; try again.')
    lookups++
    let answer: VerifyResponse
    try {
      answer = await facilitator.verify(payment)
    } finally {
      lookups--
    }
    if (answer.isValid !== true) return answer
    const state = readState((answer as { extra?: unknown }).extra)
    if (!state || state.balance === 0n)
      return refuse(Reason.batchChannelNotFound, 'This server holds no such channel; open it with a deposit.', payload.channelConfig.payer)
    const channel =
      channels.get(payload.voucher.channelId) ??
      hold({
        id: payload.voucher.channelId,
        network: payment.requirements.network,
        config: payload.channelConfig,
        ...state,
        charged: state.totalClaimed,
        signature: undefined,
        lastRequestAt: Date.now(),
      })
    journal.touch(channel.id)
    return verify(payment)
  }

  async function verifyDeposit(payment: Payment): Promise<LocalVerdict> {
    const parsed = Channel.depositPayload.safeParse(payment.payload.payload)
    if (!parsed.success) return refuse(Reason.invalidPayload, parsed.error.issues[0]?.message ?? 'The payload is malformed.')
    const payload = parsed.data
    const payer = payload.channelConfig.payer
    const bound = binding(payload, payment.requirements, { chainId: chainIdOf(payment.requirements.network), escrow })
    if (bound) return refuse(bound.reason, bound.message, payer)
    const minDeposit = payment.requirements.extra?.minDeposit
    if (typeof minDeposit === 'string' && /^\d{1,78}$/.test(minDeposit) && payload.deposit.amount < BigInt(minDeposit))
      return refuse(Reason.batchDepositBelowMinDeposit, `The deposit is below the minimum of ${minDeposit}.`, payer)
    const channel = channels.get(payload.voucher.channelId)
    if (!channel && channels.size >= maxChannels)
      return refuse(Reason.batchChannelLimit, 'This server holds as many channels as it may.', payer)
    if (channel) {
      const refusal = chargeRefusal(
        channel,
        payload.voucher.maxClaimableAmount,
        BigInt(payment.requirements.amount),
        payload.deposit.amount,
      )
      if (refusal) {
        // A payer that lost its channel opens it again; its own signature earns it the server's count.
        const { voucher } = payload
        const own = miscounted.has(refusal.reason) && (await signedVoucher(channel, voucher))
        return { ...refuse(refusal.reason, refusal.message, payer), ...(own && correction(channel)) }
      }
    }
    const answer = await facilitator.verify(payment)
    if (answer.isValid === true) deposits.set(payment, payload)
    return answer
  }

  /** A refund the payer asks for: its voucher must be exactly what it was charged, signed by it. */
  async function verifyRefund(payment: Payment): Promise<LocalVerdict> {
    const parsed = refundPayload.safeParse(payment.payload.payload)
    if (!parsed.success) return refuse(Reason.invalidPayload, parsed.error.issues[0]?.message ?? 'The refund payload is malformed.')
    const { channelConfig, voucher, amount } = parsed.data
    const channel = channels.get(voucher.channelId)
    if (!channel) return refuse(Reason.batchChannelNotFound, 'This server holds no such channel.', channelConfig.payer)
    if (fingerprintOf(channelConfig) !== channel.fingerprint)
      return refuse(Reason.batchChannelIdMismatch, 'The channel config is not the one the channel id names.', channelConfig.payer)
    const terms = offerRefusal(channel, payment.requirements)
    if (terms) return refuse(terms.reason, terms.message, channelConfig.payer)
    if (!(await signedVoucher(channel, voucher)))
      return refuse(Reason.batchVoucherSignature, "The voucher is not signed by the channel's payer.", channelConfig.payer)
    if (voucher.maxClaimableAmount !== channel.charged)
      return refuse(
        Reason.batchCumulativeAmountMismatch,
        `A refund voucher is for what the channel was charged (${channel.charged}), not ${voucher.maxClaimableAmount}.`,
        channelConfig.payer,
      )
    const left = channel.balance - channel.charged
    if (left <= 0n) return refuse(Reason.batchRefundNoBalance, 'The channel has nothing left to refund.', channelConfig.payer)
    if (amount !== undefined && (amount === 0n || amount > left))
      return refuse(Reason.batchRefundAmountInvalid, `A refund is 1 to ${left}.`, channelConfig.payer)
    refunds.set(payment, { channel, amount: amount ?? left })
    return { isValid: true, payer: channelConfig.payer, answer: { message: 'Refund acknowledged', channelId: channel.id } }
  }

  /** Refunds a channel through the facilitator, claiming its charged value first, under the channel's lock. */
  function refundNow(channel: SellerChannel, amount: bigint): Promise<SettleResponse> {
    return locked(channel.id, async () => {
      if (amount > channel.balance - channel.charged)
        return Channel.failure(channel.network, Reason.batchRefundAmountInvalid, 'The channel no longer holds that much unspent.')
      const result = await submitRefund(operations, channel, amount)
      if (result.success !== true) return result
      // The escrow claimed what was charged and gave back `amount`.
      unclaimed -= channel.charged - channel.totalClaimed
      channel.totalClaimed = channel.charged
      channel.balance -= amount
      channel.refundNonce += 1n
      journal.touch(channel.id)
      await journal.flushed()
      const answer = receipt(channel, 0n)
      return { ...answer, transaction: result.transaction, extra: { ...(answer.extra as object), refundAmount: amount.toString() } }
    })
  }

  /** Charges a voucher that covers the price: synchronous, so no other request interleaves. */
  function commit(channel: SellerChannel, max: bigint, signature: Hex, price: bigint) {
    unclaimed += max - channel.charged
    channel.charged = max
    channel.signature = signature
    channel.lastRequestAt = Date.now()
    journal.touch(channel.id)
    if (options.claims?.threshold !== undefined && unclaimed >= options.claims.threshold) void claim().catch(onError)
    return receipt(channel, price)
  }

  function receipt(channel: SellerChannel, price: bigint): SettleResponse {
    return {
      success: true,
      transaction: '',
      network: channel.network,
      payer: channel.config.payer,
      amount: price.toString(),
      extra: { chargedAmount: price.toString(), channelState: channelState(channel) },
    }
  }

  /** The corrective state a 402 carries in the offer's `extra`, in the reference server's shape. */
  function correction(channel: SellerChannel): { offerExtra: Record<string, unknown> } {
    const voucherState = channel.signature && { signedMaxClaimable: channel.charged.toString(), signature: channel.signature }
    return { offerExtra: { channelState: channelState(channel), ...(voucherState && { voucherState }) } }
  }

  /** Lets go of a verified voucher without charging it: its channel takes the next request. */
  function release(payment: Payment) {
    const taken = verified.get(payment)
    if (!taken) return
    verified.delete(payment)
    if (taken.channel.serving?.payment === payment) taken.channel.serving = undefined
  }

  async function durable(channel: SellerChannel) {
    if (strict || journal.unsaved(channel.id) > maxUnsaved) await journal.flushed()
  }

  async function settle(payment: Payment): Promise<SettleResponse> {
    const network = payment.requirements.network
    const deposit = deposits.get(payment)
    if (deposit) {
      deposits.delete(payment)
      return settleDeposit(payment, deposit)
    }
    const asked = refunds.get(payment)
    if (asked) {
      refunds.delete(payment)
      return refundNow(asked.channel, asked.amount)
    }
    const taken = verified.get(payment)
    if (!taken) return Channel.failure(network, Reason.batchPayloadType, 'This payment was not verified by this server.')
    release(payment)
    const { channel, maxClaimableAmount, signature, price } = taken
    const refusal = chargeRefusal(channel, maxClaimableAmount, price)
    if (refusal) return Channel.failure(network, refusal.reason, refusal.message)
    const answer = commit(channel, maxClaimableAmount, signature, price)
    await durable(channel)
    return answer
  }

  /** Deposits move money on chain: one at a time per channel, through the facilitator. */
  function locked<result>(id: string, task: () => Promise<result>): Promise<result> {
    const previous = locks.get(id) ?? Promise.resolve()
    const run = previous.then(task, task)
    const tail = run.catch(() => undefined)
    locks.set(id, tail)
    void tail.then(() => locks.get(id) === tail && locks.delete(id))
    return run
  }

  function settleDeposit(payment: Payment, payload: Channel.DepositPayload): Promise<SettleResponse> {
    const network = payment.requirements.network
    const price = BigInt(payment.requirements.amount)
    const { voucher } = payload
    return locked(voucher.channelId, async () => {
      const known = channels.get(voucher.channelId)
      const before = known && chargeRefusal(known, voucher.maxClaimableAmount, price, payload.deposit.amount)
      if (before) return Channel.failure(network, before.reason, before.message)
      const answer = await facilitator.settle(payment)
      if (answer.success !== true) return answer
      const state = readState((answer as { extra?: { channelState?: unknown } }).extra?.channelState)
      let channel = channels.get(voucher.channelId)
      if (!channel)
        channel = hold({
          id: voucher.channelId,
          network,
          config: payload.channelConfig,
          balance: 0n,
          totalClaimed: 0n,
          charged: 0n,
          signature: undefined,
          withdrawRequestedAt: 0,
          refundNonce: 0n,
          lastRequestAt: Date.now(),
        })
      if (state) {
        channel.balance = state.balance
        if (state.totalClaimed > channel.totalClaimed) channel.totalClaimed = state.totalClaimed
        if (channel.charged < channel.totalClaimed) channel.charged = channel.totalClaimed
        channel.withdrawRequestedAt = state.withdrawRequestedAt
        channel.refundNonce = state.refundNonce
      } else channel.balance += payload.deposit.amount
      // Vouchers may have been charged while the deposit was mined: the deposit stays, the request is judged as things are now.
      const refusal = chargeRefusal(channel, voucher.maxClaimableAmount, price)
      if (refusal) {
        journal.touch(channel.id)
        await journal.flushed()
        return Channel.failure(network, refusal.reason, refusal.message, answer.transaction)
      }
      const charged = commit(channel, voucher.maxClaimableAmount, voucher.signature, price)
      // A deposit is rare and slow already: its balance is in the store before it is answered, so a
      // restart never takes a channel for poorer than it is.
      await journal.flushed()
      return { ...charged, transaction: answer.transaction }
    })
  }

  let claiming: Promise<unknown> = Promise.resolve()
  let claimQueued: Promise<SellerClaimResult[]> | undefined

  /** Claims run one at a time; a call while one runs joins the next. */
  function claim(): Promise<SellerClaimResult[]> {
    if (claimQueued) return claimQueued
    const run = claiming.then(() => {
      claimQueued = undefined
      return claimOnce()
    })
    claimQueued = run
    claiming = run.catch(() => undefined)
    return run
  }

  async function claimOnce(): Promise<SellerClaimResult[]> {
    const byNetwork = new Map<string, SellerChannel[]>()
    for (const channel of channels.values())
      if (channel.charged > channel.totalClaimed && channel.signature)
        byNetwork.set(channel.network, [...(byNetwork.get(channel.network) ?? []), channel])
    const results: SellerClaimResult[] = []
    const maxPerBatch = options.claims?.maxPerBatch ?? 100
    for (const [network, due] of byNetwork) {
      const result: SellerClaimResult = { network, channels: 0, claimed: 0n, transactions: [] }
      for (let start = 0; start < due.length; start += maxPerBatch) {
        const batch = due.slice(start, start + maxPerBatch)
        // The amounts claimed are the ones in the payload: vouchers charged meanwhile wait for the next round.
        const amounts = batch.map((channel) => channel.charged)
        let answer = await submitClaim(operations, network, batch)
        let claimed = batch
        if (answer.success !== true && batch.length > 1) {
          // One channel that cannot be claimed (emptied by a withdrawal) fails the batch: the others go alone.
          claimed = []
          for (const channel of batch) {
            const alone = await submitClaim(operations, network, [channel])
            if (alone.success === true) {
              claimed.push(channel)
              result.transactions.push(alone.transaction)
            } else onError(new Error(`Claim of channel ${channel.id} failed: ${alone.errorReason} ${alone.errorMessage ?? ''}`))
          }
          answer = { success: claimed.length > 0, transaction: '', network }
        } else if (answer.success === true) result.transactions.push(answer.transaction)
        if (answer.success !== true) {
          onError(new Error(`Claim failed: ${answer.errorReason} ${answer.errorMessage ?? ''}`))
          continue
        }
        for (const channel of claimed) {
          const amount = amounts[batch.indexOf(channel)]!
          if (amount > channel.totalClaimed) {
            result.claimed += amount - channel.totalClaimed
            unclaimed -= amount - channel.totalClaimed
            channel.totalClaimed = amount
            journal.touch(channel.id)
          }
        }
        result.channels += claimed.length
        const receivers = new Map(claimed.map(({ config }) => [`${config.receiver}:${config.token}`, config]))
        for (const { receiver, token } of receivers.values()) {
          const swept = await submitSweep(operations, network, receiver, token)
          if (swept.success === true) result.transactions.push(swept.transaction)
          else onError(new Error(`Sweep to ${receiver} failed: ${swept.errorReason} ${swept.errorMessage ?? ''}`))
        }
      }
      if (result.channels > 0) results.push(result)
    }
    return results
  }

  async function refund(channelIds?: readonly string[]) {
    if (!loaded) await ready()
    const targets = channelIds
      ? channelIds.map((id) => channels.get(id.toLowerCase())).filter((channel) => channel !== undefined)
      : [...channels.values()]
    const done: { channelId: Hex; transaction: string }[] = []
    for (const target of targets) {
      if (target.balance <= target.charged) continue
      const answer = await refundNow(target, target.balance - target.charged)
      if (answer.success === true) done.push({ channelId: target.id, transaction: answer.transaction })
      else onError(new Error(`Refund of channel ${target.id} failed: ${answer.errorReason} ${answer.errorMessage ?? ''}`))
    }
    return done
  }

  async function refresh(channelIds?: readonly string[]) {
    if (!loaded) await ready()
    const targets = channelIds
      ? channelIds.map((id) => channels.get(id.toLowerCase())).filter((channel) => channel !== undefined)
      : [...channels.values()]
    await Promise.all(
      targets
        .filter((channel) => channel.signature)
        .map(async (channel) => {
          const { config } = channel
          const accepted: PaymentRequirements = {
            scheme: Channel.scheme,
            network: channel.network,
            asset: config.token,
            amount: '0',
            payTo: config.receiver,
            maxTimeoutSeconds: 0,
            extra: { receiverAuthorizer: config.receiverAuthorizer, withdrawDelay: config.withdrawDelay },
          }
          // A refund-type voucher is the zero-charge form the facilitator verifies against the escrow, reporting its state.
          const payload = {
            type: 'refund',
            channelConfig: config,
            voucher: { channelId: channel.id, maxClaimableAmount: channel.charged.toString(), signature: channel.signature },
          }
          const answer = await facilitator.verify({ payload: { x402Version: 2, accepted, payload }, requirements: accepted })
          const state = readState((answer as { extra?: unknown }).extra)
          if (!state) return
          channel.balance = state.balance
          if (state.totalClaimed > channel.totalClaimed) {
            let reached = state.totalClaimed
            if (reached > channel.charged) reached = channel.charged
            unclaimed -= reached - channel.totalClaimed
            channel.totalClaimed = state.totalClaimed
          }
          // Claimed beyond what this seller charged (elsewhere): vouchers up to there are worth nothing now.
          if (channel.charged < channel.totalClaimed) channel.charged = channel.totalClaimed
          channel.withdrawRequestedAt = state.withdrawRequestedAt
          channel.refundNonce = state.refundNonce
          journal.touch(channel.id)
        }),
    )
  }

  const timers: ReturnType<typeof setInterval>[] = []
  const every = (ms: number | undefined, task: () => Promise<unknown>) => {
    if (ms === undefined) return
    const timer = setInterval(() => void task().catch(onError), ms)
    timer.unref?.()
    timers.push(timer)
  }
  every(options.claims?.intervalMs, claim)
  const refreshMs = options.refreshIntervalMs ?? 300_000
  every(refreshMs, () => {
    const since = Date.now() - 2 * refreshMs
    return refresh([...channels.values()].filter((channel) => channel.lastRequestAt >= since).map(({ id }) => id))
  })
  const idle = options.refundIdleAfterMs
  if (idle !== undefined)
    every(Math.max(1_000, Math.min(idle, 60_000)), () =>
      refund([...channels.values()].filter((channel) => Date.now() - channel.lastRequestAt >= idle).map(({ id }) => id)),
    )

  return {
    ...base,
    verify: (payment) => (payment.requirements.scheme === Channel.scheme ? verify(payment) : undefined),
    settle: (payment) => (payment.requirements.scheme === Channel.scheme ? settle(payment) : undefined),
    release,
    ready,
    claim,
    refund,
    refresh,
    channel: (channelId) => channels.get(channelId.toLowerCase()),
    flush: () => journal.flushed(),
    async close() {
      for (const timer of timers) clearInterval(timer)
      await Promise.all([journal.close(), recovery.close()])
    },
  }
}

/**
 * A voucher request not settled nor released within this long is taken as abandoned (its answer was
 * never sent); the next voucher on its channel is served. `settle` still charges one increment once.
 */
const abandonedAfterMs = 120_000

/** Refusals of a voucher whose payer has lost count of what the channel was charged. */
const miscounted = new Set<string>([
  Reason.batchVoucherAlreadyUsed,
  Reason.batchCumulativeBelowClaimed,
  Reason.batchCumulativeAmountMismatch,
])

function channelState(channel: SellerChannel) {
  return {
    channelId: channel.id,
    balance: channel.balance.toString(),
    totalClaimed: channel.totalClaimed.toString(),
    withdrawRequestedAt: channel.withdrawRequestedAt,
    refundNonce: channel.refundNonce.toString(),
    chargedCumulativeAmount: channel.charged.toString(),
  }
}

/** A channel's escrow state as a facilitator reports it (`extra` of verify, `extra.channelState` of settle). */
function readState(value: unknown) {
  if (typeof value !== 'object' || value === null) return undefined
  const { balance, totalClaimed, withdrawRequestedAt, refundNonce } = value as Record<string, unknown>
  const amount = (text: unknown) => (typeof text === 'string' && /^\d{1,78}$/.test(text) ? BigInt(text) : undefined)
  const balanceValue = amount(balance)
  if (balanceValue === undefined) return undefined
  return {
    balance: balanceValue,
    totalClaimed: amount(totalClaimed) ?? 0n,
    withdrawRequestedAt: typeof withdrawRequestedAt === 'number' ? withdrawRequestedAt : 0,
    refundNonce: amount(refundNonce) ?? 0n,
  }
}
