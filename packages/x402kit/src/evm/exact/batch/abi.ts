/**
 * SettlementBatcher (`contracts/src/SettlementBatcher.sol`): many EIP-3009 `transferWithAuthorization`
 * payments settled in one transaction, each in isolation. An item the token refuses emits
 * `Failed(index, reason)` with the first 256 bytes of its revert data, and the others go on; a gas
 * limit too low to run every item with its full bound reverts the whole call with `InsufficientGas`.
 */
import { type Address, encodeFunctionData, type Hex } from 'viem'
import { authorizationInputs } from '../abi.ts'

/** One `transferWithAuthorization(from, to, value, validAfter, validBefore, nonce, v, r, s)` call. */
export type BatchAuthorization = {
  from: Address
  to: Address
  value: bigint
  validAfter: bigint
  validBefore: bigint
  nonce: Hex
  v: number
  r: Hex
  s: Hex
}

/**
 * The event SettlementBatcher emits for each item the token refused.
 *
 * @example
 * import { parseEventLogs } from 'viem'
 * import { failedEvent } from './abi.ts'
 *
 * const failures = parseEventLogs({ abi: [failedEvent], logs: receipt.logs }) // [{ args: { index: 3n, reason: '0x08c379a0…' } }]
 */
export const failedEvent = {
  type: 'event',
  name: 'Failed',
  inputs: [
    { name: 'index', type: 'uint256', indexed: true },
    { name: 'reason', type: 'bytes', indexed: false },
  ],
} as const

/**
 * SettlementBatcher's ABI: `settle`, its `Failed` event and its errors.
 *
 * @example
 * import { settlementBatcherAbi } from './abi.ts'
 *
 * const { result } = await publicClient.simulateContract({ address: batcher, abi: settlementBatcherAbi, functionName: 'settle', args: [usdc, items] })
 */
export const settlementBatcherAbi = [
  {
    type: 'function',
    name: 'settle',
    stateMutability: 'nonpayable',
    inputs: [
      { name: 'token', type: 'address' },
      {
        name: 'items',
        type: 'tuple[]',
        components: [...authorizationInputs, { name: 'v', type: 'uint8' }, { name: 'r', type: 'bytes32' }, { name: 's', type: 'bytes32' }],
      },
    ],
    outputs: [{ name: 'settled', type: 'uint256' }],
  },
  failedEvent,
  { type: 'error', name: 'InsufficientGas', inputs: [{ name: 'index', type: 'uint256' }] },
  { type: 'error', name: 'TokenHasNoCode', inputs: [{ name: 'token', type: 'address' }] },
] as const

/**
 * The calldata of `settle(token, items)`.
 *
 * @example
 * import { parseSignature } from 'viem'
 * import { settleBatchData } from './abi.ts'
 *
 * const { v, r, s } = parseSignature(signature)
 * const data = settleBatchData(usdc, [{ ...authorization, v: Number(v), r, s }])
 * await walletClient.sendTransaction({ to: batcher, data })
 */
export function settleBatchData(token: Address, items: readonly BatchAuthorization[]): Hex {
  return encodeFunctionData({ abi: settlementBatcherAbi, functionName: 'settle', args: [token, items] })
}
