import { describe, expect, it } from 'vitest'
import type { PaymentRequirements } from '../core/PaymentRequirements.ts'
import type { SchemeClient } from '../core/Scheme.ts'
import * as Budget from './Budget.ts'
import { select } from './select.ts'

const baseUsdc = '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913'
const polygonUsdc = '0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359'
const tokenA = '0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
const tokenB = '0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'
const dollarToken = '0xdddddddddddddddddddddddddddddddddddddddd'

const exact: SchemeClient = {
  scheme: 'exact',
  canPay: (offer) => offer.network.startsWith('eip155:'),
  createPayload: async () => ({}),
}

function offer(amount: string, asset = baseUsdc, network = 'eip155:8453', scheme = 'exact'): PaymentRequirements {
  return { scheme, network, amount, asset, payTo: '0x2222222222222222222222222222222222222222', maxTimeoutSeconds: 60 }
}

describe('select', () => {
  it('chooses the cheapest offer in dollars across assets of different decimals', () => {
    const budget = Budget.from(
      { perRequest: '$1' },
      { assets: [{ network: 'eip155:8453', address: dollarToken, decimals: 18, symbol: 'USDS' }] },
    )
    const offers = [offer('30000'), offer('20000000000000000', dollarToken), offer('10001', polygonUsdc, 'eip155:137'), offer('40000')]
    const selection = select(offers, { schemes: [exact], budget })
    expect(selection).toMatchObject({ ok: true, choice: { index: 2 }, rejected: [] })
  })

  it('prefers offers valued in dollars, then the cheapest in each other asset, assets in server order', () => {
    const budget = Budget.from({ perRequest: '$1', perRequestAtomic: { [tokenA]: '100', [tokenB]: '100' } })
    const offers = [offer('9', tokenB), offer('5', tokenA), offer('7', tokenB), offer('1', tokenA), offer('999999')]
    expect(select(offers, { schemes: [exact], budget })).toMatchObject({ ok: true, choice: { index: 4 } })
    expect(select(offers.slice(0, 4), { schemes: [exact], budget })).toMatchObject({ ok: true, choice: { index: 2 } })
  })

  it('keeps the server order between offers of equal price', () => {
    const budget = Budget.from({ perRequest: '$1' })
    const selection = select([offer('10', polygonUsdc, 'eip155:137'), offer('10')], { schemes: [exact], budget })
    expect(selection).toMatchObject({ ok: true, choice: { index: 0 } })
  })

  it('ignores offers no scheme can pay, even cheaper ones', () => {
    const budget = Budget.from({ perRequest: '$1' })
    const offers = [
      offer('1', baseUsdc, 'eip155:8453', 'upto'),
      offer('1', 'So1ana', 'solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp'),
      offer('50'),
    ]
    const selection = select(offers, { schemes: [exact], budget })
    expect(selection).toMatchObject({ ok: true, choice: { index: 2 } })
    expect(selection.rejected.map((r) => r.reason)).toEqual(['unsupported', 'unsupported'])
  })

  it('treats a scheme whose canPay throws as unable to pay', () => {
    const throwing: SchemeClient = { ...exact, canPay: () => JSON.parse('{') }
    const selection = select([offer('1')], { schemes: [throwing], budget: Budget.from({ perRequest: '$1' }) })
    expect(selection).toMatchObject({ ok: false, reason: 'no_payable_offer' })
  })

  it('says why nothing was chosen, over budget first', () => {
    const budget = Budget.from({ perRequest: '$0.01' })
    const context = { schemes: [exact], budget }
    expect(select([offer('1', baseUsdc, 'eip155:1', 'upto'), offer('10001'), offer('1', tokenA)], context)).toMatchObject({
      ok: false,
      reason: 'over_budget',
      rejected: [{ reason: 'unsupported' }, { reason: 'over_budget' }, { reason: 'asset_not_in_budget' }],
    })
    expect(select([offer('1', tokenA)], context)).toMatchObject({ ok: false, reason: 'asset_not_in_budget' })
    expect(select([offer('1', baseUsdc, 'eip155:1', 'upto')], context)).toMatchObject({ ok: false, reason: 'no_payable_offer' })
    expect(select([], context)).toMatchObject({ ok: false, reason: 'no_payable_offer', rejected: [] })
  })
})
