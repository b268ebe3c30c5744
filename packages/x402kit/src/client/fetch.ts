/**
 * `wrapFetch`: a fetch that answers a 402 by paying once, within a budget (x402 v2 §3 flow; HTTP
 * transport in specs/transports-v2/http.md). It answers in the version the server asked in, keeps the
 * access credentials payments earn and sends them with the later requests they cover (§3 step 5).
 */
import { BaseError, Reason } from '../core/Errors.ts'
import { HttpHeader } from '../core/HttpHeader.ts'
import * as PaymentPayload from '../core/PaymentPayload.ts'
import * as PaymentRequired from '../core/PaymentRequired.ts'
import type { PaymentOutcome, SchemeClient } from '../core/Scheme.ts'
import * as Channel from '../evm/batch/Channel.ts'
import {
  type BatchSettlementEvmClient,
  type BatchSettlementEvmClientOptions,
  batchSettlementEvmClient,
  type Channels,
} from '../evm/batch/client.ts'
import { type ExactEvmClientOptions, exactEvmClient } from '../evm/exact/client.ts'
import { type EvmSignerSource, toEvmSigner } from '../evm/Signer.ts'
import * as Budget from './Budget.ts'
import { credentialCache, type HeldCredential } from './credentials.ts'
import { attach, type CredentialInfo, decodePaymentResponse, getPaymentResult, type PaymentResult } from './PaymentResult.ts'
import { type Asked, discard, messageOf, readPaymentRequired, readServerError } from './readPaymentRequired.ts'
import { type Choice, select } from './select.ts'

export type Fetch = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>

export type WrapFetchConfig = {
  /** A viem account, wallet client or `{ provider }`: pays `exact` on EVM. Resolved on the first 402. */
  account?: EvmSignerSource
  /**
   * Chain access for the account's `exact` payments in permit-only tokens (EIP-2612), which must read
   * the token's nonce before signing. Not needed for EIP-3009 tokens such as USDC.
   */
  publicClient?: ExactEvmClientOptions['publicClient']
  /** Scheme clients, tried before the account's. */
  schemes?: readonly SchemeClient[]
  /** What the client may pay. */
  budget: Budget.Limits
  /** Assets to value offers in, beyond the `Network` registry. */
  assets?: readonly Budget.KnownAsset[]
  /** Called once for every payment sent, with the outcome. Errors it throws are ignored. */
  onPayment?: (event: PaymentEvent) => void | Promise<void>
  /** Keep the access credentials payments earn and send them with the requests they cover. Default true. */
  credentials?: boolean
  /**
   * Pay `batch-settlement` offers over payment channels with the account: one deposit, then a signed
   * voucher per request. `true` for the defaults (deposit 100 requests' worth, channels in memory).
   * The deposit is held, not spent: `pay.channels.close()` gets back what was not spent.
   */
  channels?: boolean | BatchSettlementEvmClientOptions
  /**
   * Schemes to pay in first when a server offers several, in order; then the cheapest offer. Default:
   * `['batch-settlement']` when `channels` is set (a channel costs no chain transaction per request),
   * else none (the cheapest offer, whatever its scheme).
   */
  prefer?: readonly string[]
}

/** A paying fetch; `channels` manages the payment channels it opened (when `channels` is configured). */
export type PayingFetch = Fetch & { readonly channels: Channels }

export type PaymentEvent = PaymentResult & { url: string }

type Chosen = Omit<PaymentResult, 'paid'>

/** An offer chosen to pay, with what the payment header needs. */
type Paid = { asked: Asked; choice: Choice; chosen: Chosen; resource: string }

const maxRemembered = 1_000

export class PaymentSigningError extends BaseError {
  override name = 'PaymentSigningError'
}

/**
 * Wraps a fetch so that a 402 is paid, once, with the cheapest offer within the budget, and the
 * request repeated with the payment. Use `getPaymentResult(response)` for what was paid, or why not.
 *
 * @example
 * ```ts
 * import { privateKeyToAccount } from 'viem/accounts'
 * import { getPaymentResult, wrapFetch } from 'x402kit/client'
 * const pay = wrapFetch(fetch, { account: privateKeyToAccount(key), budget: { perRequest: '$0.05' } })
 * const response = await pay('https://api.example.com/weather')
 * getPaymentResult(response) // { paid: true, offer, settlement, payer }
 * ```
 */
export function wrapFetch(fetch: Fetch, config: WrapFetchConfig): PayingFetch {
  if (!config.account && !config.schemes?.length)
    throw new BaseError('wrapFetch has nothing to pay with.', { code: 'invalid_config', hint: 'Give it an `account`, or `schemes`.' })
  if (config.channels && !config.account)
    throw new BaseError('Channels need an account.', {
      code: 'invalid_config',
      hint: 'Give wrapFetch an `account` to sign deposits and vouchers.',
    })
  const budget = Budget.from(config.budget, { assets: config.assets })
  const { schemes, channels } = lazySchemes(config)
  const credentials = config.credentials === false ? undefined : credentialCache()
  const prefer = config.prefer ?? (config.channels ? [Channel.scheme] : [])
  // Channel offers paid before, by method and URL: the next request there carries its voucher at once,
  // saving the round trip for the 402. A refusal falls back to reading the offers anew.
  const remembered = new Map<string, Paid>()
  const keyOf = (request: Request) => `${request.method} ${request.url}`
  const remember = (request: Request, paid: Paid) => {
    remembered.delete(keyOf(request))
    remembered.set(keyOf(request), paid)
    if (remembered.size > maxRemembered) remembered.delete(remembered.keys().next().value as string)
  }

  const paying = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init)
    // A stream can be read once; every other body is copied now, so it can be sent again.
    const retry = isStream(init?.body) ? undefined : request.clone()
    const sendsOwn = carriesPayment(request) || request.headers.has(HttpHeader.paymentCredential)
    const held = credentials && !sendsOwn ? credentials.take(request) : undefined
    if (held) request.headers.set(HttpHeader.paymentCredential, held.token)
    const known = !held && !sendsOwn && retry ? remembered.get(keyOf(request)) : undefined
    let response: Response
    if (known && retry) {
      const { answer, result } = await payWith({ ...known, retry, request })
      if (answer.status !== 402) return finish(request, answer, result)
      remembered.delete(keyOf(request))
      response = answer
    } else response = await fetch(request)
    let credentialRefused: string | undefined
    if (held && credentials) {
      if (response.status !== 402) {
        // A failed answer costs the credential no use at the server (it gives the use back).
        if (response.status < 400) credentials.spent(held)
        else credentials.giveBack(held)
        return getPaymentResult(response) ? response : attach(response, { paid: false, credential: infoOf(held) })
      }
      const reason = await readServerError(response)
      const refused = reason !== undefined && (reason === Reason.credentialInvalid || reason.startsWith('credential_'))
      // Out of scope says nothing of the credential itself: it stays for the requests it covers.
      if (refused && reason !== Reason.credentialScopeMismatch) credentials.drop(held)
      else credentials.giveBack(held)
      if (refused) credentialRefused = reason
    }
    // A response an inner wrapFetch already handled was paid (or refused) there.
    if (response.status !== 402 || getPaymentResult(response)) return response
    if (carriesPayment(request)) return attach(response, { paid: false, reason: 'payment_already_attached' })

    const read = await readPaymentRequired(response)
    if (!read.ok) return attach(response, { paid: false, reason: 'invalid_payment_required', error: read.error })
    const { asked } = read
    const selection = select(asked.offers, { schemes: await schemes(), budget, prefer })
    if (!selection.ok)
      return attach(response, { paid: false, reason: selection.reason, x402Version: asked.x402Version, rejected: selection.rejected })
    const { choice, rejected } = selection
    const chosen: Chosen = { x402Version: asked.x402Version, offer: choice.offer, rejected }
    if (!retry)
      return attach(response, {
        ...chosen,
        paid: false,
        reason: 'unreplayable_body',
        error: 'The request body is a stream, which cannot be sent again with a payment.',
      })

    const resource = resourceOf(asked, choice.index) || response.url || request.url
    discard(response)
    const { answer, result } = await payWith({ asked, choice, chosen, resource, retry, request, credentialRefused })
    if (result.paid && asked.x402Version === 2 && choice.scheme.paymentResult && choice.offer.scheme === Channel.scheme)
      remember(request, { asked, choice, chosen, resource })
    return finish(request, answer, result)
  }

  /** Pays the chosen offer and reads the answer; a scheme with state may resynchronise and pay once more. */
  async function payWith(paid: Paid & { retry: Request; request: Request; credentialRefused?: string | undefined }) {
    const { asked, choice, chosen, resource, retry, request, credentialRefused } = paid
    let payload: Record<string, unknown>
    let answer: Response
    for (let attempt = 0; ; attempt++) {
      try {
        payload = await choice.scheme.createPayload(choice.offer, { resource })
      } catch (cause) {
        throw new PaymentSigningError(`Signing the payment for ${resource} failed.`, {
          code: 'payment_signing_failed',
          cause,
          details: messageOf(cause),
        })
      }
      const [name, value] = paymentHeader(asked, choice.index, payload)
      const sending = retry.clone()
      sending.headers.set(name, value)
      try {
        answer = await fetch(sending)
      } catch (error) {
        await choice.scheme.paymentResult?.({ offer: choice.offer, payload }).catch(() => undefined)
        throw error
      }
      const again = await reportResult(choice.scheme, choice.offer, payload, answer)
      if (!again || attempt > 0) break
      discard(answer)
    }
    const token = answer.status < 400 ? answer.headers.get(HttpHeader.paymentCredential) : null
    const granted = token !== null ? credentials?.keep(request.url, token) : undefined
    const result: PaymentResult = {
      ...(await outcome(answer, chosen, payload)),
      ...(granted && { granted: infoOf(granted) }),
      ...(credentialRefused && { credentialRefused }),
    }
    return { answer, result }
  }

  async function finish(request: Request, answer: Response, result: PaymentResult): Promise<Response> {
    attach(answer, result)
    try {
      await config.onPayment?.({ ...result, url: request.url })
    } catch {
      // The payment is made and the response is the caller's; a failing hook must not lose either.
    }
    return answer
  }
  return Object.assign(paying, { channels })
}

/** Tells a scheme with state what became of its payload; whether it asks to pay once more. */
async function reportResult(scheme: SchemeClient, offer: PaymentOutcome['offer'], payload: Record<string, unknown>, answer: Response) {
  if (!scheme.paymentResult) return false
  let settlement: PaymentOutcome['settlement']
  let refusal: PaymentOutcome['refusal']
  try {
    settlement = decodePaymentResponse(answer.headers)
  } catch {
    settlement = undefined
  }
  const required = answer.status === 402 ? answer.headers.get(HttpHeader.paymentRequired) : null
  if (required !== null) {
    try {
      const decoded = PaymentRequired.decode(required)
      refusal = { error: decoded.error ?? undefined, accepts: decoded.accepts }
    } catch {
      refusal = undefined
    }
  }
  try {
    const result = await scheme.paymentResult({ offer, payload, status: answer.status, settlement, refusal })
    return result?.retry === true && answer.status === 402
  } catch {
    return false
  }
}

function lazySchemes(config: WrapFetchConfig): { schemes: () => Promise<SchemeClient[]>; channels: Channels } {
  let account: Promise<SchemeClient[]> | undefined
  const own = () => {
    if (!account)
      account = toEvmSigner(config.account as EvmSignerSource).then((signer) => {
        const exact = exactEvmClient(signer, { publicClient: config.publicClient })
        if (!config.channels) return [exact]
        return [batchSettlementEvmClient(signer, config.channels === true ? {} : config.channels), exact]
      })
    const pending = account
    return pending.catch((error) => {
      if (account === pending) account = undefined
      throw error
    })
  }
  const schemes = async () => [...(config.schemes ?? []), ...(config.account ? await own() : [])]
  const batch = async (): Promise<Channels> => {
    const found = (await schemes()).find((scheme): scheme is BatchSettlementEvmClient => 'channels' in scheme)
    if (!found)
      throw new BaseError('This fetch pays over no channels.', { code: 'invalid_config', hint: 'Set `channels` in the wrapFetch config.' })
    return found.channels
  }
  const channels: Channels = {
    list: async () => (await batch()).list(),
    get: async (id) => (await batch()).get(id),
    recover: async () => (await batch()).recover(),
    refund: async (id, options) => (await batch()).refund(id, options),
    withdraw: async (id) => (await batch()).withdraw(id),
    finishWithdraw: async (id) => (await batch()).finishWithdraw(id),
    close: async (options) => (await batch()).close(options),
    flush: async () => (await batch()).flush(),
  }
  return { schemes, channels }
}

function resourceOf(asked: Asked, index: number): string {
  return asked.x402Version === 2 ? asked.resource.url : (asked.v1Offers[index]?.resource ?? '')
}

function paymentHeader(asked: Asked, index: number, payload: Record<string, unknown>): [string, string] {
  if (asked.x402Version === 2) {
    const offer = asked.offers[index]!
    const extensions = asked.extensions ? { extensions: asked.extensions } : {}
    return [
      HttpHeader.paymentSignature,
      PaymentPayload.encode({ x402Version: 2, resource: asked.resource, accepted: offer, payload, ...extensions }),
    ]
  }
  const offer = asked.v1Offers[index]!
  return [HttpHeader.xPayment, PaymentPayload.encode({ x402Version: 1, scheme: offer.scheme, network: offer.network, payload })]
}

async function outcome(answer: Response, chosen: Chosen, payload: Record<string, unknown>): Promise<PaymentResult> {
  let settlement: PaymentResult['settlement']
  let error: string | undefined
  try {
    settlement = decodePaymentResponse(answer.headers)
  } catch (cause) {
    error = messageOf(cause)
  }
  const payer = settlement?.payer ?? payerOf(payload)
  const channel = channelOf(payload)
  const base = { ...chosen, ...(settlement && { settlement }), ...(payer && { payer }), ...(channel && { channel }) }
  // A server fault after the payment was sent (its facilitator down, say) is no proof of payment either way.
  if (answer.status >= 500 && !settlement?.success)
    return {
      ...base,
      paid: false,
      reason: 'payment_unconfirmed',
      error: (await readServerError(answer)) ?? `The server answered ${answer.status}.`,
    }
  if (answer.status === 402 || settlement?.success === false) {
    const reason = settlement?.errorReason ?? (answer.status === 402 ? await readServerError(answer) : undefined)
    return { ...base, paid: false, reason: 'payment_rejected', error: reason ?? error ?? `The server answered ${answer.status}.` }
  }
  return { ...base, paid: true, ...(error && { error }) }
}

/** The paying address a payload names: an EIP-3009 authorization's `from`, or a permit's `owner`. */
function payerOf(payload: Record<string, unknown>): string | undefined {
  const { authorization, permit, channelConfig } = payload as {
    authorization?: { from?: unknown }
    permit?: { owner?: unknown }
    channelConfig?: { payer?: unknown }
  }
  const payer = authorization?.from ?? permit?.owner ?? channelConfig?.payer
  return typeof payer === 'string' ? payer : undefined
}

function channelOf(payload: Record<string, unknown>): PaymentResult['channel'] {
  const { voucher, deposit } = payload as {
    voucher?: { channelId?: unknown; maxClaimableAmount?: unknown }
    deposit?: { amount?: unknown }
  }
  if (typeof voucher?.channelId !== 'string' || typeof voucher.maxClaimableAmount !== 'string') return undefined
  return {
    id: voucher.channelId,
    voucher: voucher.maxClaimableAmount,
    ...(typeof deposit?.amount === 'string' && { deposit: deposit.amount }),
  }
}

function carriesPayment(request: Request): boolean {
  return request.headers.has(HttpHeader.paymentSignature) || request.headers.has(HttpHeader.xPayment)
}

function infoOf(credential: HeldCredential): CredentialInfo {
  return {
    scope: credential.scope,
    expiresAt: credential.expiresAt,
    ...(credential.usesLeft !== undefined && { usesLeft: credential.usesLeft }),
  }
}

function isStream(body: unknown): boolean {
  if (typeof body !== 'object' || body === null) return false
  return body instanceof ReadableStream || Symbol.asyncIterator in body
}
