/**
 * Admission from cache: a payment whose payer was seen funded a few blocks ago is verified without a
 * chain call. Everything PROTOCOL.md lists that needs no chain still runs (terms, EIP-712 domain
 * against the token's cached name and version, the signature recovered locally), and our own store
 * still decides whether the nonce is taken; the chain's answers are the ones read last for this payer:
 *
 * - the balance, read at most `maxAgeBlocks` blocks ago, less every payment of the payer this
 *   process admitted and has not seen end (unmined when the balance was read, or admitted since);
 * - the nonce's `authorizationState` is not read: a payment that ended here lately is read on chain
 *   again, and a facilitator's store refuses a key it holds; a random 32-byte nonce is otherwise
 *   unused unless the payer spent it elsewhere, which the settlement finds (`exact_evm_nonce_already_used`,
 *   recorded failed).
 *
 * Settlement checks the chain again in every case (the pipeline's per-item outcomes, or the re-check
 * before a single transfer), so a payment admitted here that the chain refuses is recorded `failed`
 * with its reason, never settled twice; what a seller can lose to it is what it serves before the
 * settlement, which the per-payer cap on unsettled value (`maxUnsettled`) bounds in after-response mode.
 */
import type { Address } from 'viem'
import type { NetworkState } from './state.ts'

export type AdmissionConfig = {
  /**
   * How many blocks old a payer's balance may be and still admit a payment without a chain read;
   * default 2. A balance read at block `b` is not used once the chain's head is at `b + maxAgeBlocks`.
   */
  maxAgeBlocks?: number
}

/** A payer's balance as read, and what was admitted against it since. */
type Funds = { balance: bigint; block: bigint; debited: bigint }

/** What this process admitted for a payer and has not seen settled or failed, by settlement key. */
type Pending = { total: bigint; payments: Map<string, { value: bigint; at: number }> }

export type Admission = {
  maxAgeBlocks: number
  funds: Map<string, Funds>
  pending: Map<string, Pending>
  owners: Map<string, string>
  /** Settlement keys of payments that ended here lately, oldest first: asked again, they are read on chain. */
  finished: Set<string>
  head: { block: bigint; at: number } | undefined
  polling: NodeJS.Timeout | undefined
  lastUsed: number
}

/** How long an admitted payment counts against its payer without an outcome (one that never was queued). */
const pendingMs = 10 * 60_000
/** A head reading older than this many polling intervals is not trusted. */
const headIntervals = 2
/** The head is polled for this long after the last admission that asked for it. */
const pollForMs = 10_000
/** How many ended payments are remembered. */
const finishedMax = 100_000

const admissions = new WeakMap<NetworkState, Admission>()

export function admissionOf(state: NetworkState, config: AdmissionConfig | false | undefined): Admission | undefined {
  if (config === false) return undefined
  let admission = admissions.get(state)
  if (!admission) {
    admission = {
      maxAgeBlocks: Math.max(1, config?.maxAgeBlocks ?? 2),
      funds: new Map(),
      pending: new Map(),
      owners: new Map(),
      finished: new Set(),
      head: undefined,
      polling: undefined,
      lastUsed: 0,
    }
    admissions.set(state, admission)
  }
  return admission
}

const payerKey = (asset: Address, payer: Address) => `${asset} ${payer}`.toLowerCase()

/**
 * The chain's head as last polled, when recent enough to judge a balance's age by; starts polling
 * (every `pollingIntervalMs`, for a while after the last call) when it is not.
 */
export function headOf(state: NetworkState, admission: Admission, now = Date.now()): bigint | undefined {
  admission.lastUsed = now
  if (!admission.polling) {
    const poll = () => {
      state.reader.getBlockNumber({ cacheTime: 0 }).then(
        (block) => {
          if (!admission.head || block >= admission.head.block) admission.head = { block, at: Date.now() }
        },
        () => {},
      )
      if (Date.now() - admission.lastUsed > pollForMs) {
        clearInterval(admission.polling)
        admission.polling = undefined
      }
    }
    admission.polling = setInterval(poll, state.pollingIntervalMs)
    admission.polling.unref()
    poll()
  }
  const { head } = admission
  return head && now - head.at <= state.pollingIntervalMs * headIntervals ? head.block : undefined
}

/**
 * Admits `value` from the payer's cached balance: true when a balance read fewer than `maxAgeBlocks`
 * blocks before `head` covers it beside everything admitted against it; the payment then counts as pending.
 */
export function admitFromCache(
  admission: Admission,
  input: { asset: Address; payer: Address; value: bigint; key: string; head: bigint | undefined },
): boolean {
  if (input.head === undefined || admission.finished.has(input.key)) return false
  const funds = admission.funds.get(payerKey(input.asset, input.payer))
  if (!funds || input.head - funds.block >= BigInt(admission.maxAgeBlocks)) return false
  if (funds.balance - funds.debited < input.value) return false
  funds.debited += input.value
  addPending(admission, input)
  return true
}

/**
 * Records a payment admitted on a fresh read: `balance` as read at `block` (or at an unknown block:
 * nothing is cached), against which every pending payment of the payer counts, this one included.
 */
export function admitFromRead(
  admission: Admission,
  input: { asset: Address; payer: Address; value: bigint; key: string; balance: bigint; block: bigint | undefined },
) {
  const pending = addPending(admission, input)
  const key = payerKey(input.asset, input.payer)
  if (input.block === undefined) return
  const known = admission.funds.get(key)
  // A read that went out before a later one's block says less: keep the newer.
  if (known && known.block > input.block) return
  admission.funds.set(key, { balance: input.balance, block: input.block, debited: pending })
}

function addPending(admission: Admission, input: { asset: Address; payer: Address; value: bigint; key: string }): bigint {
  const key = payerKey(input.asset, input.payer)
  const now = Date.now()
  let pending = admission.pending.get(key)
  if (!pending) {
    pending = { total: 0n, payments: new Map() }
    admission.pending.set(key, pending)
  }
  for (const [settlement, { value, at }] of pending.payments) {
    // Oldest first: stop at the first one still within its time.
    if (now - at < pendingMs) break
    pending.payments.delete(settlement)
    admission.owners.delete(settlement)
    pending.total -= value
  }
  if (!pending.payments.has(input.key)) {
    pending.payments.set(input.key, { value: input.value, at: now })
    admission.owners.set(input.key, key)
    pending.total += input.value
  }
  return pending.total
}

/**
 * A payment ended (settled or failed): it no longer counts against balances read from now on. A
 * balance read before it settled still has it debited, since that balance had not yet paid it.
 */
export function ended(admission: Admission, settlementKey: string) {
  admission.finished.add(settlementKey)
  if (admission.finished.size > finishedMax) admission.finished.delete(admission.finished.values().next().value!)
  const key = admission.owners.get(settlementKey)
  if (key === undefined) return
  admission.owners.delete(settlementKey)
  const pending = admission.pending.get(key)
  const entry = pending?.payments.get(settlementKey)
  if (!pending || !entry) return
  pending.payments.delete(settlementKey)
  pending.total -= entry.value
  if (pending.payments.size === 0) admission.pending.delete(key)
}
