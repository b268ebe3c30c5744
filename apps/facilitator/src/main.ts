/**
 * Runs the facilitator service from the environment and an optional config file:
 *   tsx apps/facilitator/src/main.ts [--config facilitator.json]
 */
import { BaseError } from 'x402kit'
import { runFacilitatorService } from './run.ts'

runFacilitatorService().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error instanceof BaseError ? error.message : error)
    process.exit(1)
  },
)
