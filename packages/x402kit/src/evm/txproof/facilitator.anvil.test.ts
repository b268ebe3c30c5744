/**
 * `txproof` through the facilitator orchestration on a devnet with real USDC: the client sends the
 * transfer and proves it, the facilitator verifies and settles it, and the transaction pays once.
 */
import { type Devnet, type DevnetAccount, startDevnet, usdcAsset } from '@x402kit/devnet'
import type { Address, Hash } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Payment } from '../../core/Facilitator.ts'
import * as Network from '../../core/Network.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import { createFacilitator, type Facilitator } from '../../facilitator/createFacilitator.ts'
import { signTransactionProof, txproofClient } from './client.ts'
import { txproofEvmFacilitator } from './facilitator.ts'
import { nativeCoin, txproofServer } from './server.ts'

const amount = 1_000n // 0.001 USDC
const resource = 'http://localhost/report'
const freshAddress = () => privateKeyToAccount(generatePrivateKey()).address

describe('txproofEvmFacilitator through createFacilitator on a devnet (automine)', () => {
  let devnet: Devnet
  let facilitator: Facilitator
  let payer: DevnetAccount

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 3 })
    Network.registerAsset(devnet.network, devnet.chainId, usdcAsset(devnet))
    payer = devnet.accounts[0]!
    facilitator = createFacilitator({ schemes: [txproofEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl } } })] })
  })
  afterAll(async () => {
    await devnet?.stop()
  })

  const offerTo = (payTo: Address, input: { extra?: Record<string, unknown>; native?: boolean } = {}) =>
    txproofServer().requirements({
      price: { atomic: amount },
      network: devnet.network,
      payTo,
      ...(input.native && { asset: nativeCoin }),
      ...(input.extra && { extra: input.extra }),
    })
  const client = (account = payer) => txproofClient({ wallet: devnet.walletClient(account.privateKey) })
  const paymentOf = (offer: PaymentRequirements, payload: Record<string, unknown>, url = resource): Payment => ({
    payload: { x402Version: 2, resource: { url }, accepted: offer, payload },
    requirements: offer,
  })

  it('pays a USDC offer: the client sends the transfer and proves it, the facilitator verifies then settles', async () => {
    const payTo = freshAddress()
    const offer = offerTo(payTo)
    const before = await devnet.usdcBalance(payer.address)
    expect(client().canPay(offer)).toBe(true)
    const payload = await client().createPayload(offer, { resource })
    expect(payload).toEqual({
      transaction: expect.stringMatching(/^0x[0-9a-f]{64}$/),
      signature: expect.stringMatching(/^0x[0-9a-f]{130}$/),
    })
    expect(await devnet.usdcBalance(payTo)).toBe(amount)
    expect(await devnet.usdcBalance(payer.address)).toBe(before - amount)

    const payment = paymentOf(offer, payload)
    expect(await facilitator.verify(payment)).toEqual({ isValid: true, payer: payer.address })
    expect(await facilitator.settle(payment)).toEqual({
      success: true,
      transaction: payload.transaction,
      network: devnet.network,
      payer: payer.address,
      amount: String(amount),
    })
    // Settling sent nothing: the only money that moved is the payer's own transfer.
    expect(await devnet.usdcBalance(payTo)).toBe(amount)
  })

  it('takes a transaction once: used again, re-signed for another resource or offered again, it is refused', async () => {
    const payTo = freshAddress()
    const offer = offerTo(payTo)
    const payload = await client().createPayload(offer, { resource })
    const payment = paymentOf(offer, payload)
    expect((await facilitator.verify(payment)).isValid).toBe(true)
    expect((await facilitator.settle(payment)).success).toBe(true)

    const alreadyUsed = { isValid: false, invalidReason: 'invalid_txproof_evm_transaction_already_used', payer: payer.address }
    expect(await facilitator.verify(payment)).toMatchObject(alreadyUsed)
    const wallet = devnet.walletClient(payer.privateKey)
    const elsewhere = 'http://localhost/another-report'
    const again = paymentOf(
      offer,
      await signTransactionProof(wallet, { transaction: payload.transaction as Hash, offer, resource: elsewhere }),
      elsewhere,
    )
    expect(await facilitator.verify(again)).toMatchObject(alreadyUsed)
    // Settling it against a cheaper offer to the same payTo does not hand out the stored result.
    const cheaper = { ...offer, amount: '1' }
    const proof = await signTransactionProof(wallet, { transaction: payload.transaction as Hash, offer: cheaper, resource })
    expect(await facilitator.settle(paymentOf(cheaper, proof))).toMatchObject({
      success: false,
      errorReason: 'invalid_txproof_evm_transaction_already_used',
      transaction: '',
    })
  })

  it('accepts exactly one of ten concurrent verifications of one proof', async () => {
    const offer = offerTo(freshAddress())
    const payment = paymentOf(offer, await client().createPayload(offer, { resource }))
    const verdicts = await Promise.all(Array.from({ length: 10 }, () => facilitator.verify(payment)))
    expect(verdicts.filter((verdict) => verdict.isValid)).toHaveLength(1)
    expect(new Set(verdicts.filter((verdict) => !verdict.isValid).map((verdict) => verdict.invalidReason))).toEqual(
      new Set(['invalid_txproof_evm_transaction_already_used']),
    )
  })

  it('waits for the confirmations the offer asks for before it proves the transaction', async () => {
    const offer = offerTo(freshAddress(), { extra: { confirmations: 3 } })
    let done = false
    const proving = client()
      .createPayload(offer, { resource })
      .finally(() => {
        done = true
      })
    let mined = 0
    while (!done && mined < 20) {
      await new Promise((resolve) => setTimeout(resolve, 150))
      if (!done) {
        await devnet.mine(1)
        mined++
      }
    }
    const payload = await proving
    const receipt = await devnet.publicClient.getTransactionReceipt({ hash: payload.transaction as Hash })
    expect((await devnet.publicClient.getBlockNumber()) - receipt.blockNumber + 1n).toBeGreaterThanOrEqual(3n)
    expect(await facilitator.verify(paymentOf(offer, payload))).toEqual({ isValid: true, payer: payer.address })
  })

  it('pays a native-coin offer with ETH; payTo receives exactly the amount', async () => {
    const payTo = freshAddress()
    const offer = offerTo(payTo, { native: true })
    expect(offer.asset).toBe('0xEeeeeEeeeEeEeeEeEeEeeEEEeeeeEeeeeeeeEEeE')
    const payload = await client().createPayload(offer, { resource })
    expect(await devnet.publicClient.getBalance({ address: payTo })).toBe(amount)
    const payment = paymentOf(offer, payload)
    expect(await facilitator.verify(payment)).toEqual({ isValid: true, payer: payer.address })
    expect(await facilitator.settle(payment)).toMatchObject({ success: true, transaction: payload.transaction, payer: payer.address })
  })

  it('pays only offers on the wallet chain, in the txproof domain', () => {
    const offer = offerTo(freshAddress())
    expect(client().canPay({ ...offer, network: 'eip155:8453' })).toBe(false)
    expect(client().canPay({ ...offer, scheme: 'exact' })).toBe(false)
    expect(client().canPay({ ...offer, extra: { ...offer.extra, version: '2' } })).toBe(false)
    expect(client().canPay({ ...offer, extra: { ...offer.extra, confirmations: 0 } })).toBe(false)
  })
})
