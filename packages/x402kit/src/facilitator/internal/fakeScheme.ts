/**
 * A scheme that stands in for the chain in unit tests: settlement can be made slow or failing on
 * demand, which a real chain will not do when a test asks.
 */
import type { Payment, SettleResponse, VerifyResponse } from '../../core/Facilitator.ts'
import type { Network } from '../../core/Network.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import type { SchemeFacilitator } from '../../core/Scheme.ts'

export const network = 'eip155:84532'
export const asset = '0x036CbD53842c5426634e7929541eC2318f3dCF7e'
export const payTo = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
export const payer = '0x857b06519E91e3A54538791bDbb0E22373e36b66'
export const signer = '0x1111111111111111111111111111111111111111'

export const requirements: PaymentRequirements = {
  scheme: 'exact',
  network,
  amount: '1000',
  asset,
  payTo,
  maxTimeoutSeconds: 300,
  extra: { name: 'USDC', version: '2' },
}

/** A payment whose authorization is identified by `nonce`. */
export function payment(nonce: string, offer: Partial<PaymentRequirements> = {}): Payment {
  const accepted = { ...requirements, ...offer }
  return { requirements: accepted, payload: { x402Version: 2, accepted, payload: { nonce, from: payer } } }
}

export type FakeScheme = SchemeFacilitator & { calls: { verify: number; settle: number } }

export function fakeScheme(
  options: {
    networks?: Network[]
    verify?: (payment: Payment) => Promise<VerifyResponse>
    settle?: (payment: Payment, call: number) => Promise<SettleResponse>
    settleMs?: number
  } = {},
): FakeScheme {
  const calls = { verify: 0, settle: 0 }
  return {
    scheme: 'exact',
    networks: options.networks ?? [network],
    calls,
    async verify(payment) {
      calls.verify++
      if (options.verify) return options.verify(payment)
      return { isValid: true, payer }
    },
    async settle(payment) {
      const call = ++calls.settle
      if (options.settleMs) await new Promise((resolve) => setTimeout(resolve, options.settleMs))
      if (options.settle) return options.settle(payment, call)
      // Each call a different hash, so a second settlement would show.
      return { success: true, payer, transaction: `0x${call.toString(16).padStart(64, '0')}`, network: payment.requirements.network }
    },
    settlementKey(payment) {
      const nonce = payment.payload.payload.nonce
      return typeof nonce === 'string'
        ? `${payment.requirements.network}:${payment.requirements.asset}:${payer}:${nonce}`.toLowerCase()
        : undefined
    },
    signers: () => [signer],
    extra: () => ({ feePayer: signer }),
  }
}
