/**
 * `x402 facilitator channels`: the `batch-settlement` channels a running facilitator knows, from its
 * `GET /channels` and `GET /channels/:id` (with the merchant API key where the service asks for one).
 */
import { BaseError } from 'x402kit'

export type ChannelsCommandOptions = {
  /** The facilitator's URL; default `X402_FACILITATOR_URL`, then `http://127.0.0.1:4020`. */
  url?: string
  /** The merchant API key; default `X402_API_KEY`. */
  key?: string
  receiver?: string
  payer?: string
  channel?: string
  limit?: string
  offset?: string
  json?: boolean
  env?: Record<string, string | undefined>
  out?: (line: string) => void
  fetch?: typeof fetch
}

type ChannelView = {
  channelId: string
  network: string
  payer: string
  receiver: string
  token: string
  balance: string
  claimed: string
  charged: string | null
  unclaimed: string
  pendingWithdrawal: string
  updatedAt: string
  transactions?: { kind: string; status: string; transaction: string | null; amount: string; vouchers?: number; gasUsed: string | null }[]
}

/** Prints one channel or a page of channels as a table (or JSON); returns the exit code. */
export async function facilitatorChannels(options: ChannelsCommandOptions): Promise<number> {
  const env = options.env ?? process.env
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`))
  const base = (options.url ?? env.X402_FACILITATOR_URL ?? 'http://127.0.0.1:4020').replace(/\/$/, '')
  const key = options.key ?? env.X402_API_KEY
  if (!options.channel && !options.receiver && !options.payer)
    throw new BaseError('x402 facilitator channels needs --receiver 0x…, --payer 0x… or --channel 0x….', {
      hint: 'x402 facilitator channels --receiver 0xYourPayTo [--url http://127.0.0.1:4020] [--key KEY]',
    })
  const query = new URLSearchParams()
  if (options.receiver) query.set('receiver', options.receiver)
  if (options.payer) query.set('payer', options.payer)
  if (options.limit) query.set('limit', options.limit)
  if (options.offset) query.set('offset', options.offset)
  const url = options.channel ? `${base}/channels/${encodeURIComponent(options.channel)}` : `${base}/channels?${query}`
  const response = await (options.fetch ?? fetch)(url, { headers: key ? { authorization: `Bearer ${key}` } : {} })
  const body = (await response.json().catch(() => ({}))) as Record<string, unknown>
  if (!response.ok) {
    out(`${response.status} ${String(body.code ?? '')}: ${String(body.detail ?? response.statusText)}`)
    return 1
  }
  if (options.json) {
    out(JSON.stringify(body))
    return 0
  }
  if (options.channel) {
    const channel = body as ChannelView
    for (const [name, value] of Object.entries(channel)) if (name !== 'transactions') out(`${name.padEnd(18)} ${value ?? '-'}`)
    for (const action of channel.transactions ?? [])
      out(
        `${action.kind.padEnd(7)} ${action.status.padEnd(9)} ${action.transaction ?? '-'}  amount ${action.amount}${action.vouchers === undefined ? '' : `  vouchers ${action.vouchers}`}  gas ${action.gasUsed ?? '-'}`,
      )
    return 0
  }
  const { items, pagination } = body as { items: ChannelView[]; pagination: { limit: number; offset: number; total: number } }
  const table = [
    ['channel', 'payer', 'receiver', 'balance', 'claimed', 'charged', 'withdrawing', 'updated'],
    ...items.map((item) => [
      item.channelId,
      item.payer,
      item.receiver,
      item.balance,
      item.claimed,
      item.charged ?? '-',
      item.pendingWithdrawal,
      item.updatedAt,
    ]),
  ]
  const widths = table[0]!.map((_, column) => Math.max(...table.map((cells) => cells[column]!.length)))
  for (const cells of table)
    out(
      cells
        .map((cell, column) => (column >= 3 && column <= 6 ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!)))
        .join('  ')
        .trimEnd(),
    )
  out(`${items.length} of ${pagination.total} (offset ${pagination.offset}); amounts in the token's atomic units.`)
  return 0
}
