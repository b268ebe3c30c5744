/**
 * Runs the facilitator service in the foreground until SIGINT or SIGTERM; shared by `main.ts` and
 * the `x402 facilitator` command.
 */
import { loadConfig } from './config.ts'
import { startFacilitatorService } from './server.ts'

export async function runFacilitatorService(options: { argv?: readonly string[]; log?: (line: string) => void } = {}): Promise<void> {
  const log = options.log ?? ((line: string) => console.log(line))
  const config = loadConfig({ argv: options.argv })
  const service = await startFacilitatorService(config)
  const networks = Object.keys(config.networks).join(', ')
  log(`x402kit facilitator on ${service.url} (${networks}; ${service.database.kind} store)`)
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  log(`${signal}: finishing requests in progress, then closing`)
  await service.close()
}
