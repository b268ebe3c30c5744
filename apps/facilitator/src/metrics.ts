/**
 * Metrics: Prometheus text at `GET /metrics` — verifications and settlements by scheme, network and
 * outcome (a reason code, so the label set stays bounded), how long each took, and the process's own
 * figures (CPU, memory, event-loop lag).
 */
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client'
import type { Observation } from 'x402kit/facilitator'

const labelNames = ['operation', 'scheme', 'network', 'outcome'] as const

export function serviceMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'x402_facilitator_' })
  const answered = new Counter({
    name: 'x402_facilitator_answers_total',
    help: 'Verifications and settlements answered, by outcome (valid, settled, or the reason code).',
    labelNames,
    registers: [registry],
  })
  const duration = new Histogram({
    name: 'x402_facilitator_answer_seconds',
    help: 'Time to answer a verification or settlement, settlement including its wait for the receipt.',
    labelNames,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  })
  return {
    observe({ seconds, ...labels }: Observation) {
      answered.inc(labels)
      duration.observe(labels, seconds)
    },
    async response(): Promise<Response> {
      return new Response(await registry.metrics(), { headers: { 'content-type': registry.contentType } })
    },
  }
}
