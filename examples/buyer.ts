/**
 * An agent that pays for what it fetches, within a budget, and reports what each call cost.
 *
 *   X402_PRIVATE_KEY=0x… npx tsx examples/buyer.ts http://127.0.0.1:4021/weather
 */
import { privateKeyToAccount } from 'viem/accounts'
import { getPaymentResult, wrapFetch } from 'x402kit/client'

const account = privateKeyToAccount(required('X402_PRIVATE_KEY') as `0x${string}`)
const paidFetch = wrapFetch(fetch, {
  account,
  budget: { perRequest: '$0.05' },
  onPayment: (event) => console.error(`paid ${event.offer?.amount} atomic units of ${event.offer?.asset} for ${event.url}`),
})

const response = await paidFetch(process.argv[2] ?? 'http://127.0.0.1:4021/weather')
const result = getPaymentResult(response)
console.log(response.status, await response.text())
if (result?.paid) console.log('settled in transaction', result.settlement?.transaction)
else if (result) console.log('not paid:', result.reason)

function required(name: string): string {
  const value = process.env[name]
  if (!value) throw new Error(`Set ${name}.`)
  return value
}
