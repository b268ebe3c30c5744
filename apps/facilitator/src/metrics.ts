/**
 * Metrics: Prometheus text at `GET /metrics` — verifications and settlements by scheme, network and
 * outcome (a reason code, so the label set stays bounded), how long each took, the settlement
 * pipeline (queue, batches, gas, signers, replacements, reorgs), and the process's own figures (CPU,
 * memory, event-loop lag).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import { formatEther } from 'viem'
import type { PipelineEvent } from 'x402kit'
import type { ActionEvent } from 'x402kit/evm'
import type { Observation } from 'x402kit/facilitator'
import type { Logger } from './log.ts'

export type { PipelineEvent }

const labelNames = ['operation', 'scheme', 'network', 'outcome'] as const

/**
 * The service's metrics. With a `logger`, pipeline events are logged too: each batch at `info` (at
 * `warn` when reverted or dropped) with its exact gas figures, a signer at `warn` when its balance
 * turns low (once, not on every poll) and at `info` when it recovers, reorgs at `warn`.
 *
 * @example
 * ```ts
 * import { serviceMetrics } from './metrics.ts'
 * const metrics = serviceMetrics({ logger })
 * metrics.pipeline({ type: 'queue', network: 'eip155:8453', depth: 12, oldestAgeSeconds: 1.5 })
 * const response = await metrics.response() // GET /metrics
 * ```
 */
export function serviceMetrics(options: { logger?: Logger } = {}) {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'x402_facilitator_' })
  const registers = [registry]
  const answered = new Counter({
    name: 'x402_facilitator_answers_total',
    help: 'Verifications and settlements answered, by outcome (valid, settled, or the reason code).',
    labelNames,
    registers,
  })
  const duration = new Histogram({
    name: 'x402_facilitator_answer_seconds',
    help: 'Time to answer a verification or settlement, settlement including its wait for the receipt.',
    labelNames,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers,
  })
  const pipeline = pipelineMetrics(registers)
  const logPipeline = options.logger ? pipelineLog(options.logger) : undefined
  const channels = channelMetrics(registers)
  return {
    observe({ seconds, ...labels }: Observation) {
      answered.inc(labels)
      duration.observe(labels, seconds)
    },
    /** Records an event of the settlement pipeline (and logs it, given a logger). */
    pipeline(event: PipelineEvent) {
      // Never let a figure (a negative count, say) break the settlement that reports it.
      try {
        pipeline(event)
        logPipeline?.(event)
      } catch (error) {
        options.logger?.error('pipeline event not recorded', { event: event.type, error })
      }
    },
    /** Records a `batch-settlement` claim, sweep or refund transaction (and logs it, given a logger). */
    channels(event: ActionEvent) {
      try {
        channels(event)
        options.logger?.[event.success ? 'info' : 'warn'](`batch-settlement ${event.kind} ${event.success ? 'mined' : 'reverted'}`, {
          network: event.network,
          vouchers: event.vouchers,
          amount: event.amount,
          gasUsed: event.gasUsed,
          transaction: event.transaction,
        })
      } catch (error) {
        options.logger?.error('channel event not recorded', { kind: event.kind, error })
      }
    },
    async response(): Promise<Response> {
      return new Response(await registry.metrics(), { headers: { 'content-type': registry.contentType } })
    },
  }
}

function pipelineMetrics(registers: Registry[]): (event: PipelineEvent) => void {
  const network = ['network'] as const
  const signer = ['network', 'address'] as const
  const queueDepth = new Gauge({
    name: 'x402_facilitator_queue_depth',
    help: 'Payments waiting to be settled.',
    labelNames: network,
    registers,
  })
  const queueAge = new Gauge({
    name: 'x402_facilitator_queue_oldest_age_seconds',
    help: 'How long the oldest waiting payment has waited.',
    labelNames: network,
    registers,
  })
  const batchSize = new Histogram({
    name: 'x402_facilitator_batch_size',
    help: 'Payments per settlement batch.',
    labelNames: network,
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers,
  })
  const batchSeconds = new Histogram({
    name: 'x402_facilitator_batch_seconds',
    help: 'Time from sending a batch transaction to its outcome.',
    labelNames: ['network', 'outcome'],
    buckets: [1, 2, 5, 10, 20, 30, 60, 120, 300, 600],
    registers,
  })
  const batches = new Counter({
    name: 'x402_facilitator_batches_total',
    help: 'Settlement batches by outcome (mined, reverted, dropped).',
    labelNames: ['network', 'outcome'],
    registers,
  })
  const gasUsed = new Counter({
    name: 'x402_facilitator_gas_used_total',
    help: 'Gas used by settlement batches.',
    labelNames: network,
    registers,
  })
  const gasCost = new Counter({
    name: 'x402_facilitator_gas_cost_ether_total',
    help: 'Fees paid for settlement batches, in ether (approximate; the logs carry the exact wei).',
    labelNames: network,
    registers,
  })
  const items = new Counter({
    name: 'x402_facilitator_pipeline_items_total',
    help: 'Payments leaving the settlement pipeline, by outcome (settled, or the reason code).',
    labelNames: ['network', 'outcome'],
    registers,
  })
  const balance = new Gauge({
    name: 'x402_facilitator_signer_balance_ether',
    help: 'Balance of each signer, in ether (approximate; the logs carry the exact wei).',
    labelNames: signer,
    registers,
  })
  const nonce = new Gauge({
    name: 'x402_facilitator_signer_nonce',
    help: 'Next nonce of each signer.',
    labelNames: signer,
    registers,
  })
  const low = new Gauge({
    name: 'x402_facilitator_signer_low_balance',
    help: '1 while a signer’s balance is below its threshold, else 0.',
    labelNames: signer,
    registers,
  })
  const replacements = new Counter({
    name: 'x402_facilitator_replacements_total',
    help: 'Settlement transactions replaced with higher fees.',
    labelNames: signer,
    registers,
  })
  const reorgs = new Counter({
    name: 'x402_facilitator_reorgs_total',
    help: 'Reorganisations that undid a settlement.',
    labelNames: network,
    registers,
  })
  const reorged = new Counter({
    name: 'x402_facilitator_reorged_payments_total',
    help: 'Payments whose settlement a reorganisation undid.',
    labelNames: network,
    registers,
  })

  return (event) => {
    const { network } = event
    switch (event.type) {
      case 'queue':
        queueDepth.set({ network }, event.depth)
        queueAge.set({ network }, event.oldestAgeSeconds)
        return
      case 'batch':
        batchSize.observe({ network }, event.size)
        batchSeconds.observe({ network, outcome: event.outcome }, event.seconds)
        batches.inc({ network, outcome: event.outcome })
        gasUsed.inc({ network }, Number(event.gasUsed))
        gasCost.inc({ network }, ether(event.gasCostWei))
        return
      case 'item':
        items.inc({ network, outcome: event.outcome })
        return
      case 'signer': {
        const labels = { network, address: event.address }
        balance.set(labels, ether(event.balanceWei))
        nonce.set(labels, event.nonce)
        low.set(labels, event.low ? 1 : 0)
        return
      }
      case 'replaced':
        replacements.inc({ network, address: event.signer })
        return
      case 'reorg':
        reorgs.inc({ network })
        reorged.inc({ network }, event.payments)
        return
    }
  }
}

function channelMetrics(registers: Registry[]): (event: ActionEvent) => void {
  const transactions = new Counter({
    name: 'x402_facilitator_channel_transactions_total',
    help: 'batch-settlement claim, sweep and refund transactions, by kind and outcome (mined, reverted).',
    labelNames: ['network', 'kind', 'outcome'],
    registers,
  })
  const vouchers = new Histogram({
    name: 'x402_facilitator_claim_vouchers',
    help: 'Vouchers per batch-settlement claim transaction.',
    labelNames: ['network'],
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers,
  })
  const gas = new Counter({
    name: 'x402_facilitator_channel_gas_used_total',
    help: 'Gas used by batch-settlement claim, sweep and refund transactions.',
    labelNames: ['network', 'kind'],
    registers,
  })
  const value = new Counter({
    name: 'x402_facilitator_channel_value_total',
    help: 'Value claimed, swept and refunded, in the token’s atomic units (approximate past 2^53).',
    labelNames: ['network', 'kind'],
    registers,
  })
  return (event) => {
    const { network, kind } = event
    transactions.inc({ network, kind, outcome: event.success ? 'mined' : 'reverted' })
    gas.inc({ network, kind }, Number(event.gasUsed))
    if (kind === 'claim') vouchers.observe({ network }, event.vouchers)
    if (event.success) value.inc({ network, kind }, Number(event.amount))
  }
}

function pipelineLog(logger: Logger): (event: PipelineEvent) => void {
  // Signers last seen low, so that a low balance is told once per fall, not on every poll.
  const low = new Set<string>()
  return (event) => {
    switch (event.type) {
      case 'batch': {
        const { type: _, outcome, ...fields } = event
        const at = outcome === 'mined' ? 'info' : 'warn'
        logger[at](`settlement batch ${outcome}`, { ...fields, outcome })
        return
      }
      case 'signer': {
        const key = `${event.network} ${event.address}`
        const fields = { network: event.network, address: event.address, balanceWei: event.balanceWei, nonce: event.nonce }
        if (event.low && !low.has(key)) {
          low.add(key)
          logger.warn('signer balance low', fields)
        } else if (!event.low && low.delete(key)) logger.info('signer balance restored', fields)
        return
      }
      case 'replaced':
        logger.info('settlement transaction replaced', { network: event.network, address: event.signer })
        return
      case 'reorg':
        logger.warn('reorganisation undid settlements', { network: event.network, payments: event.payments })
        return
      case 'item':
        logger.debug('payment left the pipeline', { network: event.network, outcome: event.outcome })
        return
    }
  }
}

function ether(wei: bigint): number {
  return Number(formatEther(wei))
}
