import { expect, it } from 'vitest'

it('exports createPaywall from x402kit/server', async () => {
  expect(Object.keys(await import('./index.ts'))).toMatchInlineSnapshot(`
    [
      "createPaywall",
      "pgliteThread",
      "SqlThreadError",
      "PaywallConfigError",
      "memoryUseStore",
    ]
  `)
})

it.each(['hono', 'express', 'fastify'])('exports paywall from x402kit/%s', async (name) => {
  expect(Object.keys(await import(`./adapters/${name}.ts`))).toEqual(['paywall'])
})
