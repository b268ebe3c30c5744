/**
 * `txproof` bad input on a devnet with real USDC: each way a transaction can fail to pay the offer
 * is refused with its own reason by verify and by settle, and records nothing (a later, good proof
 * of the same transaction still pays).
 */
import { type Devnet, type DevnetAccount, startDevnet } from '@x402kit/devnet'
import { type Address, createTestClient, encodePacked, erc20Abi, type Hash, http, keccak256, parseEventLogs, toHex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Payment } from '../../core/Facilitator.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import { createFacilitator, type Facilitator } from '../../facilitator/createFacilitator.ts'
import { txproofEvmFacilitator } from './facilitator.ts'
import * as Proof from './Proof.ts'
import { nativeCoin, txproofServer } from './server.ts'

const amount = 1_000n // 0.001 USDC
const resource = 'http://localhost/report'
const freshAddress = () => privateKeyToAccount(generatePrivateKey()).address

/** A contract that, on any call, logs `Transfer(caller, word 0 of the arguments, word 1)` as an ERC-20 would. */
const impostorToken = encodePacked(
  ['bytes', 'bytes32', 'bytes'],
  ['0x602435600052600435337f', keccak256(toHex('Transfer(address,address,uint256)')), '0x60206000a300'],
)

describe('txproofEvmFacilitator refuses, on a devnet (automine)', () => {
  let devnet: Devnet
  let facilitator: Facilitator
  let payer: DevnetAccount
  let someoneElse: DevnetAccount

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 3 })
    ;[payer, someoneElse] = devnet.accounts as [DevnetAccount, DevnetAccount]
    facilitator = createFacilitator({ schemes: [txproofEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl } } })] })
  })
  afterAll(async () => {
    await devnet?.stop()
  })

  const offerTo = (payTo: Address, input: { confirmations?: number; native?: boolean; maxTimeoutSeconds?: number } = {}) =>
    txproofServer().requirements({
      price: { atomic: amount },
      network: devnet.network,
      payTo,
      asset: input.native
        ? nativeCoin
        : { address: devnet.usdc, name: 'USD Coin', version: '2', decimals: 6, symbol: 'USDC', transfer: 'eip3009' },
      ...(input.confirmations && { extra: { confirmations: input.confirmations } }),
      ...(input.maxTimeoutSeconds && { maxTimeoutSeconds: input.maxTimeoutSeconds }),
    })

  async function transfer(from: DevnetAccount, to: Address, value: bigint, options: { token?: Address; gas?: bigint } = {}): Promise<Hash> {
    const hash = await devnet.walletClient(from.privateKey).writeContract({
      address: options.token ?? devnet.usdc,
      abi: erc20Abi,
      functionName: 'transfer',
      args: [to, value],
      ...(options.gas && { gas: options.gas }),
    })
    await devnet.publicClient.waitForTransactionReceipt({ hash })
    return hash
  }

  async function sendEth(from: DevnetAccount, to: Address, value: bigint): Promise<Hash> {
    const hash = await devnet.walletClient(from.privateKey).sendTransaction({ to, value })
    await devnet.publicClient.waitForTransactionReceipt({ hash })
    return hash
  }

  /** A proof of `transaction` signed by `signer`, over the offer and resource unless `signed` says otherwise. */
  async function prove(
    signer: DevnetAccount,
    transaction: Hash,
    offer: PaymentRequirements,
    signed: { resource?: string; amount?: bigint } = {},
  ): Promise<Payment> {
    const message = {
      transaction,
      asset: offer.asset,
      payTo: offer.payTo,
      amount: signed.amount ?? offer.amount,
      resource: signed.resource ?? resource,
    }
    const signature = await privateKeyToAccount(signer.privateKey).signTypedData(Proof.typedData(devnet.chainId, message))
    return {
      payload: { x402Version: 2, resource: { url: resource }, accepted: offer, payload: { transaction, signature } },
      requirements: offer,
    }
  }

  /** Verify and settle both refuse with `reason`; the payTo balance does not move. */
  async function expectRefused(payment: Payment, reason: string) {
    const payTo = payment.requirements.payTo as Address
    const before = await devnet.usdcBalance(payTo)
    expect(await facilitator.verify(payment)).toMatchObject({ isValid: false, invalidReason: reason })
    expect(await facilitator.settle(payment)).toMatchObject({
      success: false,
      errorReason: reason,
      transaction: '',
      network: devnet.network,
    })
    expect(await devnet.usdcBalance(payTo)).toBe(before)
  }

  async function expectAccepted(payment: Payment) {
    expect(await facilitator.verify(payment)).toEqual({ isValid: true, payer: payer.address })
    expect(await facilitator.settle(payment)).toMatchObject({ success: true, transaction: payment.payload.payload.transaction })
  }

  it("someone else's transfer: a proof signed by another account than the sender, which spends nothing", async () => {
    const offer = offerTo(freshAddress())
    const hash = await transfer(payer, offer.payTo as Address, amount)
    await expectRefused(await prove(someoneElse, hash, offer), 'invalid_txproof_evm_signature')
    await expectAccepted(await prove(payer, hash, offer))
  })

  it('a proof signed over another resource or another amount', async () => {
    const offer = offerTo(freshAddress())
    const hash = await transfer(payer, offer.payTo as Address, amount)
    await expectRefused(await prove(payer, hash, offer, { resource: 'http://localhost/other' }), 'invalid_txproof_evm_signature')
    await expectRefused(await prove(payer, hash, offer, { amount: amount - 1n }), 'invalid_txproof_evm_signature')
    await expectAccepted(await prove(payer, hash, offer))
  })

  it('a transaction the chain does not have', async () => {
    await expectRefused(
      await prove(payer, keccak256(toHex('no such transaction')), offerTo(freshAddress())),
      'invalid_txproof_evm_transaction_not_found',
    )
  })

  it('an unconfirmed transaction, until it has the confirmations the offer asks for', async () => {
    const offer = offerTo(freshAddress(), { confirmations: 3 })
    const payment = await prove(payer, await transfer(payer, offer.payTo as Address, amount), offer)
    await expectRefused(payment, 'invalid_txproof_evm_insufficient_confirmations')
    await devnet.mine(1)
    await expectRefused(payment, 'invalid_txproof_evm_insufficient_confirmations')
    await devnet.mine(1)
    await expectAccepted(payment)
  })

  it("an unconfirmed transaction, until it has the facilitator's own minimum, whatever the offer says", async () => {
    const strict = createFacilitator({
      schemes: [txproofEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, confirmations: 2 } } })],
    })
    const offer = offerTo(freshAddress())
    const payment = await prove(payer, await transfer(payer, offer.payTo as Address, amount), offer)
    expect(await strict.verify(payment)).toMatchObject({ isValid: false, invalidReason: 'invalid_txproof_evm_insufficient_confirmations' })
    await devnet.mine(1)
    expect(await strict.verify(payment)).toEqual({ isValid: true, payer: payer.address })
  })

  it('a reverted transaction', async () => {
    const offer = offerTo(freshAddress())
    // More than the balance, with a fixed gas limit so that it is mined (reverted) rather than refused by estimation.
    const hash = await transfer(payer, offer.payTo as Address, (await devnet.usdcBalance(payer.address)) + 1n, { gas: 100_000n })
    expect((await devnet.publicClient.getTransactionReceipt({ hash })).status).toBe('reverted')
    await expectRefused(await prove(payer, hash, offer), 'invalid_txproof_evm_transaction_reverted')
  })

  it('a transfer of another token, or of ETH, for a USDC offer', async () => {
    const offer = offerTo(freshAddress())
    const impostor = freshAddress()
    await devnet.setCode(impostor, impostorToken)
    const hash = await transfer(payer, offer.payTo as Address, amount, { token: impostor, gas: 100_000n })
    // The impostor logs exactly the Transfer the offer asks for, from the wrong contract.
    const { logs } = await devnet.publicClient.getTransactionReceipt({ hash })
    expect(parseEventLogs({ abi: erc20Abi, logs, eventName: 'Transfer' })).toMatchObject([
      { address: impostor.toLowerCase(), args: { from: payer.address, to: offer.payTo, value: amount } },
    ])
    await expectRefused(await prove(payer, hash, offer), 'invalid_txproof_evm_transfer_mismatch')
    await expectRefused(
      await prove(payer, await sendEth(payer, offer.payTo as Address, amount), offer),
      'invalid_txproof_evm_transfer_mismatch',
    )
  })

  it('a transfer to another address', async () => {
    const offer = offerTo(freshAddress())
    await expectRefused(await prove(payer, await transfer(payer, freshAddress(), amount), offer), 'invalid_txproof_evm_transfer_mismatch')
  })

  it('a transfer one unit short; one unit more pays', async () => {
    const offer = offerTo(freshAddress())
    const short = await transfer(payer, offer.payTo as Address, amount - 1n)
    await expectRefused(await prove(payer, short, offer), 'invalid_txproof_evm_transfer_mismatch')
    await expectAccepted(await prove(payer, await transfer(payer, offer.payTo as Address, amount + 1n), offer))
  })

  it('for a native-coin offer: ETH one unit short, ETH to another address, or USDC', async () => {
    const offer = offerTo(freshAddress(), { native: true })
    const payTo = offer.payTo as Address
    await expectRefused(await prove(payer, await sendEth(payer, payTo, amount - 1n), offer), 'invalid_txproof_evm_transfer_mismatch')
    await expectRefused(await prove(payer, await sendEth(payer, freshAddress(), amount), offer), 'invalid_txproof_evm_transfer_mismatch')
    await expectRefused(await prove(payer, await transfer(payer, payTo, amount), offer), 'invalid_txproof_evm_transfer_mismatch')
    await expectAccepted(await prove(payer, await sendEth(payer, payTo, amount), offer))
  })

  // Last: it moves the chain's clock ahead of this one for good.
  it("a transaction mined before the offer's window, or stamped after this facilitator's clock", async () => {
    const offer = offerTo(freshAddress(), { maxTimeoutSeconds: 120 })
    const old = await prove(payer, await transfer(payer, offer.payTo as Address, amount), offer)
    // The scheme alone (no store) shows the proof good before the clock moves.
    const scheme = txproofEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl } } })
    expect(await scheme.verify(old)).toEqual({ isValid: true, payer: payer.address })
    const anvil = createTestClient({ chain: devnet.chain, transport: http(devnet.rpcUrl), mode: 'anvil' })
    await anvil.increaseTime({ seconds: 180 })
    await devnet.mine(1)
    await expectRefused(old, 'invalid_txproof_evm_outside_time_window')
    const ahead = await prove(payer, await transfer(payer, offer.payTo as Address, amount), offer)
    await expectRefused(ahead, 'invalid_txproof_evm_outside_time_window')
  })
})
