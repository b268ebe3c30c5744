/**
 * The reference x402 stack (`@x402/*`), assembled as its own documentation shows, for interop tests
 * and side-by-side benchmarks. Everything here runs on loopback against the local chain.
 */
import type { AddressInfo } from 'node:net'
import { x402Facilitator } from '@x402/core/facilitator'
import { HTTPFacilitatorClient } from '@x402/core/server'
import { toFacilitatorEvmSigner } from '@x402/evm'
import { ExactEvmScheme as ExactEvmClientScheme } from '@x402/evm/exact/client'
import { registerExactEvmScheme } from '@x402/evm/exact/facilitator'
import { ExactEvmScheme as ExactEvmServerScheme } from '@x402/evm/exact/server'
import { paymentMiddleware, x402ResourceServer } from '@x402/express'
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch'
import express from 'express'
import { type Account, type Address, type Chain, createWalletClient, type Hex, http, publicActions } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'

export type Listening = { url: string; close(): Promise<void> }

export async function listen(app: express.Express): Promise<Listening> {
  return await new Promise((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections()
            server.close(() => done())
          }),
      })
    })
  })
}

/** The reference facilitator: `x402Facilitator` with `exact` on EVM, one signer key. */
export function referenceFacilitator(options: { rpcUrl: string; chain: Chain; privateKey: Hex; network: `${string}:${string}` }) {
  const account = privateKeyToAccount(options.privateKey)
  const client = createWalletClient({ account, chain: options.chain, transport: http(options.rpcUrl) }).extend(publicActions)
  const signer = toFacilitatorEvmSigner({
    address: account.address,
    getCode: (args) => client.getCode(args),
    readContract: (args) => client.readContract({ ...args, args: args.args ?? [] } as never),
    verifyTypedData: (args) => client.verifyTypedData(args as never),
    writeContract: (args) => client.writeContract({ ...args, args: args.args ?? [] } as never),
    sendTransaction: (args) => client.sendTransaction(args),
    waitForTransactionReceipt: (args) => client.waitForTransactionReceipt(args),
  })
  const facilitator = new x402Facilitator()
  registerExactEvmScheme(facilitator, { signer, networks: options.network })
  return facilitator
}

/** The reference facilitator behind the HTTP API its example serves. */
export async function startReferenceFacilitator(options: Parameters<typeof referenceFacilitator>[0]): Promise<Listening> {
  const facilitator = referenceFacilitator(options)
  const app = express()
  app.use(express.json())
  app.post('/verify', async (req, res) => {
    try {
      res.json(await facilitator.verify(req.body.paymentPayload, req.body.paymentRequirements))
    } catch (error) {
      res.status(500).json({ error: error instanceof Error ? error.message : String(error) })
    }
  })
  app.post('/settle', async (req, res) => {
    try {
      res.json(await facilitator.settle(req.body.paymentPayload, req.body.paymentRequirements))
    } catch (error) {
      res.status(500).json({ error: error instanceof Error ? error.message : String(error) })
    }
  })
  app.get('/supported', (_req, res) => {
    res.json(facilitator.getSupported())
  })
  return await listen(app)
}

/**
 * A reference Express resource server with one paid route `GET /weather`, paid in the given token
 * (the local chain has no default asset in the reference's table, so the price names the token).
 */
export async function startReferenceServer(options: {
  facilitatorUrl: string
  network: `${string}:${string}`
  payTo: Address
  asset: Address
  amount: string
  tokenName?: string
  tokenVersion?: string
}): Promise<Listening> {
  const resourceServer = new x402ResourceServer(new HTTPFacilitatorClient({ url: options.facilitatorUrl })).register(
    options.network,
    new ExactEvmServerScheme(),
  )
  const app = express()
  app.use(
    paymentMiddleware(
      {
        'GET /weather': {
          accepts: {
            scheme: 'exact',
            network: options.network,
            payTo: options.payTo,
            price: {
              amount: options.amount,
              asset: options.asset,
              extra: { name: options.tokenName ?? 'USD Coin', version: options.tokenVersion ?? '2' },
            },
          },
          description: 'Weather',
          mimeType: 'application/json',
        },
      },
      resourceServer,
    ),
  )
  app.get('/weather', (_req, res) => {
    res.json({ city: 'Lisbon', temperatureC: 19 })
  })
  return await listen(app)
}

/**
 * The reference fetch client paying with `exact` on any EVM chain. Its spend controls refuse any token
 * outside its default table (such as the local chain's USDC) before signing, so those are listed in `assets`.
 */
export function referenceFetch(account: Account, assets: { network: `${string}:${string}`; asset: string }[] = []) {
  return wrapFetchWithPaymentFromConfig(fetch, {
    schemes: [{ network: 'eip155:*', client: new ExactEvmClientScheme(account as never) }],
    ...(assets.length > 0 && { spendControls: { allowedAssets: assets } }),
  })
}
