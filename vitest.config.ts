import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['packages/*/src/**/*.test.ts', 'apps/*/src/**/*.test.ts', 'test/**/*.test.ts', 'contracts/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
    // Services started by tests log JSON lines to stdout; only their warnings and errors are worth reading here.
    env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' },
  },
})
