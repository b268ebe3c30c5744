/**
 * Runs the facilitator service in the foreground until SIGINT or SIGTERM; shared by `main.ts` and
 * the `x402 facilitator` command.
 */
import { loadConfig } from './config.ts'
import { createLogger, type Logger, logLevel } from './log.ts'
import { startFacilitatorService } from './server.ts'

export async function runFacilitatorService(options: { argv?: readonly string[]; logger?: Logger } = {}): Promise<void> {
  const logger = options.logger ?? createLogger({ level: logLevel() })
  const config = loadConfig({ argv: options.argv })
  const service = await startFacilitatorService(config, { logger })
  logger.info('x402kit facilitator listening', { url: service.url, networks: Object.keys(config.networks), store: service.database.kind })
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  logger.info('finishing requests in progress, then closing', { signal })
  await service.close()
  logger.info('closed')
}
