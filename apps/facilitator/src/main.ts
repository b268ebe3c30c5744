/**
 * Runs the facilitator service from the environment and an optional config file:
 *   tsx apps/facilitator/src/main.ts [--config facilitator.json]
 */
import { BaseError } from 'x402kit'
import { loadConfig } from './config.ts'
import { startFacilitatorService } from './server.ts'

try {
  const config = loadConfig()
  const service = await startFacilitatorService(config)
  const networks = Object.keys(config.networks).join(', ')
  console.log(`x402kit facilitator on ${service.url} (${networks}; ${service.database.kind} store)`)
  const stop = async (signal: NodeJS.Signals) => {
    console.log(`${signal}: finishing requests in progress, then closing`)
    await service.close()
    process.exit(0)
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
} catch (error) {
  console.error(error instanceof BaseError ? error.message : error)
  process.exit(1)
}
