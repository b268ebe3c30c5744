/**
 * Test stand-ins for the paywall's unit tests: a facilitator that checks an `exact` EIP-3009 payment
 * offline (recipient, value, signature; no chain) and whose verdicts can be swapped per test, and a
 * payer that signs real payloads with a fresh key.
 */
import { recoverTypedDataAddress } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import type { FacilitatorClient, Payment, SettleResponse, VerifyResponse } from '../../core/Facilitator.ts'
import * as Network from '../../core/Network.ts'
import * as PaymentPayload from '../../core/PaymentPayload.ts'
import * as PaymentRequired from '../../core/PaymentRequired.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import { domainOf, exactEvmClient } from '../../evm/exact/client.ts'
import * as Eip3009 from '../../evm/exact/Eip3009.ts'
import { toEvmSigner } from '../../evm/Signer.ts'

export const network = 'eip155:84532'
export const payTo = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
export const transaction = `0x${'ab'.repeat(32)}`

export type FakeFacilitator = FacilitatorClient & {
  calls: { verify: Payment[]; settle: Payment[] }
  /** Replace to change the verdicts; `reset()` restores the offline checks. */
  onVerify: (payment: Payment) => Promise<VerifyResponse>
  onSettle: (payment: Payment) => Promise<SettleResponse>
  reset(): void
}

export function fakeFacilitator(): FakeFacilitator {
  const calls = { verify: [] as Payment[], settle: [] as Payment[] }
  const fake: FakeFacilitator = {
    calls,
    onVerify: check,
    onSettle: settle,
    reset() {
      calls.verify.length = 0
      calls.settle.length = 0
      fake.onVerify = check
      fake.onSettle = settle
    },
    async verify(payment) {
      calls.verify.push(payment)
      return fake.onVerify(payment)
    },
    async settle(payment) {
      calls.settle.push(payment)
      return fake.onSettle(payment)
    },
    async supported() {
      return { kinds: [{ x402Version: 2, scheme: 'exact', network }], extensions: [], signers: {} }
    },
  }
  return fake
}

async function check({ payload, requirements }: Payment): Promise<VerifyResponse> {
  const parsed = Eip3009.payload.safeParse(payload.payload)
  if (!parsed.success) return { isValid: false, invalidReason: 'invalid_payload' }
  const { authorization, signature } = parsed.data
  if (authorization.to.toLowerCase() !== requirements.payTo.toLowerCase())
    return { isValid: false, invalidReason: 'invalid_exact_evm_recipient_mismatch', payer: authorization.from }
  if (authorization.value !== requirements.amount)
    return { isValid: false, invalidReason: 'invalid_exact_evm_payload_authorization_value_mismatch', payer: authorization.from }
  const signer = await recoverTypedDataAddress({
    ...Eip3009.typedData(domainOf(requirements), authorization),
    signature: signature as `0x${string}`,
  })
  if (signer.toLowerCase() !== authorization.from.toLowerCase())
    return { isValid: false, invalidReason: 'invalid_exact_evm_signature', payer: authorization.from }
  return { isValid: true, payer: authorization.from }
}

async function settle({ payload, requirements }: Payment): Promise<SettleResponse> {
  const payer = (payload.payload as { authorization?: { from?: string } }).authorization?.from
  return { success: true, transaction, network: requirements.network, payer, amount: requirements.amount }
}

export type Payer = {
  address: string
  /** A version 2 `PAYMENT-SIGNATURE` value for the offer (changed by `tamper` after signing, if given). */
  pay(offer: PaymentRequirements, tamper?: Partial<PaymentRequirements>): Promise<string>
  /** A version 1 `X-PAYMENT` value for the offer. */
  payV1(offer: PaymentRequirements): Promise<string>
  /** Pays the first offer of a 402 (or the one at `index`). */
  answer(response: Response, index?: number): Promise<string>
}

export async function payer(): Promise<Payer> {
  const account = privateKeyToAccount(generatePrivateKey())
  const scheme = exactEvmClient(await toEvmSigner(account))
  const pay: Payer['pay'] = async (offer, tamper) => {
    const payload = await scheme.createPayload(offer, { resource: 'http://localhost/' })
    return PaymentPayload.encode({ x402Version: 2, accepted: { ...offer, ...tamper }, payload })
  }
  return {
    address: account.address,
    pay,
    async payV1(offer) {
      const payload = await scheme.createPayload(offer, { resource: 'http://localhost/' })
      return PaymentPayload.encode({ x402Version: 1, scheme: offer.scheme, network: Network.toV1Name(offer.network), payload })
    },
    async answer(response, index = 0) {
      const offer = offersOf(response)[index]
      if (!offer) throw new Error(`The response (${response.status}) has no offer ${index}.`)
      return pay(offer)
    },
  }
}

/** The offers of a 402, from its `PAYMENT-REQUIRED` header. */
export function offersOf(response: Response): PaymentRequirements[] {
  return requiredOf(response)?.accepts ?? []
}

export function requiredOf(response: Response): PaymentRequired.PaymentRequired | undefined {
  const header = response.headers.get('PAYMENT-REQUIRED')
  return header === null ? undefined : PaymentRequired.decode(header)
}
