/**
 * SettlementBatcher: settles many EIP-3009 `transferWithAuthorization` payments in one transaction,
 * each in isolation (a refused one emits `Failed(index, reason)`). Compiled from
 * `contracts/src/SettlementBatcher.sol` by `contracts/build.ts`.
 */
import { type Address, type Chain, type Client, isAddressEqual, type Transport } from 'viem'
import { getCode } from 'viem/actions'
import { settlementBatcherBytecode } from '../../../contracts/artifacts/index.ts'
import type { Batch } from './batch.ts'

/** Where the devnet deploys SettlementBatcher: the deployer's nonce 10, right after PUSD. */
export const SETTLEMENT_BATCHER_ADDRESS = '0x610178dA211FEF7D417bC0e6FeD39F05609AD788'

// A fixed limit skips an eth_estimateGas; ~1.4× the measured use (176,000).
const GAS = { deploy: 250_000n }

/** Queues the deployment on `batch`; resolves with its address, which must be `SETTLEMENT_BATCHER_ADDRESS`. */
export async function deploySettlementBatcher(batch: Batch): Promise<Address> {
  const address = await batch.send(undefined, settlementBatcherBytecode, GAS.deploy)
  if (!isAddressEqual(address, SETTLEMENT_BATCHER_ADDRESS)) {
    throw new Error(`deploySettlementBatcher: would deploy at ${address}, not ${SETTLEMENT_BATCHER_ADDRESS} (deployer nonce moved)`)
  }
  return SETTLEMENT_BATCHER_ADDRESS
}

/** Throws unless the mined deployment holds SettlementBatcher's runtime code. */
export async function checkSettlementBatcher(client: Client<Transport, Chain>, batcher: Address): Promise<void> {
  const code = await getCode(client, { address: batcher })
  // The runtime code is the tail of the creation code (no constructor, no immutables).
  if (!code || code === '0x' || !settlementBatcherBytecode.endsWith(code.slice(2))) {
    throw new Error(`deploySettlementBatcher: ${batcher} does not hold SettlementBatcher's code`)
  }
}
