/**
 * A local chain for the demo and tests: anvil with Circle's real USDC (FiatTokenV2_2), our
 * permit-only PermitToken (PUSD) and our SettlementBatcher deployed, and funded accounts.
 *
 * Accounts are anvil's deterministic dev accounts (mnemonic "test test … junk"):
 * - index 0: `deployer` — deploys USDC and holds every token role (owner, master minter, minter,
 *   pauser, blacklister, lost-and-found), then deploys and owns PUSD, then deploys SettlementBatcher
 *   (no owner). All deploy at fixed nonces before any mint (USDC's proxy at 2, PUSD at 9, the batcher
 *   at 10), so `usdc` (0x9fE4…a6e0), `permitToken` (0x8A79…C318) and `batcher`
 *   (`SETTLEMENT_BATCHER_ADDRESS`, 0x6101…D788) always have the same addresses.
 * - index 1: FiatTokenProxy admin; the proxy refuses token calls from it, so it is not handed out.
 * - index 2 onwards: `accounts`, funded with ETH by anvil and with USDC and PUSD at startup.
 */
import {
  type Address,
  type Chain,
  createPublicClient,
  createTestClient,
  createWalletClient,
  defineChain,
  type Hash,
  type Hex,
  type HttpTransport,
  http,
  type PrivateKeyAccount,
  type PublicClient,
  parseAbi,
  publicActions,
  type WalletClient,
} from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { anvil } from 'viem/chains'
import { anvilPrivateKeys, CHAIN_ID, startAnvil } from './anvil.ts'
import { createBatch } from './batch.ts'
import { checkPermitToken, deployPermitToken, queuePermitTokenMint } from './permitToken.ts'
import { checkSettlementBatcher, deploySettlementBatcher } from './settlementBatcher.ts'
import { checkUsdc, deployUsdc, queueUsdcMint, USDC_ABI, USDC_ADMIN_ABI, USDC_MIN_BLOCK_GAS_LIMIT } from './usdc.ts'

export { ANVIL_MNEMONIC } from './anvil.ts'
export { PERMIT_TOKEN_ABI, PERMIT_TOKEN_DOMAIN } from './permitToken.ts'
export { SETTLEMENT_BATCHER_ADDRESS } from './settlementBatcher.ts'
export { FIAT_TOKEN_ABI, USDC_ABI, usdcAsset } from './usdc.ts'

export type DevnetOptions = {
  /** Seconds between blocks (fractions allowed); 0 or unset mines each transaction at once. */
  blockTime?: number
  /** Funded accounts handed out in `accounts`; default 10. */
  accounts?: number
  /** USDC minted to each account, in atomic units (6 decimals); default 10,000 USDC. */
  usdcPerAccount?: bigint
  /** PUSD minted to each account, in atomic units (6 decimals); default 10,000 PUSD. */
  permitTokenPerAccount?: bigint
  /** Block gas limit; at least 6,500,000 (the USDC deployment). */
  gasLimit?: bigint
  /** Port on 127.0.0.1; default a free one. */
  port?: number
}

export type DevnetAccount = { address: Address; privateKey: Hex }

export type Devnet = {
  rpcUrl: string
  chainId: typeof CHAIN_ID
  network: `eip155:${typeof CHAIN_ID}`
  chain: Chain
  /** FiatTokenProxy address: call the token here with `USDC_ABI`. */
  usdc: Address
  /** PermitToken (PUSD): EIP-2612 permit, no EIP-3009; call it with `PERMIT_TOKEN_ABI`. */
  permitToken: Address
  /** SettlementBatcher (`SETTLEMENT_BATCHER_ADDRESS`): `settle(token, authorizations)` runs many EIP-3009 transfers in one transaction. */
  batcher: Address
  accounts: DevnetAccount[]
  deployer: DevnetAccount
  publicClient: PublicClient<HttpTransport, Chain>
  walletClient(privateKey: Hex): WalletClient<HttpTransport, Chain, PrivateKeyAccount>
  /** Mints from the deployer and resolves once mined. */
  mintUsdc(to: Address, amount: bigint): Promise<Hash>
  usdcBalance(address: Address): Promise<bigint>
  /** The ERC-20 balance of `address` in `token`. */
  tokenBalance(token: Address, address: Address): Promise<bigint>
  setCode(address: Address, bytecode: Hex): Promise<void>
  mine(blocks?: number): Promise<void>
  /** Stops anvil and resolves once its process has exited. */
  stop(): Promise<void>
}

const DEFAULT_ACCOUNTS = 10
const DEFAULT_USDC_PER_ACCOUNT = 10_000_000_000n
const DEFAULT_PERMIT_TOKEN_PER_ACCOUNT = 10_000_000_000n
const BALANCE_OF_ABI = parseAbi(['function balanceOf(address account) view returns (uint256)'])
// Tests mine and then read at once: poll quickly and never serve a cached block number.
const clientOptions = { pollingInterval: 50, cacheTime: 0 }
const RESERVED_ACCOUNTS = 2

/**
 * Starts anvil, deploys USDC, PUSD and SettlementBatcher, and funds accounts.
 *
 * @example
 * import { startDevnet } from '@x402kit/devnet'
 *
 * const devnet = await startDevnet({ accounts: 3 })
 * console.log(devnet.usdc, await devnet.usdcBalance(devnet.accounts[0].address)) // 10000000000n
 * await devnet.stop()
 */
export async function startDevnet(options: DevnetOptions = {}): Promise<Devnet> {
  const count = options.accounts ?? DEFAULT_ACCOUNTS
  const usdcPerAccount = options.usdcPerAccount ?? DEFAULT_USDC_PER_ACCOUNT
  const permitTokenPerAccount = options.permitTokenPerAccount ?? DEFAULT_PERMIT_TOKEN_PER_ACCOUNT
  if (options.gasLimit !== undefined && options.gasLimit < USDC_MIN_BLOCK_GAS_LIMIT) {
    throw new Error(`startDevnet: gasLimit must be at least ${USDC_MIN_BLOCK_GAS_LIMIT} to deploy USDC`)
  }
  const node = await startAnvil({ ...options, accounts: count + RESERVED_ACCOUNTS })
  try {
    const chain = defineChain({ ...anvil, rpcUrls: { default: { http: [node.rpcUrl] } } })
    const transport = http(node.rpcUrl)
    const publicClient = createPublicClient({ chain, transport, ...clientOptions })
    // Batched, so the setup transactions travel in one JSON-RPC batch rather than a request each.
    const batched = http(node.rpcUrl, { batch: true })
    const testClient = createTestClient({ chain, transport: batched, mode: 'anvil' }).extend(publicActions)
    const walletClient = (privateKey: Hex) =>
      createWalletClient({ account: privateKeyToAccount(privateKey), chain, transport, ...clientOptions })

    const [deployerKey, proxyAdminKey, ...accountKeys] = anvilPrivateKeys(count + RESERVED_ACCOUNTS) as [Hex, Hex, ...Hex[]]
    const toAccount = (privateKey: Hex) => ({ address: privateKeyToAccount(privateKey).address, privateKey })
    const deployer = toAccount(deployerKey)
    const accounts = accountKeys.map(toAccount)
    const mine = async (blocks = 1) => testClient.mine({ blocks })

    // One batch of pre-signed transactions: the deployments first, at fixed nonces, then the mints.
    const batch = await createBatch(testClient, privateKeyToAccount(deployerKey))
    const usdc = await deployUsdc(batch, { proxyAdmin: toAccount(proxyAdminKey).address })
    const permitToken = await deployPermitToken(batch)
    const batcher = await deploySettlementBatcher(batch)
    for (const { address } of accounts) {
      await queueUsdcMint(batch, usdc, address, usdcPerAccount)
      await queuePermitTokenMint(batch, permitToken, address, permitTokenPerAccount)
    }
    await batch.mined(mine)
    await Promise.all([
      checkUsdc(testClient, usdc, usdcPerAccount * BigInt(accounts.length)),
      checkPermitToken(testClient, permitToken, permitTokenPerAccount * BigInt(accounts.length)),
      checkSettlementBatcher(testClient, batcher),
    ])

    const minter = walletClient(deployerKey)
    // Serialised so concurrent calls never race for the deployer's nonce.
    let minting: Promise<unknown> = Promise.resolve()
    const mintUsdc = (to: Address, amount: bigint) => {
      const mint = minting.then(async () => {
        const hash = await minter.writeContract({ address: usdc, abi: USDC_ADMIN_ABI, functionName: 'mint', args: [to, amount] })
        const receipt = await publicClient.waitForTransactionReceipt({ hash })
        if (receipt.status !== 'success') throw new Error(`mintUsdc: mint to ${to} reverted (${hash})`)
        return hash
      })
      minting = mint.catch(() => undefined)
      return mint
    }

    return {
      rpcUrl: node.rpcUrl,
      chainId: CHAIN_ID,
      network: `eip155:${CHAIN_ID}`,
      chain,
      usdc,
      permitToken,
      batcher,
      accounts,
      deployer,
      publicClient,
      walletClient,
      mintUsdc,
      usdcBalance: (address) => publicClient.readContract({ address: usdc, abi: USDC_ABI, functionName: 'balanceOf', args: [address] }),
      tokenBalance: (token, address) =>
        publicClient.readContract({ address: token, abi: BALANCE_OF_ABI, functionName: 'balanceOf', args: [address] }),
      setCode: (address, bytecode) => testClient.setCode({ address, bytecode }),
      mine,
      stop: node.stop,
    }
  } catch (error) {
    await node.stop()
    throw error
  }
}
