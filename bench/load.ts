/**
 * The load generator: `payers` concurrent payers, each with its own funded account, each looping
 * "one paid request, then the next" until the point's time is up. Only payments that settled are
 * counted, and the payTo's USDC balance is read before and after to show they did.
 */
import type { Address } from 'viem'
import { type CpuTime, cpuTime, elapsedCpu, machineBusy } from './cpu.ts'
import type { Outcome, Stack, StackName } from './stacks.ts'

export type LoadOptions = {
  /** How long payers start new requests; the requests in flight then finish. */
  seconds: number
  /** Deadline of each paid request, after which it counts as failed. */
  requestTimeoutMs: number
  /** Bound on the requests of one payer in one point. */
  maxRequestsPerPayer: number
}

export type Point = {
  stack: StackName
  blockTime: number
  payers: number
  /** Wall time from the first request to the last payer's last answer. */
  elapsedMs: number
  /** How long payers started requests. */
  windowMs: number
  /** From the first request to the last successful answer. */
  settledSpanMs: number
  successes: number
  failures: number
  /** Failure reasons, grouped, with their counts. */
  reasons: Map<string, number>
  /** Latency of each successful paid request, in ms. */
  latencies: number[]
  /** Increase of the payTo's USDC balance, atomic units. */
  received: bigint
  /** CPU each process of the stack used while the payers ran, in seconds. */
  cpu: CpuTime
  /** CPU the rest of the machine used meanwhile (other processes), in seconds; `undefined` if unknown. */
  otherCpu: number | undefined
  /** Transactions still in anvil's pool once the point had drained (should be none). */
  leftover: Leftover
}

/** How long to wait after a point for the transactions still in the pool to be mined. */
const drainTimeoutMs = 30_000

export async function runPoint(stack: Stack, payers: number, options: LoadOptions): Promise<Point> {
  if (payers > stack.payers.length) throw new Error(`bench: ${payers} payers wanted, the devnet funds ${stack.payers.length}`)
  const before = await stack.devnet.usdcBalance(stack.payTo)
  const clients = stack.payers.slice(0, payers).map((account) => stack.client(account))
  const reasons = new Map<string, number>()
  const latencies: number[] = []
  let failures = 0
  let lastSuccess = 0

  const cpuBefore = cpuTime(stack.processes)
  const busyBefore = machineBusy()
  const started = performance.now()
  const deadline = started + options.seconds * 1000
  await Promise.all(
    clients.map(async (pay) => {
      for (let count = 0; count < options.maxRequestsPerPayer && performance.now() < deadline; count++) {
        const at = performance.now()
        let outcome: Outcome
        try {
          outcome = await pay(AbortSignal.timeout(options.requestTimeoutMs))
        } catch (error) {
          outcome = { ok: false, reason: `thrown: ${messageOf(error)}` }
        }
        const answered = performance.now()
        if (outcome.ok) {
          latencies.push(answered - at)
          lastSuccess = Math.max(lastSuccess, answered)
        } else {
          failures++
          const key = reasonKey(outcome.reason)
          reasons.set(key, (reasons.get(key) ?? 0) + 1)
        }
      }
    }),
  )
  const elapsedMs = performance.now() - started
  const cpu = elapsedCpu(cpuBefore, cpuTime(stack.processes))
  const busyAfter = machineBusy()
  const stackCpu = Object.values(cpu).reduce((total, { user, system }) => total + user + system, 0)
  const otherCpu = busyBefore === undefined || busyAfter === undefined ? undefined : Math.max(0, busyAfter - busyBefore - stackCpu)
  const leftover = await drain(stack)
  const received = (await stack.devnet.usdcBalance(stack.payTo)) - before
  return {
    stack: stack.name,
    blockTime: stack.blockTime,
    payers,
    elapsedMs,
    windowMs: options.seconds * 1000,
    settledSpanMs: lastSuccess > 0 ? lastSuccess - started : 0,
    successes: latencies.length,
    failures,
    reasons,
    latencies,
    received,
    cpu,
    otherCpu,
    leftover,
  }
}

export type Leftover = {
  pending: number
  queued: number
  /** Per sender with queued transactions: how many, from which nonce, and the sender's nonce on chain. */
  queuedBy: { sender: string; count: number; lowestNonce: number; chainNonce: number }[]
}

/**
 * Waits until anvil's pool has no pending transaction (all mined), within a bound. Transactions
 * left "queued" wait for a nonce that never comes; they are described, since they explain a stall.
 */
export async function drain(stack: Stack): Promise<Leftover> {
  const { publicClient } = stack.devnet
  const deadline = Date.now() + drainTimeoutMs
  for (;;) {
    const status = (await publicClient.request({ method: 'txpool_status' } as never)) as { pending: string; queued: string }
    const pending = Number(status.pending)
    const queued = Number(status.queued)
    if (pending === 0 || Date.now() > deadline) {
      if (queued === 0) return { pending, queued, queuedBy: [] }
      const inspect = (await publicClient.request({ method: 'txpool_inspect' } as never)) as {
        queued?: Record<string, Record<string, unknown>>
      }
      const queuedBy = await Promise.all(
        Object.entries(inspect.queued ?? {}).map(async ([sender, byNonce]) => {
          const nonces = Object.keys(byNonce).map(Number)
          const chainNonce = await publicClient.getTransactionCount({ address: sender as Address })
          const name = sender.toLowerCase() === stack.signer.toLowerCase() ? 'facilitator signer' : sender
          return { sender: name, count: nonces.length, lowestNonce: Math.min(...nonces), chainNonce }
        }),
      )
      return { pending, queued, queuedBy }
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/**
 * Groups failure reasons: the first line of the message (with viem's `Details:` line, which holds
 * what the node said), with the parts that differ per payment (hashes, addresses, large numbers)
 * replaced, so that one cause is one row.
 */
export function reasonKey(reason: string): string {
  const lines = reason.split('\n').map((line) => line.trim())
  const first = lines.find((line) => line) ?? reason
  const details = lines.find((line) => line.startsWith('Details:'))
  return [first, details]
    .filter((part) => part)
    .join(' ')
    .replace(/0x[0-9a-fA-F]{8,}/g, '0x…')
    .replace(/\d{5,}/g, '#')
    .replace(/\s+/g, ' ')
    .slice(0, 220)
}

export function messageOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const cause = error.cause instanceof Error ? ` (${error.cause.message})` : ''
  return `${error.name}: ${error.message}${cause}`
}
