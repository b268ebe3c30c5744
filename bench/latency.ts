/**
 * One paid request taken apart: the unpaid GET answered 402, signing the payment, `/verify` and
 * `/settle` at the stack's facilitator, each step done explicitly with that stack's own pieces.
 * Every run is a fresh payment (a new random EIP-3009 nonce) by the same payer, whose scheme client
 * the warm-up runs have built.
 */
import { messageOf } from './load.ts'
import type { Outcome, Stack, StackName } from './stacks.ts'

export const phases = ['402', 'sign', 'verify', 'settle'] as const
export type Phase = (typeof phases)[number]

export type Split = {
  stack: StackName
  runs: number
  /** Milliseconds of each counted run, per phase. */
  samples: Record<Phase, number[]>
  /** Why runs did not verify or settle. */
  failures: string[]
  /** Settlements that succeeded, warm-up runs included. */
  settled: number
  /** Increase of the payTo's USDC balance over all runs, atomic units. */
  received: bigint
}

export async function latencySplit(stack: Stack, options: { runs: number; warmup: number }): Promise<Split> {
  const samples: Record<Phase, number[]> = { '402': [], sign: [], verify: [], settle: [] }
  const failures: string[] = []
  let settled = 0
  const account = stack.payers[0]!
  const before = await stack.devnet.usdcBalance(stack.payTo)
  for (let run = 0; run < options.warmup + options.runs; run++) {
    const counted = run >= options.warmup
    const times: Partial<Record<Phase, number>> = {}
    try {
      let at = performance.now()
      const lap = (phase: Phase) => {
        const now = performance.now()
        times[phase] = now - at
        at = now
      }
      const asked = await stack.steps.ask()
      lap('402')
      const signed = await asked.sign(account)
      lap('sign')
      const verified = await signed.verify()
      lap('verify')
      check(verified, 'verify')
      const settlement = await signed.settle()
      lap('settle')
      check(settlement, 'settle')
      settled++
    } catch (error) {
      failures.push(messageOf(error))
    }
    if (counted) for (const phase of phases) if (times[phase] !== undefined) samples[phase].push(times[phase])
  }
  const received = (await stack.devnet.usdcBalance(stack.payTo)) - before
  return { stack: stack.name, runs: options.runs, samples, failures, settled, received }
}

function check(outcome: Outcome, step: 'verify' | 'settle') {
  if (!outcome.ok) throw new Error(`${step}: ${outcome.reason}`)
}
