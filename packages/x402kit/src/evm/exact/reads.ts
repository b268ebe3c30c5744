/**
 * The chain reads of verification (PROTOCOL.md, EIP-3009: the nonce unused, the balance, a simulated
 * transfer), for every payment being verified at the moment, in one `eth_call`: a Multicall3
 * `aggregate3` run without deployment (viem's deployless multicall), three calls per payment.
 *
 * The calls run one after another in one EVM state, so each payment is read after the transfers of
 * the payments before it in the same call: a payer whose payments of one moment together exceed the
 * balance sees the later ones refused for it, which one read per payment could not see. An idle
 * facilitator sends a payment's reads at once; a busy one sends what arrived while its calls were out.
 */
import { type Address, ContractFunctionRevertedError, ContractFunctionZeroDataError, type Hash, BaseError as ViemBaseError } from 'viem'
import { eip3009Abi } from './abi.ts'
import type * as Eip3009 from './Eip3009.ts'
import type { NetworkState } from './state.ts'

export type Read<value> = { ok: true; value: value } | { ok: false; error: unknown }

export type Reads = { used: Read<boolean>; balance: Read<bigint>; simulation: Read<unknown> | undefined }

export type ReadRequest = {
  asset: Address
  from: Address
  authorization: Eip3009.Authorization
  /** The `transferWithAuthorization` arguments to simulate, or none. */
  transfer: readonly unknown[] | undefined
}

type Pending = { request: ReadRequest; resolve(reads: Reads): void; reject(error: unknown): void }

/**
 * Calldata bytes per `eth_call`: a deployless call carries its calls in the creation code, which
 * EIP-3860 caps at 49,152 bytes (Multicall3’s own code takes 5.6 KB of it). A payment takes at most
 * 1,000 bytes and about 60,000 gas, so a call holds 40, far under any node’s call gas cap.
 */
const budget = 40_000
const perPayment = 1_000
/** Calls out at once per network; what arrives meanwhile waits for the next. */
const inFlight = 4

type Reader = { pending: Pending[]; running: number; scheduled: boolean }
const readers = new WeakMap<NetworkState, Reader>()

/**
 * The reads of one payment, sent with those of every other payment verified meanwhile. A transport
 * failure is thrown (never read as "invalid"); a reverting call is an answer (`ok: false`).
 */
export function readPayment(state: NetworkState, request: ReadRequest): Promise<Reads> {
  let reader = readers.get(state)
  if (!reader) {
    reader = { pending: [], running: 0, scheduled: false }
    readers.set(state, reader)
  }
  const promise = new Promise<Reads>((resolve, reject) => reader.pending.push({ request, resolve, reject }))
  schedule(state, reader)
  return promise
}

function schedule(state: NetworkState, reader: Reader) {
  if (reader.scheduled || reader.running >= inFlight || reader.pending.length === 0) return
  reader.scheduled = true
  // After the current I/O callbacks, so that payments arriving together go out together.
  setImmediate(() => {
    reader.scheduled = false
    while (reader.running < inFlight && reader.pending.length > 0) {
      const calls: Pending[] = []
      const later: Pending[] = []
      // An authorization read two ways at once (one simulated, one not: a verification beside a
      // settlement's check) goes in separate calls, so that no read sees the other's simulated transfer.
      const ways = new Map<string, string>()
      let bytes = 0
      for (const call of reader.pending) {
        const size = sizeOf(call.request)
        const { authorization, way } = keysOf(call.request)
        const seen = ways.get(authorization)
        if ((calls.length > 0 && bytes + size > budget) || (seen !== undefined && seen !== way)) later.push(call)
        else {
          ways.set(authorization, way)
          bytes += size
          calls.push(call)
        }
      }
      reader.pending = later
      reader.running++
      void send(state, calls).finally(() => {
        reader.running--
        schedule(state, reader)
      })
    }
  })
}

/** The authorization a request reads, and the exact reads it asks for (the same for a repeated request). */
function keysOf({ asset, from, authorization, transfer }: ReadRequest) {
  const of = `${asset} ${from} ${authorization.nonce}`.toLowerCase()
  return { authorization: of, way: `${of} ${transfer ? transfer.map(String).join(' ').toLowerCase() : '-'}` }
}

/** About how many calldata bytes a payment's reads add to a call; a long smart-wallet signature adds its length. */
function sizeOf(request: ReadRequest): number {
  const signature = request.transfer?.at(-1)
  return perPayment + (typeof signature === 'string' && request.transfer?.length === 7 ? signature.length / 2 : 0)
}

async function send(state: NetworkState, calls: Pending[]): Promise<void> {
  // The same transfer asked twice (two verifications of one payment) is read once, and answered to both.
  const distinct = new Map<string, Pending[]>()
  for (const call of calls) {
    const key = keysOf(call.request).way
    const same = distinct.get(key)
    if (same) same.push(call)
    else distinct.set(key, [call])
  }
  const groups = [...distinct.values()]
  const contracts = groups.flatMap(([first]) => {
    const { asset, from, authorization, transfer } = first!.request
    const reads = [
      { address: asset, abi: eip3009Abi, functionName: 'authorizationState', args: [from, authorization.nonce as Hash] },
      { address: asset, abi: eip3009Abi, functionName: 'balanceOf', args: [from] },
    ] as const
    return transfer ? [...reads, { address: asset, abi: eip3009Abi, functionName: 'transferWithAuthorization', args: transfer }] : reads
  })
  let results: { status: 'success' | 'failure'; result?: unknown; error?: Error }[]
  try {
    results = (await state.reader.multicall({
      contracts: contracts as never,
      allowFailure: true,
      deployless: true,
      batchSize: 0,
    })) as typeof results
    // viem reports a failed request as a failure of every call in it: that is the transport, not an answer.
    const transport = results.find((result) => result.status === 'failure' && !isRevert(result.error))
    if (transport) throw transport.error
  } catch (error) {
    for (const call of calls) call.reject(error)
    return
  }
  let next = 0
  for (const group of groups) {
    const read = <value>(): Read<value> => {
      const result = results[next++]!
      return result.status === 'success' ? { ok: true, value: result.result as value } : { ok: false, error: result.error }
    }
    const used = read<boolean>()
    const balance = read<bigint>()
    const simulation = group[0]!.request.transfer ? read<unknown>() : undefined
    for (const call of group) call.resolve({ used, balance, simulation })
  }
}

/** Whether a failed read is the contract reverting (an answer) rather than the node or the network failing. */
export function isRevert(error: unknown): boolean {
  if (!(error instanceof ViemBaseError)) return false
  return Boolean(
    error.walk(
      (e) =>
        e instanceof ContractFunctionRevertedError ||
        e instanceof ContractFunctionZeroDataError ||
        (e instanceof ViemBaseError && e.name === 'ExecutionRevertedError'),
    ),
  )
}
