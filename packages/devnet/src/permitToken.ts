/**
 * PermitToken ("Permit Dollar", PUSD): our OpenZeppelin ERC20 + ERC20Permit test token, 6 decimals,
 * EIP-2612 `permit` and no EIP-3009 — the token `exact` pays in with a permit. Compiled from
 * `contracts/src/PermitToken.sol` by `contracts/build.ts`.
 */
import { type Address, type Chain, type Client, domainSeparator, encodeFunctionData, type Transport } from 'viem'
import { readContract } from 'viem/actions'
import { permitTokenAbi, permitTokenBytecode } from '../../../contracts/artifacts/index.ts'
import type { Batch } from './batch.ts'

/** PermitToken's complete ABI, typed. */
export const PERMIT_TOKEN_ABI = permitTokenAbi

/** The token's EIP-712 domain name and version (ERC20Permit's version is always "1"). */
export const PERMIT_TOKEN_DOMAIN = { name: 'Permit Dollar', version: '1' } as const

// Fixed limits skip an eth_estimateGas per transaction; each is ~1.5× the measured use.
const GAS = { deploy: 1_600_000n, mint: 110_000n }

/** Queues the deployment on `batch` (the batch sender becomes the owner, the only minter); resolves with the token's address. */
export function deployPermitToken(batch: Batch): Promise<Address> {
  return batch.send(undefined, permitTokenBytecode, GAS.deploy)
}

/** Queues a mint from the batch sender (the owner). */
export function queuePermitTokenMint(batch: Batch, token: Address, to: Address, amount: bigint): Promise<Address> {
  return batch.send(token, encodeFunctionData({ abi: permitTokenAbi, functionName: 'mint', args: [to, amount] }), GAS.mint)
}

/** Throws unless the mined deployment reads as PUSD: name, symbol, decimals, domain and total supply. */
export async function checkPermitToken(client: Client<Transport, Chain>, token: Address, totalSupply: bigint): Promise<void> {
  const read = (functionName: 'name' | 'symbol' | 'decimals' | 'DOMAIN_SEPARATOR' | 'totalSupply') =>
    readContract(client, { address: token, abi: permitTokenAbi, functionName })
  const found = await Promise.all([read('name'), read('symbol'), read('decimals'), read('DOMAIN_SEPARATOR'), read('totalSupply')])
  const domain = { ...PERMIT_TOKEN_DOMAIN, chainId: client.chain.id, verifyingContract: token }
  const expected = ['Permit Dollar', 'PUSD', 6, domainSeparator({ domain }), totalSupply]
  if (found.some((value, index) => value !== expected[index])) {
    throw new Error(
      `deployPermitToken: [name, symbol, decimals, DOMAIN_SEPARATOR, totalSupply] reads [${found.join(', ')}], expected [${expected.join(', ')}]`,
    )
  }
}
