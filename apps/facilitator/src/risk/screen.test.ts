import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { Reason } from 'x402kit'
import { parseConfig } from '../config.ts'
import { payerWindows } from './limits.ts'
import { createRiskScreen, type RiskInput } from './screen.ts'

const payer = '0x857b06519E91e3A54538791bDbb0E22373e36b66'
const payTo = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
const usdc = '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913'
const other = '0x036CbD53842c5426634e7929541eC2318f3dCF7e'
const payment = (overrides: Partial<RiskInput> = {}): RiskInput => ({
  payer,
  payTo,
  asset: usdc,
  network: 'eip155:8453',
  amount: 1_000n,
  ...overrides,
})

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'x402-risk-'))
})
afterAll(() => rm(dir, { recursive: true, force: true }))

function clock(start = 1_700_000_000_000) {
  let time = start
  return { now: () => time, advance: (ms: number) => (time += ms) }
}

describe('createRiskScreen', () => {
  it('lets a payment through when nothing is configured', async () => {
    const risk = createRiskScreen()
    expect(await risk.screen(payment())).toBeUndefined()
    risk.close()
  })

  it('refuses a deny-listed payer and payTo from a file, in any letter case', async () => {
    const file = join(dir, 'deny.txt')
    await writeFile(file, `# sanctioned\n${payer.toUpperCase().replace('0X', '0x')}  # exploit\n\n${payTo.toLowerCase()}\n`)
    const risk = createRiskScreen({ denyListFile: file })
    expect(await risk.screen(payment())).toEqual({ reason: Reason.payerDenied, message: 'The payer is on the deny list.' })
    expect(await risk.screen(payment({ payer: other }))).toEqual({
      reason: Reason.payToDenied,
      message: 'The recipient (payTo) is on the deny list.',
    })
    risk.close()
    const payerOnly = createRiskScreen({ denyListFile: file, denyPayTo: false })
    expect(await payerOnly.screen(payment({ payer: other }))).toBeUndefined()
    payerOnly.close()
  })

  it('takes up an edited file without a restart, and keeps the last good list when the file breaks', async () => {
    const file = join(dir, 'reload.json')
    await writeFile(file, JSON.stringify([payer]))
    const onError = vi.fn()
    const risk = createRiskScreen({ denyListFile: file, denyListPollMs: 20, onError })
    expect((await risk.screen(payment()))?.reason).toBe(Reason.payerDenied)

    await writeFile(file, '[]')
    await vi.waitFor(async () => expect(await risk.screen(payment())).toBeUndefined(), { timeout: 5_000, interval: 20 })

    // Saved by rename, as editors do.
    await writeFile(`${file}.tmp`, `${payer}\n`)
    await rename(`${file}.tmp`, file)
    await vi.waitFor(async () => expect((await risk.screen(payment()))?.reason).toBe(Reason.payerDenied), { timeout: 5_000, interval: 20 })

    await writeFile(file, `${payer}\nnot-an-address\n`)
    await vi.waitFor(() => expect(onError).toHaveBeenCalledTimes(1), { timeout: 5_000, interval: 20 })
    expect(onError.mock.calls[0]![0]).toMatchObject({ code: 'invalid_deny_list' })
    expect((await risk.screen(payment()))?.reason).toBe(Reason.payerDenied)

    await rm(file)
    await vi.waitFor(() => expect(onError).toHaveBeenCalledTimes(2), { timeout: 5_000, interval: 20 })
    expect(onError.mock.calls[1]![0]).toMatchObject({ code: 'invalid_deny_list', details: 'ENOENT' })
    expect((await risk.screen(payment()))?.reason).toBe(Reason.payerDenied)

    // Empty, as while an editor rewrites it: not taken for a cleared list.
    await writeFile(file, '')
    await vi.waitFor(() => expect(onError).toHaveBeenCalledTimes(3), { timeout: 5_000, interval: 20 })
    expect(onError.mock.calls[2]![0]).toMatchObject({ code: 'invalid_deny_list', details: expect.stringContaining('empty') })
    expect((await risk.screen(payment()))?.reason).toBe(Reason.payerDenied)

    await writeFile(file, '# nobody\n')
    await vi.waitFor(async () => expect(await risk.screen(payment())).toBeUndefined(), { timeout: 5_000, interval: 20 })
    expect(onError).toHaveBeenCalledTimes(3)
    risk.close()
  })

  it('will not start on a deny-list file it cannot use', async () => {
    const file = join(dir, 'broken.txt')
    await writeFile(file, '0x1234\n')
    expect(() => createRiskScreen({ denyListFile: file })).toThrow(expect.objectContaining({ code: 'invalid_deny_list' }))
    expect(() => createRiskScreen({ denyListFile: join(dir, 'missing.txt') })).toThrow(
      expect.objectContaining({ code: 'invalid_deny_list' }),
    )
  })

  it('refuses a single payment above the largest for its asset, and takes one at it', async () => {
    const risk = createRiskScreen({ maxPaymentAmount: { [usdc.toLowerCase()]: 5_000_000n } })
    expect(await risk.screen(payment({ amount: 5_000_000n }))).toBeUndefined()
    expect(await risk.screen(payment({ amount: 5_000_001n }))).toEqual({
      reason: Reason.paymentAmountTooLarge,
      message: 'The amount 5000001 is above the largest single payment of 5000000 this facilitator takes in this asset.',
    })
    expect(await risk.screen(payment({ asset: other, amount: 10n ** 30n }))).toBeUndefined()
  })

  it('limits the payments per payer in a window: at the limit passes, one more does not, the window passing restores', async () => {
    const time = clock()
    const risk = createRiskScreen({ perPayer: { windowSeconds: 60, maxPayments: 3 }, now: time.now })
    for (let i = 0; i < 3; i++) {
      expect(await risk.screen(payment())).toBeUndefined()
      risk.record(payment())
      time.advance(10_000)
    }
    expect(await risk.screen(payment({ payer: payer.toLowerCase() }))).toEqual({
      reason: Reason.payerRateLimited,
      message: 'The payer has made 3 payments in the last 60 s, the most allowed.',
    })
    expect(await risk.screen(payment({ payer: other }))).toBeUndefined()
    // The first payment was at t; at t + 60 s it has left the window.
    time.advance(29_999)
    expect((await risk.screen(payment()))?.reason).toBe(Reason.payerRateLimited)
    time.advance(1)
    expect(await risk.screen(payment())).toBeUndefined()
  })

  it('limits the amount per payer and asset in a window, exactly', async () => {
    const time = clock()
    const max = 2n ** 200n
    const risk = createRiskScreen({ perPayer: { windowSeconds: 3600, maxAmount: { [usdc]: max } }, now: time.now })
    risk.record(payment({ amount: max - 10n }))
    risk.record(payment({ asset: other, amount: 10n ** 40n }))
    time.advance(1_000)
    expect(await risk.screen(payment({ amount: 10n }))).toBeUndefined()
    expect(await risk.screen(payment({ amount: 11n, asset: usdc.toLowerCase() }))).toEqual({
      reason: Reason.payerAmountLimited,
      message: 'This payment would take the payer past the most allowed in this asset in 3600 s.',
    })
    risk.record(payment({ amount: 10n }))
    expect((await risk.screen(payment({ amount: 1n })))?.reason).toBe(Reason.payerAmountLimited)
    time.advance(3_598_999)
    expect((await risk.screen(payment({ amount: 1n })))?.reason).toBe(Reason.payerAmountLimited)
    time.advance(1)
    // The first payment has left the window; the second (10) is still in it.
    expect(await risk.screen(payment({ amount: max - 10n }))).toBeUndefined()
    expect((await risk.screen(payment({ amount: max - 9n })))?.reason).toBe(Reason.payerAmountLimited)
    time.advance(1_000)
    expect(await risk.screen(payment({ amount: max }))).toBeUndefined()
  })
})

describe('createRiskScreen from the configuration', () => {
  it('takes the checked risk configuration as it is', async () => {
    const { risk: config } = parseConfig({
      risk: { maxPaymentAmount: { [usdc]: '100' }, perPayer: { windowSeconds: 60, maxAmount: { [usdc]: '150' } } },
    })
    const risk = createRiskScreen({ ...config, onError: () => {} })
    expect((await risk.screen(payment({ amount: 101n })))?.reason).toBe(Reason.paymentAmountTooLarge)
    risk.record(payment({ amount: 100n }))
    expect((await risk.screen(payment({ amount: 51n })))?.reason).toBe(Reason.payerAmountLimited)
    risk.close()
  })
})

describe('payerWindows', () => {
  it('keeps at most maxPayers windows, dropping the least recently active', () => {
    const time = clock()
    const windows = payerWindows({ windowSeconds: 60, maxPayments: 1 }, { maxPayers: 3, now: time.now })
    const address = (n: number) => `0x${n.toString(16).padStart(40, '0')}`
    for (let n = 1; n <= 3; n++) windows.record(address(n), usdc, 1n)
    windows.record(address(1), usdc, 1n)
    for (let n = 4; n <= 1_000; n++) windows.record(address(n), usdc, 1n)
    expect(windows.size).toBe(3)
    expect(windows.check(address(1_000), usdc, 1n)).toBe('payments')
    expect(windows.check(address(1), usdc, 1n)).toBeUndefined()
  })

  it('forgets a payer whose window has emptied', () => {
    const time = clock()
    const windows = payerWindows({ windowSeconds: 1, maxPayments: 1 }, { now: time.now })
    windows.record(payer, usdc, 1n)
    time.advance(1_000)
    expect(windows.check(payer, usdc, 1n)).toBeUndefined()
    expect(windows.size).toBe(0)
  })
})
