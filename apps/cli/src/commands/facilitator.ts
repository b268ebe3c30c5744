/**
 * `x402 facilitator`: runs the facilitator service in the foreground, configured by environment
 * (`X402_NETWORK`, `X402_RPC_URL`, `X402_SIGNER_KEYS`, `DATABASE_URL`, …) and `--config FILE`.
 */
import { runFacilitatorService } from '@x402kit/facilitator'

export async function runFacilitator(options: { configFile?: string }): Promise<number> {
  await runFacilitatorService({ argv: options.configFile ? ['--config', options.configFile] : [] })
  return 0
}
