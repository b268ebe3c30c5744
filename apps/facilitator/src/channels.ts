/**
 * `GET /channels/:id` and `GET /channels?receiver=…|payer=…&limit=&offset=`: what the facilitator
 * knows of `batch-settlement` channels, for the dashboard and `x402 facilitator channels`. Amounts
 * are decimal strings of the token's atomic units. With merchant API keys, a merchant sees the
 * channels that pay its own addresses only.
 */
import type { Hex } from 'viem'
import type { ActionRecord, BatchSettlementEvmFacilitator, ChannelRecord } from 'x402kit/evm'

export type ChannelsOptions = {
  /**
   * Decides who may read the channels of a receiver: `undefined` to allow, or the problem response to
   * answer. Called with the receiver asked for (lowercase), or `undefined` when the query names none.
   */
  authorize(request: Request, receiver: string | undefined): Response | undefined
}

const maxLimit = 500

/** The channel in the form the endpoints answer. */
export function channelView(record: ChannelRecord) {
  return {
    channelId: record.id,
    network: record.network,
    payer: record.config.payer,
    receiver: record.config.receiver,
    token: record.config.token,
    balance: record.balance.toString(),
    claimed: record.claimed.toString(),
    charged: record.charged?.toString() ?? null,
    unclaimed: ((record.charged ?? record.claimed) - record.claimed).toString(),
    pendingWithdrawal: record.withdrawal.toString(),
    withdrawRequestedAt: record.withdrawRequestedAt,
    refundNonce: record.refundNonce.toString(),
    withdrawDelay: record.config.withdrawDelay,
    receiverAuthorizer: record.config.receiverAuthorizer,
    updatedAt: new Date(record.updatedAt).toISOString(),
  }
}

function actionView(record: ActionRecord) {
  return {
    kind: record.kind,
    status: record.status,
    transaction: record.transaction ?? null,
    vouchers: record.kind === 'claim' ? record.count : undefined,
    amount: record.amount.toString(),
    gasUsed: record.gasUsed?.toString() ?? null,
    errorReason: record.errorReason ?? null,
    createdAt: new Date(record.createdAt).toISOString(),
  }
}

/**
 * The handler of the channel endpoints, or `undefined` for a request to another path.
 *
 * @example
 * ```ts
 * const channels = channelsHandler(scheme, { authorize: () => undefined })
 * const response = await channels(new Request('http://localhost/channels?receiver=0x…'))
 * ```
 */
export function channelsHandler(scheme: BatchSettlementEvmFacilitator, options: ChannelsOptions) {
  return async (request: Request): Promise<Response | undefined> => {
    const url = new URL(request.url)
    const path = url.pathname.replace(/(?<=.)\/$/, '')
    if (path !== '/channels' && !path.startsWith('/channels/')) return undefined
    if (request.method !== 'GET') return problem(405, 'method_not_allowed', 'The channel endpoints answer GET only.')
    if (path === '/channels') {
      const receiver = url.searchParams.get('receiver') ?? undefined
      const payer = url.searchParams.get('payer') ?? undefined
      for (const [name, value] of [
        ['receiver', receiver],
        ['payer', payer],
      ] as const)
        if (value !== undefined && !/^0x[0-9a-fA-F]{40}$/.test(value))
          return problem(400, 'invalid_query', `${name} must be an address: 0x and 40 hex digits.`)
      if (!receiver && !payer) return problem(400, 'invalid_query', 'Name a receiver or a payer: /channels?receiver=0x… or ?payer=0x….')
      const limit = integer(url.searchParams.get('limit'), 50)
      const offset = integer(url.searchParams.get('offset'), 0)
      if (limit === undefined || limit < 1 || limit > maxLimit) return problem(400, 'invalid_query', `limit must be 1 to ${maxLimit}.`)
      if (offset === undefined || offset < 0) return problem(400, 'invalid_query', 'offset must be a whole number, 0 or more.')
      const refused = options.authorize(request, receiver?.toLowerCase())
      if (refused) return refused
      const page = await scheme.channels({
        ...(receiver && { receiver }),
        ...(payer && { payer }),
        limit,
        offset,
      })
      return Response.json({ items: page.items.map(channelView), pagination: { limit, offset, total: page.total } })
    }
    const id = decodeURIComponent(path.slice('/channels/'.length))
    if (!/^0x[0-9a-fA-F]{64}$/.test(id)) return problem(400, 'invalid_channel_id', 'A channel id is 0x and 64 hex digits.')
    const found = await scheme.channelRecord(id.toLowerCase() as Hex)
    // Unknown and not the caller's answer alike, so a key cannot probe other merchants' channels.
    const refused = options.authorize(request, found?.channel.config.receiver.toLowerCase() ?? '0x')
    if (refused && refused.status !== 403) return refused
    if (!found || refused) return problem(404, 'channel_not_found', 'This facilitator knows no such channel.')
    return Response.json({ ...channelView(found.channel), transactions: found.actions.map(actionView) })
  }
}

function integer(value: string | null, fallback: number): number | undefined {
  if (value === null || value === '') return fallback
  return /^\d{1,9}$/.test(value) ? Number(value) : undefined
}

function problem(status: number, code: string, detail: string): Response {
  const titles: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed' }
  return new Response(JSON.stringify({ type: 'about:blank', title: titles[status] ?? 'Error', status, detail, code }), {
    status,
    headers: { 'content-type': 'application/problem+json' },
  })
}
