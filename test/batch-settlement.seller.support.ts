/**
 * Shared setup of the channel seller suites: our escrow and deposit collector at their canonical
 * addresses on the local chain, and the reference batch-settlement facilitator (`@x402/core`'s
 * `x402Facilitator` with `@x402/evm`'s scheme) behind its HTTP API, recording what it is asked.
 */
import { x402Facilitator } from '@x402/core/facilitator'
import type { HTTPFacilitatorClient } from '@x402/core/server'
import { toFacilitatorEvmSigner } from '@x402/evm'
import { BatchSettlementEvmScheme as ReferenceBatchScheme } from '@x402/evm/batch-settlement/facilitator'
import type { BatchSettlementEvmScheme as ReferenceChannelServer } from '@x402/evm/batch-settlement/server'
import { paymentMiddleware, x402ResourceServer } from '@x402/express'
import type { Devnet } from '@x402kit/devnet'
import express from 'express'
import { type Abi, type Address, createWalletClient, getAddress, type Hex, http, publicActions } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { Channel } from 'x402kit/evm'
import {
  batchSettlementAbi,
  batchSettlementBytecode,
  erc3009DepositCollectorAbi,
  erc3009DepositCollectorBytecode,
} from '../contracts/artifacts/index.ts'
import { type Listening, listen } from './reference.ts'

const multicall3 = '0xcA11bde05977b3631167028862bE2a173976CA11'

async function deploy(devnet: Devnet, abi: Abi, bytecode: Hex, args: readonly unknown[] = []): Promise<Address> {
  const hash = await devnet.walletClient(devnet.deployer.privateKey).deployContract({ abi, bytecode, args } as never)
  const { contractAddress } = await devnet.publicClient.waitForTransactionReceipt({ hash })
  return contractAddress!
}

/** Our escrow's runtime code at the canonical address, and a collector built for it at its own. */
export async function placeEscrow(devnet: Devnet): Promise<void> {
  const escrow = await deploy(devnet, batchSettlementAbi, batchSettlementBytecode)
  await devnet.setCode(Channel.escrowAddress, (await devnet.publicClient.getCode({ address: escrow }))!)
  const collector = await deploy(devnet, erc3009DepositCollectorAbi, erc3009DepositCollectorBytecode, [Channel.escrowAddress])
  await devnet.setCode(Channel.erc3009CollectorAddress, (await devnet.publicClient.getCode({ address: collector }))!)
}

/**
 * The reference facilitator's signer over one key. Anvil has no Multicall3, which the reference reads
 * channel state through, so its `tryAggregate` is answered call by call here.
 */
export function referenceSigner(devnet: Devnet, privateKey: Hex) {
  const account = privateKeyToAccount(privateKey)
  const client = createWalletClient({ account, chain: devnet.chain, transport: http(devnet.rpcUrl) }).extend(publicActions)
  return toFacilitatorEvmSigner({
    address: account.address,
    getCode: (args) => client.getCode(args),
    readContract: async (args) => {
      if (getAddress(args.address) === multicall3 && args.functionName === 'tryAggregate') {
        const [, calls] = args.args as [boolean, { target: Address; callData: Hex }[]]
        return Promise.all(
          calls.map(({ target, callData }) =>
            client.call({ to: target, data: callData }).then(
              ({ data }) => ({ success: true, returnData: data ?? '0x' }),
              () => ({ success: false, returnData: '0x' }),
            ),
          ),
        )
      }
      return client.readContract({ ...args, args: args.args ?? [] } as never)
    },
    verifyTypedData: (args) => client.verifyTypedData(args as never),
    writeContract: (args) => client.writeContract({ ...args, args: args.args ?? [] } as never),
    sendTransaction: (args) => client.sendTransaction(args),
    waitForTransactionReceipt: (args) => client.waitForTransactionReceipt(args),
  })
}

export type ReferenceBatchFacilitator = Listening & {
  /** Each call, in order: the endpoint and the payload's `type`. */
  calls: { path: 'verify' | 'settle'; type: string }[]
}

/**
 * The reference batch-settlement facilitator over HTTP: `sender` sends its transactions; `authorizer`
 * (the channels' receiver authorizer), when given, signs claims and refunds the seller leaves unsigned.
 */
export async function startReferenceBatchFacilitator(
  devnet: Devnet,
  keys: { sender: Hex; authorizer?: Hex },
): Promise<ReferenceBatchFacilitator> {
  const facilitator = new x402Facilitator()
  const authorizer = keys.authorizer ? privateKeyToAccount(keys.authorizer) : undefined
  facilitator.register(devnet.network, new ReferenceBatchScheme(referenceSigner(devnet, keys.sender), authorizer as never))
  const calls: ReferenceBatchFacilitator['calls'] = []
  const app = express()
  app.use(express.json({ limit: '2mb' }))
  for (const path of ['verify', 'settle'] as const)
    app.post(`/${path}`, async (req, res) => {
      calls.push({ path, type: String(req.body?.paymentPayload?.payload?.type) })
      try {
        res.json(await facilitator[path](req.body.paymentPayload, req.body.paymentRequirements))
      } catch (error) {
        res.status(500).json({ error: error instanceof Error ? error.message : String(error) })
      }
    })
  app.get('/supported', (_req, res) => {
    res.json(facilitator.getSupported())
  })
  return { ...(await listen(app)), calls }
}

/** A reference resource server (Express + @x402/express) selling `GET /quote` over batch-settlement, its facilitator reached by `client`. */
export async function startReferenceChannelShop(
  devnet: Devnet,
  options: { client: HTTPFacilitatorClient; server: ReferenceChannelServer; payTo: Address; price: bigint; minDeposit: bigint },
): Promise<Listening> {
  const network = devnet.network as `${string}:${string}`
  const app = express()
  app.use(
    paymentMiddleware(
      {
        'GET /quote': {
          accepts: {
            scheme: 'batch-settlement',
            network,
            payTo: options.payTo,
            price: {
              amount: options.price.toString(),
              asset: devnet.usdc,
              extra: { name: 'USD Coin', version: '2', minDeposit: options.minDeposit.toString() },
            },
          },
          description: 'Quote',
          mimeType: 'application/json',
        },
      } as never,
      new x402ResourceServer(options.client).register(network, options.server),
    ),
  )
  app.get('/quote', (_req, res) => {
    res.json({ symbol: 'ETH', usd: 3_000 })
  })
  return listen(app)
}
