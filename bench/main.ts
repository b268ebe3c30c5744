/**
 * `npm run bench`: our stack and the reference x402 SDK side by side on the local chain, in one run.
 *
 *   npm run bench               full run (8 s per point at block time 0, 12 s at 2 s; about 6 minutes)
 *   npm run bench -- --quick    smoke run (short points, fewer payers)
 *   npm run bench -- --pipeline-only   the settlement pipeline part alone (about 2 minutes; also BENCH_ONLY=pipeline)
 *   npm run bench -- --channels-only   the batch-settlement channel part alone (about 1 minute; also BENCH_ONLY=channels)
 *
 * Environment: BENCH_SECONDS (seconds per point, every block time), BENCH_RUNS (latency-split runs),
 * BENCH_FRAMEWORK (`express` or `hono`: our resource server's framework; default express, like the reference's),
 * DATABASE_URL and BENCH_PIPELINE_PAYMENTS (see `pipeline.ts`).
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { runChannelBench } from './channels.ts'
import { renderCredentialFigures, runCredentialBench } from './credential.ts'
import { latencySplit, type Split } from './latency.ts'
import { type Point, runPoint } from './load.ts'
import { runPipelineBench } from './pipeline.ts'
import { machine, type Report, render, renderChannels, renderPipeline, rps } from './report.ts'
import { type Stack, type StackName, setupRetries, startStack } from './stacks.ts'

const quick = process.argv.includes('--quick')
// The services the bench starts log their requests at info; the report goes to stdout, so only warnings are kept.
process.env.LOG_LEVEL ??= 'warn'

const pipelineOnly = process.argv.includes('--pipeline-only') || process.env.BENCH_ONLY === 'pipeline'
const channelsOnly = process.argv.includes('--channels-only') || process.env.BENCH_ONLY === 'channels'
const envSeconds = positive(process.env.BENCH_SECONDS, 'BENCH_SECONDS')
const framework = process.env.BENCH_FRAMEWORK === 'hono' ? 'hono' : 'express'

const settings = {
  blockTimes: [0, 2],
  seconds: { 0: envSeconds ?? (quick ? 2 : 8), 2: envSeconds ?? (quick ? 4 : 12) } as Record<number, number>,
  concurrency: quick ? [1, 128] : [1, 8, 32, 128],
  runs: positive(process.env.BENCH_RUNS, 'BENCH_RUNS') ?? (quick ? 5 : 20),
  warmup: 5,
  accounts: 140,
  gasLimit: 300_000_000n,
  requestTimeoutMs: 30_000,
  maxRequestsPerPayer: 100_000,
  framework,
}
const stackNames: StackName[] = ['ours', 'reference']

let current: Stack | undefined

async function main(): Promise<void> {
  if (pipelineOnly) return await pipelinePart()
  if (channelsOnly) return await channelsPart()
  const startedAt = performance.now()
  const loadAtStart = loadavg()
  const splits: Partial<Record<StackName, Split>> = {}
  for (const name of stackNames) {
    progress(`${name}: latency split at block time 0, ${settings.warmup} + ${settings.runs} payments`)
    splits[name] = await withStack(name, 0, (stack) => latencySplit(stack, settings))
  }
  const points: Point[] = []
  for (const blockTime of settings.blockTimes)
    for (const payers of settings.concurrency)
      for (const name of stackNames) {
        const seconds = settings.seconds[blockTime]!
        progress(`${name}, block time ${blockTime} s: ${payers} payers for ${seconds} s`)
        const point = await withStack(name, blockTime, (stack) => runPoint(stack, payers, { ...settings, seconds }))
        progress(`  ${rps(point).toFixed(1)} req/s, ${point.successes} ok, ${point.failures} failed`)
        points.push(point)
      }
  const report: Report = {
    machine: machine({ anvil: version('@foundry-rs/anvil-linux-amd64'), reference: version('@x402/core'), code: codeVersion() }),
    settings: { ...settings, seconds: settings.seconds },
    splits: splits.ours && splits.reference ? { ours: splits.ours, reference: splits.reference } : undefined,
    points,
    setupRetries,
    loadAtStart,
    elapsedMs: performance.now() - startedAt,
  }
  console.log(render(report))
  // Access credentials have no counterpart in the reference: they are measured against our own
  // per-request `exact` payments on the same machine in the same run.
  progress('access credentials: check cost, and credential-path requests next to per-request exact')
  console.log(`\n6. Access credentials\n\n${renderCredentialFigures(await runCredentialBench(progress))}`)
  await pipelinePart()
  await channelsPart()
}

/** batch-settlement channels on the seller side, beside per-request exact (`channels.ts`). */
async function channelsPart(): Promise<void> {
  progress('channels: paid requests per second, added latency, gas per paid request, beside exact')
  const figures = await runChannelBench(quick, (line) => progress(line))
  console.log(`\n${renderChannels(figures)}`)
  console.log(
    `\n   reproduce: npm run bench -- --channels-only${quick ? ' --quick' : ''}; load average at the end ${loadavg()
      .map((load) => load.toFixed(2))
      .join(' / ')}`,
  )
}

/** The settlement pipeline beside the reference facilitator, on a chain of its own (`pipeline.ts`). */
async function pipelinePart(): Promise<void> {
  progress('settlement pipeline: settled payments per second, gas per payment, after-response latency')
  const figures = await runPipelineBench(quick, (line) => progress(line))
  console.log(`\n${renderPipeline(figures)}`)
  console.log(
    `\n   reproduce: npm run bench -- --pipeline-only${quick ? ' --quick' : ''}; load average at the end ${loadavg()
      .map((load) => load.toFixed(2))
      .join(' / ')}`,
  )
}

/**
 * Runs `work` on a fresh chain and a fresh stack, then stops both. Fresh per measurement, so that
 * nothing one measurement leaves behind (a stuck transaction, a long pool) weighs on the next.
 */
async function withStack<result>(name: StackName, blockTime: number, work: (stack: Stack) => Promise<result>): Promise<result> {
  current = await startStack(name, { blockTime, accounts: settings.accounts, gasLimit: settings.gasLimit, framework })
  try {
    return await work(current)
  } finally {
    await current.close()
    current = undefined
  }
}

function progress(message: string) {
  process.stderr.write(`[bench] ${message}\n`)
}

function version(name: string): string {
  const manifest = new URL(`../node_modules/${name}/package.json`, import.meta.url)
  return (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version
}

/** The commit measured, and whether the working tree differs from it (read-only git calls). */
function codeVersion(): string {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()
    const changed = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).split('\n').filter(Boolean)
    return changed.length > 0 ? `${commit} + ${changed.length} uncommitted file changes` : commit
  } catch {
    return 'unknown'
  }
}

function positive(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === '') return undefined
  const number = Number(value)
  if (!Number.isFinite(number) || number <= 0) throw new Error(`${name} must be a positive number, got "${value}"`)
  return number
}

// Interrupted: stop the stack and its chain before leaving, as no finally block will run.
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    progress(`${signal}: stopping`)
    void (current?.close() ?? Promise.resolve()).finally(() => process.exit(130))
  })

try {
  await main()
} catch (error) {
  console.error('bench failed:', error)
  process.exitCode = 1
}
