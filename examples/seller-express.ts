/**
 * A paid API with Express 5, with the facilitator in-process: no separate service to run.
 *
 *   RPC_URL=https://sepolia.base.org SIGNER_KEY=0x… PAY_TO=0x… npx tsx examples/seller-express.ts
 */
import express from 'express'
import { exactEvmFacilitator } from 'x402kit/evm'
import { paywall } from 'x402kit/express'
import { createFacilitator } from 'x402kit/facilitator'

const network = 'eip155:84532'
const facilitator = createFacilitator({
  schemes: [
    exactEvmFacilitator({
      networks: {
        [network]: { rpcUrl: process.env.RPC_URL ?? 'https://sepolia.base.org', signers: [required('SIGNER_KEY') as `0x${string}`] },
      },
    }),
  ],
})

const app = express()
app.use(
  paywall({
    facilitator,
    payTo: required('PAY_TO'),
    network,
    routes: { 'GET /report/*': { price: '$0.10', description: 'A research report' } },
  }),
)
app.get('/report/:id', (req, res) => {
  res.json({ id: req.params.id, findings: ['…'] })
})
app.listen(Number(process.env.PORT ?? 4021), () => console.log('paid API ready'))

function required(name: string): string {
  const value = process.env[name]
  if (!value) throw new Error(`Set ${name}.`)
  return value
}
