/**
 * The printed report: plain-text tables, ours beside the reference, with the ratio ours/reference.
 */

import os from 'node:os'
import type { ChannelFigures } from './channels.ts'
import { type Phase, phases, type Split } from './latency.ts'
import type { Point } from './load.ts'
import type { PipelineFigures, Throughput } from './pipeline.ts'
import { priceAtomic } from './stacks.ts'

export type Machine = {
  cpus: number
  cpuModel: string
  memoryGiB: number
  node: string
  platform: string
  anvil: string
  reference: string
  code: string
}

export function machine(versions: { anvil: string; reference: string; code: string }): Machine {
  const cpus = os.cpus()
  return {
    cpus: os.availableParallelism?.() ?? cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    ...versions,
  }
}

export type Report = {
  machine: Machine
  settings: {
    gasLimit: bigint
    framework: string
    seconds: Record<number, number>
    requestTimeoutMs: number
    runs: number
    warmup: number
  }
  splits: { ours: Split; reference: Split } | undefined
  points: Point[]
  setupRetries: string[]
  /** The machine's load average (1, 5, 15 min) as the run began: other work on a shared machine shows here. */
  loadAtStart: number[]
  elapsedMs: number
}

export function render(report: Report): string {
  const { machine: m, settings: s } = report
  const lines: string[] = []
  lines.push('x402kit bench: ours vs the reference x402 SDK, same run, same machine, local chain')
  lines.push('')
  lines.push(`machine    ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB, ${m.platform}`)
  lines.push(`           load average when the run began ${report.loadAtStart.map((load) => load.toFixed(2)).join(' / ')} (1 / 5 / 15 min)`)
  lines.push(`software   Node ${m.node}, anvil ${m.anvil}, reference @x402/* ${m.reference}, x402kit ${m.code}`)
  lines.push(
    `setup      price $0.001 (${priceAtomic} atomic USDC), one facilitator signer key per stack, block gas limit ${group(s.gasLimit)},`,
  )
  lines.push(`           a fresh anvil and stack for every measurement; facilitator and resource server each in a child process,`)
  lines.push(`           payers in the bench process; resource servers: ours ${s.framework} + paywall, reference Express + @x402/express;`)
  lines.push(
    '           receipts polled by ours every 250 ms, by the reference (viem, from chain.blockTime) every 500 ms at block time 0, 1 s at 2 s',
  )
  if (report.setupRetries.length > 0)
    lines.push(
      `           devnet starts retried: ${report.setupRetries.length} (${[...new Set(report.setupRetries)].join('; ').slice(0, 300)})`,
    )

  if (report.splits) {
    const { ours, reference } = report.splits
    lines.push('')
    lines.push(`1. One paid request, step by step (block time 0; median of ${s.runs} fresh payments after ${s.warmup} warm-up; ms)`)
    lines.push('')
    const rows: string[][] = [['phase', 'ours', 'reference', 'ours/ref']]
    const total = (split: Split) => sum(phases.map((phase) => median(split.samples[phase])))
    for (const phase of phases)
      rows.push([
        label(phase),
        ms(median(ours.samples[phase])),
        ms(median(reference.samples[phase])),
        ratio(ours.samples[phase], reference.samples[phase]),
      ])
    rows.push(['sum of medians', ms(total(ours)), ms(total(reference)), fixed(total(ours) / total(reference))])
    lines.push(...table(rows, [0]))
    for (const split of [ours, reference])
      if (split.failures.length > 0)
        lines.push(`   ${split.stack} failed ${split.failures.length} run(s): ${[...new Set(split.failures)].slice(0, 3).join(' | ')}`)
    lines.push('   (ours/ref below 1: ours is faster)')
  }

  if (report.points.length > 0) {
    lines.push('')
    const seconds = Object.entries(s.seconds)
      .map(([blockTime, secs]) => `${secs} s at block time ${blockTime}`)
      .join(', ')
    lines.push(`2. Sustained paid requests per second, full flow client → server → facilitator → chain (${seconds})`)
    lines.push('   payers start requests only within the window; ok = 2xx with a successful settlement; req/s = ok / the longer of')
    lines.push('   the window and the time to the last ok answer; p50/p90 = latency of the ok requests, ms')
    lines.push('')
    const rows: string[][] = [
      ['block', 'payers', 'ours req/s', 'ok', 'failed', 'p50/p90', 'ref req/s', 'ok', 'failed', 'p50/p90', 'ours/ref req/s'],
    ]
    for (const [blockTime, payers] of pairs(report.points)) {
      const ours = find(report.points, 'ours', blockTime, payers)
      const reference = find(report.points, 'reference', blockTime, payers)
      rows.push([`${blockTime} s`, String(payers), ...cells(ours), ...cells(reference), rpsRatio(ours, reference)])
    }
    lines.push(...table(rows, [0, 1]))
    lines.push('   (ours/ref above 1: ours settles more paid requests per second)')

    lines.push('')
    lines.push('3. Failure reasons (count × reason, as each stack reported it)')
    const failing = report.points.filter((point) => point.failures > 0)
    if (failing.length === 0) lines.push('   none')
    for (const point of failing) {
      lines.push(`   ${point.stack}, block time ${point.blockTime} s, ${point.payers} payers: ${point.failures} failed`)
      const sorted = [...point.reasons].sort((a, b) => b[1] - a[1])
      for (const [reason, count] of sorted.slice(0, 6)) lines.push(`     ${String(count).padStart(6)} × ${reason}`)
      if (sorted.length > 6) lines.push(`     …and ${sorted.length - 6} more reasons`)
    }

    lines.push('')
    lines.push('4. Honesty check: the payTo’s USDC balance increase equals successes × price')
    lines.push('')
    const checks: string[][] = [['stack', 'block', 'payers', 'successes', 'expected', 'payTo increase', 'check', 'left in pool']]
    if (report.splits)
      for (const split of [report.splits.ours, report.splits.reference])
        checks.push([
          split.stack,
          '0 s',
          'split',
          String(split.settled),
          usdc(BigInt(split.settled) * priceAtomic),
          usdc(split.received),
          mark(BigInt(split.settled) * priceAtomic, split.received),
          '',
        ])
    for (const point of report.points) {
      const expected = BigInt(point.successes) * priceAtomic
      const pool =
        point.leftover.pending + point.leftover.queued > 0 ? `${point.leftover.pending} pending, ${point.leftover.queued} queued` : 'none'
      checks.push([
        point.stack,
        `${point.blockTime} s`,
        String(point.payers),
        String(point.successes),
        usdc(expected),
        usdc(point.received),
        mark(expected, point.received),
        pool,
      ])
    }
    lines.push(...table(checks, [0, 1, 2, 6, 7]))
    for (const point of report.points)
      for (const queued of point.leftover.queuedBy)
        lines.push(
          `   ${point.stack}, block time ${point.blockTime} s, ${point.payers} payers: ${queued.count} transaction(s) of the ${queued.sender} ` +
            `parked as queued from nonce ${queued.lowestNonce}; its nonce on chain is ${queued.chainNonce}` +
            (queued.lowestNonce === queued.chainNonce
              ? ' (no gap: anvil never promoted them)'
              : ` (gap below nonce ${queued.lowestNonce})`),
        )

    const measured = report.points.filter((point) => Object.keys(point.cpu).length > 0)
    if (measured.length > 0) {
      lines.push('')
      lines.push(`5. CPU: cores busy while the payers ran (user + system; ${m.cpus} available), ms of CPU per settled request,`)
      lines.push('   and cores busy with other work on the machine meanwhile (not part of either stack)')
      lines.push('')
      const roles = ['payers', 'server', 'facilitator', 'anvil']
      const rows: string[][] = [['stack', 'block', 'payers', ...roles, 'total', 'system share', 'CPU ms/ok', 'other work']]
      for (const point of measured) {
        const seconds = point.elapsedMs / 1000
        const used = roles.map((role) => (point.cpu[role] ? point.cpu[role].user + point.cpu[role].system : 0))
        const total = sum(used)
        const system = sum(roles.map((role) => point.cpu[role]?.system ?? 0))
        rows.push([
          point.stack,
          `${point.blockTime} s`,
          String(point.payers),
          ...used.map((value) => (value / seconds).toFixed(2)),
          (total / seconds).toFixed(2),
          total > 0 ? `${Math.round((system / total) * 100)} %` : '-',
          point.successes > 0 ? ((total * 1000) / point.successes).toFixed(1) : '-',
          point.otherCpu === undefined ? '-' : (point.otherCpu / seconds).toFixed(2),
        ])
      }
      lines.push(...table(rows, [0, 1, 2]))
    }
  }

  lines.push('')
  lines.push(`bench took ${(report.elapsedMs / 1000).toFixed(0)} s`)
  return lines.join('\n')
}

function cells(point: Point | undefined): string[] {
  if (!point) return ['-', '-', '-', '-']
  const latency = point.latencies.length ? `${ms(median(point.latencies))}/${ms(percentile(point.latencies, 0.9))}` : '-'
  return [rps(point).toFixed(1), String(point.successes), String(point.failures), latency]
}

function rpsRatio(ours: Point | undefined, reference: Point | undefined): string {
  if (!ours || !reference) return '-'
  const theirs = rps(reference)
  return theirs === 0 ? (rps(ours) === 0 ? '-' : '∞ (ref 0)') : fixed(rps(ours) / theirs)
}

/**
 * The sustained rate: settled requests over the window, or over the span they were settled in where
 * that is longer. For payers in a closed loop the span is exact, where counting only the answers
 * inside the window is off by up to one round of answers; a request that hangs past the window and
 * fails does not stretch the span; a stack that stops settling is still charged the whole window.
 */
export function rps(point: Point): number {
  return point.successes / (Math.max(point.windowMs, point.settledSpanMs) / 1000)
}

function pairs(points: Point[]): [number, number][] {
  const seen = new Map<string, [number, number]>()
  for (const point of points) seen.set(`${point.blockTime}/${point.payers}`, [point.blockTime, point.payers])
  return [...seen.values()]
}

function find(points: Point[], stack: string, blockTime: number, payers: number): Point | undefined {
  return points.find((point) => point.stack === stack && point.blockTime === blockTime && point.payers === payers)
}

function label(phase: Phase): string {
  return { '402': '402 (unpaid GET)', sign: 'sign payload', verify: 'POST /verify', settle: 'POST /settle' }[phase]
}

function ratio(ours: number[], reference: number[]): string {
  if (ours.length === 0 || reference.length === 0) return '-'
  return fixed(median(ours) / median(reference))
}

export function median(values: readonly number[]): number {
  return percentile(values, 0.5)
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const index = (sorted.length - 1) * p
  const low = Math.floor(index)
  const high = Math.ceil(index)
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (index - low)
}

function sum(values: number[]): number {
  return values.reduce((total, value) => total + value, 0)
}

function ms(value: number): string {
  if (Number.isNaN(value)) return '-'
  return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0)
}

function fixed(value: number): string {
  return Number.isFinite(value) ? value.toFixed(2) : '-'
}

function usdc(atomic: bigint): string {
  const whole = atomic / 1_000_000n
  const fraction = (atomic % 1_000_000n).toString().padStart(6, '0')
  return `$${whole}.${fraction}`
}

function mark(expected: bigint, received: bigint): string {
  return expected === received ? 'equal' : `DIFFERS by ${usdc(received - expected)}`
}

function group(value: bigint): string {
  return value.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',')
}

/** Rows as aligned columns: the columns in `left` are aligned left, the rest right. */
function table(rows: string[][], left: number[]): string[] {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)))
  return rows.map(
    (row) =>
      `   ${row
        .map((cell, column) => (left.includes(column) ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
        .join('  ')
        .trimEnd()}`,
  )
}

/** The settlement pipeline beside the reference facilitator (`pipeline.ts`). */
export function renderPipeline(figures: PipelineFigures): string {
  const { settings: s, ours, reference } = figures
  const lines: string[] = []
  const store = s.database === 'postgres' ? 'PostgreSQL (DATABASE_URL)' : 'PGlite in a local folder'
  lines.push(`7. Settlement pipeline beside the reference facilitator (same run, same chain)`)
  lines.push('')
  lines.push(
    `   chain      anvil, ${s.blockTime} s blocks, block gas limit ${group(s.gasLimit)} (far above what either stack fills: not the bottleneck)`,
  )
  lines.push(`   ours       in-process createFacilitator, pipeline with ${s.signers} signer keys, maxItems ${s.maxItems}, store ${store};`)
  lines.push(`              ${ours.submitted} payments from ${s.payers} payers through enqueue, ${s.concurrency} in flight`)
  lines.push(
    `   reference  in-process x402Facilitator (@x402/*), one signer key, settle ${s.referenceConcurrency} at a time for ${s.referenceSeconds} s`,
  )
  lines.push(`   payments signed before the clock starts (${figures.signingSeconds.toFixed(1)} s); price ${usdc(priceAtomic)}`)
  lines.push('')
  const perPayment = (t: Throughput) => (t.settled > 0 ? t.gasUsed / BigInt(t.settled) : 0n)
  const ourGas = perPayment(ours)
  const singleGas = perPayment(reference)
  const rows: string[][] = [
    ['', 'ours', 'reference', 'ours/ref', 'target'],
    [
      'settled payments per second',
      ours.perSecond.toFixed(1),
      reference.perSecond.toFixed(1),
      times(ours.perSecond, reference.perSecond),
      '≥ 1,000',
    ],
    ['settled / submitted', `${ours.settled} / ${ours.submitted}`, `${reference.settled} / ${reference.submitted}`, '', ''],
    ['seconds, first submission → last settled', ours.seconds.toFixed(1), reference.seconds.toFixed(1), '', ''],
    ['transactions', String(ours.transactions), String(reference.transactions), '', ''],
    ['gas per payment', group(ourGas), group(singleGas), percent(ourGas, singleGas), '≤ 60 %'],
  ]
  lines.push(...table(rows, [0]))
  lines.push(
    `   ours queued every payment in ${ours.queuedSeconds?.toFixed(1)} s (${(ours.submitted / (ours.queuedSeconds ?? 1)).toFixed(0)}/s durably queued)`,
  )
  lines.push('   gas: ours = the batches’ gasUsed / settled payments; reference = mean gasUsed of its one-payment transactions')
  for (const [who, t] of [
    ['ours', ours],
    ['reference', reference],
  ] as const)
    if (t.failed > 0)
      lines.push(
        `   ${who} failed ${t.failed}: ${[...t.reasons]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 3)
          .map(([reason, count]) => `${count} × ${reason}`)
          .join('; ')}`,
      )
  const expected = BigInt(ours.settled + reference.settled) * priceAtomic
  lines.push(
    `   honesty check: payTo received ${usdc(figures.received)} for ${ours.settled + reference.settled} settled × price: ${mark(expected, figures.received)}`,
  )
  lines.push('')
  lines.push('   CPU ms per settled payment (the process running the facilitator and its submitters, and anvil),')
  lines.push('   and the share of the machine other work took meanwhile')
  const cpuRows: string[][] = [['', 'facilitator', 'anvil', 'sum', 'other work']]
  for (const [who, t] of [
    ['ours', ours],
    ['reference', reference],
  ] as const) {
    const cpu = (name: string) => (t.cpu[name] ? t.cpu[name].user + t.cpu[name].system : 0)
    const per = (seconds: number) => (t.settled > 0 ? ((seconds * 1000) / t.settled).toFixed(2) : '-')
    const other =
      t.machineBusySeconds === undefined
        ? '-'
        : `${Math.max(0, ((t.machineBusySeconds - cpu('bench') - cpu('anvil')) / t.seconds) * 100).toFixed(0)} % of a core`
    cpuRows.push([who, per(cpu('bench')), per(cpu('anvil')), per(cpu('bench') + cpu('anvil')), other])
  }
  lines.push(...table(cpuRows, [0]))
  lines.push('')
  const { latency } = figures
  lines.push(
    `   Paid-request latency, ${s.blockTime} s blocks: payment header built beforehand; paid and free requests in turn, one at a time, ms`,
  )
  lines.push(
    `   ours: Hono + paywall, route settlement after-response with maxUnsettled $1, facilitator in-process (enqueue), ${s.latencyPayers} payers in turn;`,
  )
  lines.push('   ours, first payment: each paid request the first of its payer this facilitator sees (its balance is read on chain);')
  lines.push(
    '   reference: Express + @x402/express, its facilitator over loopback HTTP (settles before answering); free = an uncovered path',
  )
  lines.push('')
  const latencyRows: string[][] = [['', 'paid p50', 'paid p99', 'free p50', 'added p50', 'added p99', 'paid requests', 'failed']]
  for (const [who, l] of [
    ['ours', latency.ours],
    ['ours, first payment', latency.first],
    ['reference', latency.reference],
  ] as const) {
    if (who === 'ours, first payment' && !l) continue
    if (!l) {
      latencyRows.push([who, '-', '-', '-', '-', '-', '0', '-'])
      continue
    }
    const free50 = median(l.free)
    latencyRows.push([
      who,
      ms(median(l.paid)),
      ms(percentile(l.paid, 0.99)),
      ms(free50),
      ms(median(l.paid) - free50),
      ms(percentile(l.paid, 0.99) - percentile(l.free, 0.99)),
      String(l.paid.length),
      String(l.failures),
    ])
  }
  lines.push(...table(latencyRows, [0]))
  lines.push('   added = paid − free (p99: paid p99 − free p99); target for ours: added p50 < 5 ms')
  if (latency.note) lines.push(`   note: ${latency.note}`)
  return lines.join('\n')
}

function times(ours: number, reference: number): string {
  return reference > 0 ? `${(ours / reference).toFixed(0)}×` : '-'
}

function percent(part: bigint, whole: bigint): string {
  return whole > 0n ? `${((Number(part) / Number(whole)) * 100).toFixed(0)} %` : '-'
}

/** `batch-settlement` channels on the seller side beside per-request `exact` (`channels.ts`). */
export function renderChannels(figures: ChannelFigures): string {
  const { settings: s, paid, latency, gas } = figures
  const exact = figures.exact ?? { perSecond: Number.NaN, payments: 0, gasPerPayment: Number.NaN, payers: 0 }
  const ms = (value: number) => `${value.toFixed(2)} ms`
  const cpu = Object.entries(paid.cpu)
    .map(([name, { user, system }]) => `${name} ${((user + system) / paid.seconds).toFixed(2)} cores`)
    .join(', ')
  const lines = [
    '8. batch-settlement channels, seller side (vouchers checked by our server alone), beside per-request exact',
    '',
    ...table(
      [
        ['', 'channels', 'exact'],
        [
          'paid requests per second',
          `${paid.perSecond.toFixed(0)} (${s.channels} channels, one request in flight each, ${paid.seconds.toFixed(1)} s)`,
          `${exact.perSecond.toFixed(0)} (${exact.payers} payers, ${s.exactSeconds} s)`,
        ],
        [
          'gas per paid request',
          `${gas.perPaidRequest.toFixed(0)} (at ${s.vouchersPerChannel} requests per channel)`,
          `${exact.gasPerPayment.toFixed(0)}`,
        ],
        ['gas ratio', `${((100 * gas.perPaidRequest) / exact.gasPerPayment).toFixed(2)} % of exact`, ''],
      ],
      [0, 1, 2],
    ),
    '',
    `   paid requests ${paid.requests}, refused or failed ${paid.failures}; CPU while loaded: ${cpu}`,
    `   added latency (paid minus free, in turn, one request at a time, ${s.latencyRequests} each): p50 ${ms(latency.paidP50 - latency.freeP50)}, p99 ${ms(latency.paidP99 - latency.freeP99)}`,
    `   (free p50 ${ms(latency.freeP50)} p99 ${ms(latency.freeP99)}; paid p50 ${ms(latency.paidP50)} p99 ${ms(latency.paidP99)})`,
    `   gas: deposit ${gas.deposit.toFixed(0)} per channel, claim ${gas.claim} for ${gas.claimChannels} channels, sweep ${gas.sweep}; from receipts`,
    `   channel store: ${s.store}, written behind in group commits`,
  ]
  return lines.join('\n')
}
