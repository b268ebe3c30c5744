/**
 * `x402 pay <url>`: pays one URL from the shell and prints the response and the settlement.
 */
import { privateKeyToAccount } from 'viem/accounts'
import { BaseError, type Price } from 'x402kit'
import { getPaymentResult, wrapFetch } from 'x402kit/client'

export type PayOptions = {
  url: string
  key?: string
  max?: string
  method?: string
  data?: string
  headers?: string[]
  out?: (line: string) => void
}

/** Returns the process exit code: 0 when the response is 2xx. */
export async function pay(options: PayOptions): Promise<number> {
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`))
  const key = options.key ?? process.env.X402_PRIVATE_KEY
  if (!key || !/^0x[0-9a-fA-F]{64}$/.test(key))
    throw new BaseError('A payer key is needed.', { hint: 'Pass --key 0x… (32-byte hex) or set X402_PRIVATE_KEY.' })
  let url: URL
  try {
    url = new URL(options.url)
  } catch {
    throw new BaseError(`Not a URL: ${options.url}`, { hint: 'Give a full URL such as http://127.0.0.1:4021/weather.' })
  }
  const perRequest: Price = options.max ?? '$0.10'
  const paidFetch = wrapFetch(fetch, { account: privateKeyToAccount(key as `0x${string}`), budget: { perRequest } })
  const headers = new Headers()
  for (const line of options.headers ?? []) {
    const at = line.indexOf(':')
    if (at > 0) headers.set(line.slice(0, at).trim(), line.slice(at + 1).trim())
  }
  if (options.data !== undefined && !headers.has('content-type')) headers.set('content-type', 'application/json')
  const response = await paidFetch(url, {
    method: options.method ?? (options.data === undefined ? 'GET' : 'POST'),
    headers,
    body: options.data,
  })
  const result = getPaymentResult(response)
  out(`${response.status} ${response.statusText}`)
  out(await response.text())
  out(
    JSON.stringify(
      {
        paid: result?.paid ?? false,
        reason: result?.reason ?? (result ? undefined : 'no payment was asked'),
        settlement: result?.settlement,
      },
      null,
      2,
    ),
  )
  return response.ok ? 0 : 1
}
