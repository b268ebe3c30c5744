#!/usr/bin/env -S npx tsx
/**
 * The `x402` command.
 *
 *   x402 dev [--once] [--block-time S] [--channel-calls N]   local chain + facilitator + paid API + paying agent
 *   x402 pay <url> [--key K] [--max AMOUNT]     pay one URL (key from X402_PRIVATE_KEY by default)
 *   x402 facilitator [--config FILE]            run a facilitator (config from env and file)
 *   x402 facilitator statement --merchant 0x…   a merchant's settled volume, fees and gas
 *   x402 facilitator channels --receiver 0x…    batch-settlement channels a running facilitator knows
 */
import { parseArgs } from 'node:util'
import { BaseError } from 'x402kit'

const usage = `Usage:
  x402 dev [--once] [--block-time SECONDS] [--data-dir DIR] [--channel-calls N]
  x402 pay <url> [--key 0x…] [--max AMOUNT] [-X METHOD] [-d DATA] [-H 'Name: value']
  x402 facilitator [--config FILE]
  x402 facilitator statement --merchant 0x… [--from YYYY-MM-DD] [--to YYYY-MM-DD (exclusive)]
                             [--period day|month|all] [--json] [--config FILE]
  x402 facilitator channels (--receiver 0x… | --payer 0x… | --channel 0x…) [--limit N] [--offset N]
                            [--url URL] [--key KEY] [--json]`

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'dev': {
      const { values } = parseArgs({
        args: rest,
        options: {
          once: { type: 'boolean' },
          'block-time': { type: 'string' },
          'data-dir': { type: 'string' },
          'channel-calls': { type: 'string' },
        },
      })
      const channelCalls = values['channel-calls'] === undefined ? undefined : Number(values['channel-calls'])
      if (channelCalls !== undefined && !(Number.isInteger(channelCalls) && channelCalls > 0))
        throw new BaseError('--channel-calls must be a whole number of calls, 1 or more.')
      const blockTime = values['block-time'] === undefined ? undefined : Number(values['block-time'])
      if (blockTime !== undefined && !(blockTime >= 0)) throw new BaseError('--block-time must be a number of seconds, 0 or more.')
      const { dev } = await import('./commands/dev.ts')
      return await dev({ once: values.once, blockTime, dataDir: values['data-dir'], channelCalls })
    }
    case 'pay': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          key: { type: 'string' },
          max: { type: 'string' },
          method: { type: 'string', short: 'X' },
          data: { type: 'string', short: 'd' },
          header: { type: 'string', short: 'H', multiple: true },
        },
      })
      if (positionals.length !== 1) throw new BaseError('x402 pay takes one URL.', { hint: usage })
      const { pay } = await import('./commands/pay.ts')
      return await pay({
        url: positionals[0]!,
        key: values.key,
        max: values.max,
        method: values.method,
        data: values.data,
        headers: values.header,
      })
    }
    case 'facilitator': {
      if (rest[0] === 'statement') {
        const { values } = parseArgs({
          args: rest.slice(1),
          options: {
            merchant: { type: 'string' },
            from: { type: 'string' },
            to: { type: 'string' },
            period: { type: 'string' },
            json: { type: 'boolean' },
            config: { type: 'string' },
          },
        })
        if (values.merchant === undefined)
          throw new BaseError('x402 facilitator statement needs --merchant <payTo address>.', { hint: usage })
        const { facilitatorStatement } = await import('./commands/statement.ts')
        return await facilitatorStatement({ ...values, configFile: values.config })
      }
      if (rest[0] === 'channels') {
        const text = { type: 'string' } as const
        const { values } = parseArgs({
          args: rest.slice(1),
          options: {
            receiver: text,
            payer: text,
            channel: text,
            limit: text,
            offset: text,
            url: text,
            key: text,
            json: { type: 'boolean' },
          },
        })
        const { facilitatorChannels } = await import('./commands/facilitatorChannels.ts')
        return await facilitatorChannels(values)
      }
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string' } } })
      const { runFacilitator } = await import('./commands/facilitator.ts')
      return await runFacilitator({ configFile: values.config })
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${usage}\n`)
      return command === undefined ? 1 : 0
    default:
      process.stderr.write(`Unknown command "${command}".\n${usage}\n`)
      return 1
  }
}

// Exit only once stdout has drained: a piped stdout is asynchronous, and scripts read its last line.
const exit = (code: number) => process.stdout.write('', () => process.exit(code))

main(process.argv.slice(2)).then(exit, (error: unknown) => {
  const text = error instanceof BaseError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error)
  process.stderr.write(`x402: ${text}\n`)
  exit(1)
})
