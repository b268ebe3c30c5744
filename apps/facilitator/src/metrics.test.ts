import { describe, expect, it } from 'vitest'
import { createLogger } from './log.ts'
import { serviceMetrics } from './metrics.ts'

const base = 'eip155:8453'
const other = 'eip155:84532'
const signer = '0x1111111111111111111111111111111111111111'

/** Prometheus text → `name{labels}` → value, leaving out comments. */
async function scrape(metrics: ReturnType<typeof serviceMetrics>): Promise<Map<string, number>> {
  const text = await (await metrics.response()).text()
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    samples.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return samples
}

function logged() {
  const lines: Record<string, unknown>[] = []
  const logger = createLogger({ level: 'debug', write: (line) => lines.push(JSON.parse(line)) })
  return { logger, lines }
}

describe('serviceMetrics().pipeline', () => {
  it('exports every pipeline event as metrics', async () => {
    const metrics = serviceMetrics()
    metrics.pipeline({ type: 'queue', network: base, depth: 7, oldestAgeSeconds: 2.5 })
    metrics.pipeline({ type: 'queue', network: base, depth: 3, oldestAgeSeconds: 0.5 })
    metrics.pipeline({ type: 'queue', network: other, depth: 0, oldestAgeSeconds: 0 })
    const batch = { type: 'batch', network: base, signer, gasUsed: 120_000n, gasCostWei: 1_500_000_000_000_000n, seconds: 4 } as const
    metrics.pipeline({ ...batch, size: 40, outcome: 'mined' })
    metrics.pipeline({ ...batch, size: 1, outcome: 'mined', gasUsed: 60_000n, gasCostWei: 500_000_000_000_000n })
    metrics.pipeline({ ...batch, size: 700, outcome: 'reverted', seconds: 90 })
    metrics.pipeline({ type: 'item', network: base, outcome: 'settled' })
    metrics.pipeline({ type: 'item', network: base, outcome: 'settled' })
    metrics.pipeline({ type: 'item', network: base, outcome: 'invalid_exact_evm_insufficient_funds' })
    metrics.pipeline({ type: 'signer', network: base, address: signer, balanceWei: 2_250_000_000_000_000_000n, nonce: 41, low: false })
    metrics.pipeline({ type: 'signer', network: base, address: signer, balanceWei: 10n ** 16n, nonce: 42, low: true })
    metrics.pipeline({ type: 'replaced', network: base, signer })
    metrics.pipeline({ type: 'replaced', network: base, signer })
    metrics.pipeline({ type: 'reorg', network: base, payments: 5 })

    const samples = await scrape(metrics)
    const at = `network="${base}"`
    const of = `network="${base}",address="${signer}"`
    expect(
      Object.fromEntries(
        [
          `x402_facilitator_queue_depth{${at}}`,
          `x402_facilitator_queue_depth{network="${other}"}`,
          `x402_facilitator_queue_oldest_age_seconds{${at}}`,
          `x402_facilitator_batch_size_bucket{le="1",${at}}`,
          `x402_facilitator_batch_size_bucket{le="50",${at}}`,
          `x402_facilitator_batch_size_bucket{le="500",${at}}`,
          `x402_facilitator_batch_size_bucket{le="1000",${at}}`,
          `x402_facilitator_batch_size_sum{${at}}`,
          `x402_facilitator_batch_size_count{${at}}`,
          `x402_facilitator_batch_seconds_count{${at},outcome="mined"}`,
          `x402_facilitator_batch_seconds_bucket{le="120",${at},outcome="reverted"}`,
          `x402_facilitator_batches_total{${at},outcome="mined"}`,
          `x402_facilitator_batches_total{${at},outcome="reverted"}`,
          `x402_facilitator_gas_used_total{${at}}`,
          `x402_facilitator_gas_cost_ether_total{${at}}`,
          `x402_facilitator_pipeline_items_total{${at},outcome="settled"}`,
          `x402_facilitator_pipeline_items_total{${at},outcome="invalid_exact_evm_insufficient_funds"}`,
          `x402_facilitator_signer_balance_ether{${of}}`,
          `x402_facilitator_signer_nonce{${of}}`,
          `x402_facilitator_signer_low_balance{${of}}`,
          `x402_facilitator_replacements_total{${of}}`,
          `x402_facilitator_reorgs_total{${at}}`,
          `x402_facilitator_reorged_payments_total{${at}}`,
        ].map((name) => [name, samples.get(name)]),
      ),
    ).toEqual({
      [`x402_facilitator_queue_depth{${at}}`]: 3,
      [`x402_facilitator_queue_depth{network="${other}"}`]: 0,
      [`x402_facilitator_queue_oldest_age_seconds{${at}}`]: 0.5,
      [`x402_facilitator_batch_size_bucket{le="1",${at}}`]: 1,
      [`x402_facilitator_batch_size_bucket{le="50",${at}}`]: 2,
      [`x402_facilitator_batch_size_bucket{le="500",${at}}`]: 2,
      [`x402_facilitator_batch_size_bucket{le="1000",${at}}`]: 3,
      [`x402_facilitator_batch_size_sum{${at}}`]: 741,
      [`x402_facilitator_batch_size_count{${at}}`]: 3,
      [`x402_facilitator_batch_seconds_count{${at},outcome="mined"}`]: 2,
      [`x402_facilitator_batch_seconds_bucket{le="120",${at},outcome="reverted"}`]: 1,
      [`x402_facilitator_batches_total{${at},outcome="mined"}`]: 2,
      [`x402_facilitator_batches_total{${at},outcome="reverted"}`]: 1,
      [`x402_facilitator_gas_used_total{${at}}`]: 300_000,
      [`x402_facilitator_gas_cost_ether_total{${at}}`]: 0.0035,
      [`x402_facilitator_pipeline_items_total{${at},outcome="settled"}`]: 2,
      [`x402_facilitator_pipeline_items_total{${at},outcome="invalid_exact_evm_insufficient_funds"}`]: 1,
      [`x402_facilitator_signer_balance_ether{${of}}`]: 0.01,
      [`x402_facilitator_signer_nonce{${of}}`]: 42,
      [`x402_facilitator_signer_low_balance{${of}}`]: 1,
      [`x402_facilitator_replacements_total{${of}}`]: 2,
      [`x402_facilitator_reorgs_total{${at}}`]: 1,
      [`x402_facilitator_reorged_payments_total{${at}}`]: 5,
    })
    // The answers' metrics are still there.
    expect((await (await metrics.response()).text()).includes('# TYPE x402_facilitator_answers_total counter')).toBe(true)
  })

  it('warns of a low signer balance once per fall, and tells when it recovers', () => {
    const { logger, lines } = logged()
    const metrics = serviceMetrics({ logger })
    const poll = (low: boolean, address = signer) =>
      metrics.pipeline({ type: 'signer', network: base, address, balanceWei: low ? 10n ** 15n : 10n ** 18n, nonce: 1, low })
    poll(false)
    poll(true)
    poll(true)
    poll(true)
    poll(true, '0x2222222222222222222222222222222222222222')
    poll(false)
    poll(false)
    poll(true)
    expect(lines.map(({ level, msg, address, balanceWei }) => [level, msg, address, balanceWei])).toEqual([
      ['warn', 'signer balance low', signer, '1000000000000000'],
      ['warn', 'signer balance low', '0x2222222222222222222222222222222222222222', '1000000000000000'],
      ['info', 'signer balance restored', signer, '1000000000000000000'],
      ['warn', 'signer balance low', signer, '1000000000000000'],
    ])
  })

  it('logs each batch with its exact gas, reverted and dropped batches and reorgs at warn', () => {
    const { logger, lines } = logged()
    const metrics = serviceMetrics({ logger })
    const batch = {
      type: 'batch',
      network: base,
      signer,
      size: 12,
      gasUsed: 250_001n,
      gasCostWei: 123_456_789_012_345_678n,
      seconds: 3.5,
    } as const
    metrics.pipeline({ ...batch, outcome: 'mined' })
    metrics.pipeline({ ...batch, outcome: 'reverted' })
    metrics.pipeline({ ...batch, outcome: 'dropped' })
    metrics.pipeline({ type: 'reorg', network: base, payments: 3 })
    metrics.pipeline({ type: 'replaced', network: base, signer })
    metrics.pipeline({ type: 'queue', network: base, depth: 1, oldestAgeSeconds: 1 })
    expect(lines.map(({ time: _, ...line }) => line)).toEqual([
      {
        level: 'info',
        msg: 'settlement batch mined',
        network: base,
        signer,
        size: 12,
        gasUsed: '250001',
        gasCostWei: '123456789012345678',
        seconds: 3.5,
        outcome: 'mined',
      },
      expect.objectContaining({ level: 'warn', msg: 'settlement batch reverted', size: 12, gasCostWei: '123456789012345678' }),
      expect.objectContaining({ level: 'warn', msg: 'settlement batch dropped' }),
      { level: 'warn', msg: 'reorganisation undid settlements', network: base, payments: 3 },
      { level: 'info', msg: 'settlement transaction replaced', network: base, address: signer },
    ])
  })

  it('never throws at the pipeline: a bad figure is logged instead', async () => {
    const { logger, lines } = logged()
    const metrics = serviceMetrics({ logger })
    expect(() => metrics.pipeline({ type: 'reorg', network: base, payments: -1 })).not.toThrow()
    expect(lines).toMatchObject([{ level: 'error', msg: 'pipeline event not recorded', event: 'reorg', error: { name: 'Error' } }])
  })
})
