import { type Devnet, startDevnet, usdcAsset } from '@x402kit/devnet'
import { type Address, bytesToHex, createTestClient, type Hex, hexToBytes, http, parseAbi, serializeErc6492Signature, toHex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Payment } from '../../core/Facilitator.ts'
import * as Network from '../../core/Network.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import type { SchemeFacilitator } from '../../core/Scheme.ts'
import * as NonceManager from '../NonceManager.ts'
import { authorizationFor, domainOf, exactEvmClient } from './client.ts'
import * as Eip3009 from './Eip3009.ts'
import { exactEvmFacilitator } from './facilitator.ts'
import { readPayment } from './reads.ts'
import { exactEvmServer } from './server.ts'
import { createContext } from './state.ts'
import { transferArgs } from './verify.ts'

const amount = 1_000n // 0.001 USDC

/** A contract wallet whose `isValidSignature` returns `selector` for anything: PUSH4 s, PUSH1 224, SHL, MSTORE at 0, RETURN 32 bytes. */
const wallet = (selector: string): Hex => `0x63${selector}60e01b60005260206000f3`

function registerUsdc(devnet: Devnet) {
  Network.registerAsset(devnet.network, devnet.chainId, usdcAsset(devnet))
}

function offerOn(devnet: Devnet, payTo: Address, extra?: { name?: string; version?: string }): PaymentRequirements {
  const offer = exactEvmServer().requirements({ price: { atomic: amount }, network: devnet.network, payTo })
  return extra ? { ...offer, extra: { ...offer.extra, ...extra } } : offer
}

async function pay(key: Hex, offer: PaymentRequirements): Promise<Payment> {
  const payload = await exactEvmClient(privateKeyToAccount(key)).createPayload(offer, { resource: 'http://localhost/paid' })
  return { payload: { x402Version: 2, accepted: offer, payload }, requirements: offer }
}

/** A payment signed by `signer` over an authorization with some terms changed (its signature is valid for them). */
async function payWith(
  key: Hex,
  offer: PaymentRequirements,
  terms: Partial<Eip3009.Authorization> = {},
  signer: Hex = key,
): Promise<Payment> {
  const authorization = { ...authorizationFor(privateKeyToAccount(key).address, offer), ...terms }
  const signature = await privateKeyToAccount(signer).signTypedData(Eip3009.typedData(domainOf(offer), authorization))
  return { payload: { x402Version: 2, accepted: offer, payload: { signature, authorization } }, requirements: offer }
}

function withSignature(payment: Payment, signature: Hex): Payment {
  return { ...payment, payload: { ...payment.payload, payload: { ...payment.payload.payload, signature } } }
}

const authorizationOf = (payment: Payment) => payment.payload.payload.authorization as Eip3009.Authorization
const freshAddress = () => privateKeyToAccount(generatePrivateKey()).address

/** The n − s, flipped-v twin of a signature: same signer by plain ecrecover, refused by EIP-2. */
function malleate(signature: Hex): Hex {
  const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
  const bytes = hexToBytes(signature)
  bytes.set(hexToBytes(toHex(n - BigInt(bytesToHex(bytes.slice(32, 64))), { size: 32 })), 32)
  bytes[64] = bytes[64] === 27 ? 28 : 27
  return bytesToHex(bytes)
}

describe('exactEvmFacilitator on a devnet (automine)', () => {
  let devnet: Devnet
  let facilitator: SchemeFacilitator
  let signer: Address
  let payerKey: Hex

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 10 })
    registerUsdc(devnet)
    signer = devnet.accounts[0]!.address
    payerKey = devnet.accounts[2]!.privateKey
    facilitator = exactEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [devnet.accounts[0]!.privateKey] } },
      receiptTimeoutMs: 20_000,
    })
  })
  afterAll(async () => {
    await devnet?.stop()
  })

  /** USDC of everyone the payment could move money between, and the settlement signer's nonce. */
  async function snapshot(payment: Payment) {
    const { from, to } = authorizationOf(payment)
    const parties = [from, to, payment.requirements.payTo] as Address[]
    return {
      usdc: await Promise.all(parties.map((party) => devnet.usdcBalance(party))),
      signerNonce: await devnet.publicClient.getTransactionCount({ address: signer, blockTag: 'pending' }),
    }
  }

  /** Verify and settle both refuse with `reason`, nothing is sent and no balance moves. */
  async function expectRefused(payment: Payment, reason: string, payer: string | undefined = authorizationOf(payment).from) {
    const before = await snapshot(payment)
    const verified = await facilitator.verify(payment)
    expect(verified).toMatchObject({ isValid: false, invalidReason: reason })
    if (payer) expect(verified.payer).toBe(payer)
    const settled = await facilitator.settle(payment)
    expect(settled).toMatchObject({ success: false, errorReason: reason, transaction: '', network: payment.requirements.network })
    expect(await snapshot(payment)).toEqual(before)
  }

  it('verifies and settles a payment signed by exactEvmClient; USDC moves by exactly the amount', async () => {
    const payTo = freshAddress()
    const payment = await pay(payerKey, offerOn(devnet, payTo))
    const from = authorizationOf(payment).from as Address
    const payerBefore = await devnet.usdcBalance(from)

    expect(await facilitator.verify(payment)).toEqual({ isValid: true, payer: from })
    const settled = await facilitator.settle(payment)
    expect(settled).toMatchObject({ success: true, network: devnet.network, payer: from, amount: String(amount) })
    expect(settled.transaction).toMatch(/^0x[0-9a-f]{64}$/)

    expect(await devnet.usdcBalance(payTo)).toBe(amount)
    expect(await devnet.usdcBalance(from)).toBe(payerBefore - amount)
    const receipt = await devnet.publicClient.getTransactionReceipt({ hash: settled.transaction as Hex })
    expect(receipt.status).toBe('success')
    expect(receipt.from.toLowerCase()).toBe(signer.toLowerCase())
    expect(receipt.gasUsed).toBeLessThan(120_000n)
  })

  it('verifies concurrent payments in one read: a payer is never found to have more than the balance', async () => {
    const payer = generatePrivateKey()
    await devnet.mintUsdc(privateKeyToAccount(payer).address, 3n * amount)
    // Warm: the token's domain is read once and kept, so the payments below reach the chain together.
    expect(await facilitator.verify(await pay(payerKey, offerOn(devnet, freshAddress())))).toMatchObject({ isValid: true })
    const payments = await Promise.all(Array.from({ length: 6 }, () => pay(payer, offerOn(devnet, freshAddress()))))
    const verdicts = await Promise.all(payments.map((payment) => facilitator.verify(payment)))
    // Each one alone would pass (the balance covers any single payment); together, three of six can be paid.
    expect(verdicts.filter((verdict) => verdict.isValid)).toHaveLength(3)
    expect(verdicts.filter((verdict) => verdict.invalidReason === 'invalid_exact_evm_insufficient_balance')).toHaveLength(3)
    for (const payment of payments.slice(3)) expect(await facilitator.verify(payment)).toMatchObject({ isValid: true })
    // One payment verified three times at once is read once, and valid each time (the store decides who keeps it).
    const twice = payments[0]!
    expect(await Promise.all([twice, twice, twice].map((payment) => facilitator.verify(payment)))).toEqual(
      Array.from({ length: 3 }, () => ({ isValid: true, payer: privateKeyToAccount(payer).address })),
    )
    expect(await devnet.usdcBalance(privateKeyToAccount(payer).address)).toBe(3n * amount)
  })

  it('reads one authorization asked with and without a simulated transfer at once in separate calls', async () => {
    const state = createContext({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [] } } }).networks.get(devnet.network)!
    const payment = await pay(payerKey, offerOn(devnet, freshAddress()))
    const { authorization, signature } = payment.payload.payload as Eip3009.Payload
    const eoa = {
      kind: 'eoa',
      r: `0x${signature.slice(2, 66)}`,
      s: `0x${signature.slice(66, 130)}`,
      v: Number.parseInt(signature.slice(130), 16),
    } as const
    const request = { asset: devnet.usdc, from: authorizationOf(payment).from as Address, authorization }
    // Asked in one tick: in one call, the plain read would come after the simulated transfer and find the nonce used.
    const [simulated, plain] = await Promise.all([
      readPayment(state, { ...request, transfer: transferArgs(authorization, eoa as never) }),
      readPayment(state, { ...request, transfer: undefined }),
    ])
    expect(simulated).toMatchObject({ used: { ok: true, value: false }, simulation: { ok: true } })
    expect(plain).toMatchObject({ used: { ok: true, value: false }, simulation: undefined })
  })

  it('names the settlement key and the signers', async () => {
    const payment = await pay(payerKey, offerOn(devnet, freshAddress()))
    const { from, nonce } = authorizationOf(payment)
    expect(facilitator.settlementKey(payment)).toBe(`${devnet.network}:${devnet.usdc}:${from}:${nonce}`.toLowerCase())
    expect(facilitator.settlementKey({ ...payment, payload: { ...payment.payload, payload: {} } })).toBeUndefined()
    expect(facilitator.signers(devnet.network)).toEqual([signer])
    expect(facilitator.signers('eip155:1')).toEqual([])
    expect(facilitator.networks).toEqual([devnet.network])
  })

  describe('refuses tampered payments with the exact reason, moving nothing', () => {
    it('recipient other than payTo', async () => {
      await expectRefused(
        await payWith(payerKey, offerOn(devnet, freshAddress()), { to: freshAddress() }),
        'invalid_exact_evm_recipient_mismatch',
      )
    })

    it('value other than the amount (less, and more)', async () => {
      const offer = offerOn(devnet, freshAddress())
      await expectRefused(
        await payWith(payerKey, offer, { value: String(amount - 1n) }),
        'invalid_exact_evm_payload_authorization_value_mismatch',
      )
      await expectRefused(
        await payWith(payerKey, offer, { value: String(amount + 1n) }),
        'invalid_exact_evm_payload_authorization_value_mismatch',
      )
    })

    it('network other than the offer, or not served', async () => {
      const payment = await pay(payerKey, offerOn(devnet, freshAddress()))
      const otherNetwork = { ...payment, payload: { ...payment.payload, accepted: { ...payment.requirements, network: 'eip155:1' } } }
      await expectRefused(otherNetwork, 'invalid_exact_evm_network_mismatch')
      const unserved = { ...payment.requirements, network: 'eip155:8453' }
      await expectRefused(
        { payload: { ...payment.payload, accepted: unserved }, requirements: unserved },
        'invalid_exact_evm_network_mismatch',
      )
    })

    it('EIP-712 domain name other than the token’s', async () => {
      await expectRefused(await pay(payerKey, offerOn(devnet, freshAddress(), { name: 'USDC' })), 'invalid_exact_evm_token_name_mismatch')
    })

    it('EIP-712 domain version other than the token’s', async () => {
      await expectRefused(
        await pay(payerKey, offerOn(devnet, freshAddress(), { version: '1' })),
        'invalid_exact_evm_token_version_mismatch',
      )
    })

    it('validBefore too close (under minValidSeconds) or past', async () => {
      const offer = offerOn(devnet, freshAddress())
      const now = Math.floor(Date.now() / 1000)
      await expectRefused(
        await payWith(payerKey, offer, { validBefore: String(now + 3) }),
        'invalid_exact_evm_payload_authorization_valid_before',
      )
      await expectRefused(
        await payWith(payerKey, offer, { validBefore: String(now - 10) }),
        'invalid_exact_evm_payload_authorization_valid_before',
      )
    })

    it('validAfter in the future', async () => {
      const validAfter = String(Math.floor(Date.now() / 1000) + 120)
      await expectRefused(
        await payWith(payerKey, offerOn(devnet, freshAddress()), { validAfter }),
        'invalid_exact_evm_payload_authorization_valid_after',
      )
    })

    it('signature by another key than `from`', async () => {
      const payment = await payWith(payerKey, offerOn(devnet, freshAddress()), {}, devnet.accounts[3]!.privateKey)
      await expectRefused(payment, 'invalid_exact_evm_signature')
    })

    it('malleated high-s twin of a valid signature', async () => {
      const payment = await pay(payerKey, offerOn(devnet, freshAddress()))
      await expectRefused(withSignature(payment, malleate(payment.payload.payload.signature as Hex)), 'invalid_exact_evm_signature')
    })

    it('nonce already used (the same payment after it settled once)', async () => {
      const payment = await pay(payerKey, offerOn(devnet, freshAddress()))
      expect(await facilitator.settle(payment)).toMatchObject({ success: true })
      await expectRefused(payment, 'invalid_exact_evm_nonce_already_used')
    })

    it('payer without enough USDC', async () => {
      const broke = generatePrivateKey()
      expect(await devnet.usdcBalance(privateKeyToAccount(broke).address)).toBe(0n)
      await expectRefused(await pay(broke, offerOn(devnet, freshAddress())), 'invalid_exact_evm_insufficient_balance')
    })

    it('ERC-6492 signature of an undeployed wallet from a factory not allowed (its calldata is never sent)', async () => {
      const payment = await pay(payerKey, offerOn(devnet, freshAddress()))
      const wrapped = serializeErc6492Signature({
        address: freshAddress(),
        data: '0xdeadbeef',
        signature: payment.payload.payload.signature as Hex,
      })
      const undeployed = await payWith(generatePrivateKey(), offerOn(devnet, freshAddress()))
      await expectRefused(withSignature(undeployed, wrapped), 'eip6492_factory_not_allowed')
    })

    it('offer without an EIP-712 domain, malformed payload, unparsable signature, changed accepted offer', async () => {
      const offer = offerOn(devnet, freshAddress())
      const payment = await pay(payerKey, offer)
      const noDomain = { ...offer, extra: {} }
      await expectRefused(
        { payload: { ...payment.payload, accepted: noDomain }, requirements: noDomain },
        'invalid_exact_evm_missing_eip712_domain',
      )
      const { nonce: _, ...withoutNonce } = authorizationOf(payment)
      await expectRefused(
        { ...payment, payload: { ...payment.payload, payload: { ...payment.payload.payload, authorization: withoutNonce } } },
        'invalid_payload',
      )
      const overflow = { ...authorizationOf(payment), validBefore: String(2n ** 256n) }
      await expectRefused(
        { ...payment, payload: { ...payment.payload, payload: { ...payment.payload.payload, authorization: overflow } } },
        'invalid_payload',
      )
      await expectRefused(withSignature(payment, '0xnot-hex' as Hex), 'invalid_exact_evm_failed_to_parse_signature')
      await expectRefused(withSignature(payment, '0x123' as Hex), 'invalid_exact_evm_failed_to_parse_signature')
      const cheaper = { ...payment, payload: { ...payment.payload, accepted: { ...offer, amount: '1' } } }
      await expectRefused(cheaper, 'payment_offer_mismatch')
      await expectRefused(
        { ...payment, payload: { ...payment.payload, accepted: { ...offer, scheme: 'upto' } } },
        'invalid_exact_evm_scheme',
      )
    })
  })

  it('settles a smart-wallet (ERC-1271) payment through the bytes overload, and refuses a wallet that says no', async () => {
    const approving = freshAddress()
    await devnet.setCode(approving, wallet('1626ba7e'))
    await devnet.mintUsdc(approving, 10n * amount)
    const payTo = freshAddress()
    const offer = offerOn(devnet, payTo)
    const authorization = authorizationFor(approving, offer)
    // 70 bytes: not an ECDSA signature at all, so only the wallet can vouch for it.
    const payment: Payment = {
      payload: { x402Version: 2, accepted: offer, payload: { signature: `0x${'ab'.repeat(70)}`, authorization } },
      requirements: offer,
    }
    expect(await facilitator.verify(payment)).toEqual({ isValid: true, payer: approving })
    expect(await facilitator.settle(payment)).toMatchObject({ success: true, payer: approving })
    expect(await devnet.usdcBalance(payTo)).toBe(amount)
    expect(await devnet.usdcBalance(approving)).toBe(9n * amount)

    const refusing = freshAddress()
    await devnet.setCode(refusing, wallet('ffffffff'))
    await devnet.mintUsdc(refusing, 10n * amount)
    const refused: Payment = {
      ...payment,
      payload: { ...payment.payload, payload: { ...payment.payload.payload, authorization: authorizationFor(refusing, offer) } },
    }
    await expectRefused(refused, 'invalid_exact_evm_signature')
  })

  it('a transfer the token refuses: verify reports the failed simulation, settle the reverted transaction', async () => {
    const payTo = freshAddress()
    const admin = devnet.walletClient(devnet.deployer.privateKey)
    const blacklisted = await admin.writeContract({
      address: devnet.usdc,
      abi: parseAbi(['function blacklist(address account)']),
      functionName: 'blacklist',
      args: [payTo],
    })
    expect((await devnet.publicClient.waitForTransactionReceipt({ hash: blacklisted })).status).toBe('success')
    const payment = await pay(payerKey, offerOn(devnet, payTo))
    const before = await snapshot(payment)

    const verified = await facilitator.verify(payment)
    expect(verified).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_exact_evm_transaction_simulation_failed',
      payer: authorizationOf(payment).from,
    })
    expect(verified.invalidMessage).toBe('Blacklistable: account is blacklisted')
    // Settlement skips the simulation, so the transaction is sent, reverts, and is reported with its hash.
    const settled = await facilitator.settle(payment)
    expect(settled).toMatchObject({ success: false, errorReason: 'invalid_exact_evm_transaction_failed' })
    const receipt = await devnet.publicClient.getTransactionReceipt({ hash: settled.transaction as Hex })
    expect(receipt.status).toBe('reverted')
    expect((await snapshot(payment)).usdc).toEqual(before.usdc)
  })

  it('settles two concurrent submissions of one payment once; the other is refused', async () => {
    const payTo = freshAddress()
    const payment = await pay(payerKey, offerOn(devnet, payTo))
    const results = await Promise.all([facilitator.settle(payment), facilitator.settle(payment)])
    expect(results.filter((result) => result.success)).toHaveLength(1)
    expect(results.find((result) => !result.success)).toMatchObject({
      errorReason: 'invalid_exact_evm_nonce_already_used',
      transaction: '',
    })
    expect(await devnet.usdcBalance(payTo)).toBe(amount)
  })

  it('reports an unreachable RPC or a wrong chain as unexpected errors, without throwing', async () => {
    const payment = await pay(payerKey, offerOn(devnet, freshAddress()))
    const from = authorizationOf(payment).from
    const unreachable = exactEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: 'http://127.0.0.1:9', signers: [generatePrivateKey()] } },
      rpcTimeoutMs: 1_000,
    })
    expect(await unreachable.verify(payment)).toMatchObject({ isValid: false, invalidReason: 'unexpected_verify_error', payer: from })
    expect(await unreachable.settle(payment)).toMatchObject({
      success: false,
      errorReason: 'unexpected_settle_error',
      payer: from,
      transaction: '',
    })

    // An endpoint of another chain: nothing read from it may count, nothing may be signed for it.
    const wrongChain = exactEvmFacilitator({ networks: { 'eip155:8453': { rpcUrl: devnet.rpcUrl, signers: [generatePrivateKey()] } } })
    const verified = await wrongChain.verify(await pay(payerKey, { ...payment.requirements, network: 'eip155:8453' }))
    expect(verified).toMatchObject({ isValid: false, invalidReason: 'unexpected_verify_error' })
    expect(verified.invalidMessage).toMatch(/serves chain 31337/)
  })

  it("classifies anvil's answers to a taken nonce and to a repeated transaction", async () => {
    const account = privateKeyToAccount(devnet.accounts[3]!.privateKey)
    const nonce = await devnet.publicClient.getTransactionCount({ address: account.address })
    const sign = (to: Address, transactionNonce: number) =>
      account.signTransaction({
        chainId: devnet.chainId,
        nonce: transactionNonce,
        to,
        gas: 21_000n,
        maxFeePerGas: 10n ** 10n,
        maxPriorityFeePerGas: 1n,
      })
    const send = (raw: Hex) =>
      devnet.publicClient.sendRawTransaction({ serializedTransaction: raw }).then(() => 'sent', NonceManager.classifySendError)
    const mined = await sign(freshAddress(), nonce)
    expect(await send(mined)).toBe('sent')
    expect(await send(await sign(freshAddress(), nonce))).toBe('conflict')
    expect(await send(mined)).toMatch(/^(known|conflict)$/)
  })

  it('settles 50 concurrent payments from one signer key, each with its own nonce', async () => {
    const key = devnet.accounts[1]!.privateKey
    const one = exactEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [key] } }, receiptTimeoutMs: 30_000 })
    await settleConcurrently(
      devnet,
      one,
      devnet.accounts.slice(4, 9).map((account) => account.privateKey),
      50,
    )
  })
})

describe('exactEvmFacilitator on a devnet with 2 s blocks', () => {
  let devnet: Devnet

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 10, blockTime: 2 })
    registerUsdc(devnet)
  })
  afterAll(async () => {
    await devnet?.stop()
  })

  it('settles 50 concurrent payments from one signer key', async () => {
    const one = exactEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [devnet.accounts[0]!.privateKey] } },
      receiptTimeoutMs: 30_000,
    })
    await settleConcurrently(
      devnet,
      one,
      devnet.accounts.slice(4, 9).map((account) => account.privateKey),
      50,
    )
  })

  it('spreads settlements over a pool of signer keys by fewest in flight', async () => {
    const keys = devnet.accounts.slice(1, 4).map((account) => account.privateKey)
    const pool = exactEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: keys } }, receiptTimeoutMs: 30_000 })
    const hashes = await settleConcurrently(devnet, pool, [devnet.accounts[9]!.privateKey], 12)
    const senders = await Promise.all(hashes.map(async (hash) => (await devnet.publicClient.getTransaction({ hash })).from.toLowerCase()))
    const perSigner = keys.map((key) => senders.filter((from) => from === privateKeyToAccount(key).address.toLowerCase()).length)
    expect(perSigner).toEqual([4, 4, 4])
  })

  it('after a receipt timeout reports settlement_pending with the hash, and never sends again', async () => {
    const key = devnet.accounts[1]!.privateKey
    const impatient = exactEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [key] } },
      receiptTimeoutMs: 300,
    })
    const testClient = createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) })
    const signerAddress = privateKeyToAccount(key).address
    const payTo = freshAddress()
    const payment = await pay(devnet.accounts[9]!.privateKey, offerOn(devnet, payTo))
    const sentBefore = await devnet.publicClient.getTransactionCount({ address: signerAddress, blockTag: 'pending' })
    await testClient.setIntervalMining({ interval: 0 })
    try {
      const first = await impatient.settle(payment)
      expect(first).toMatchObject({ success: false, errorReason: 'settlement_pending' })
      expect(first.transaction).toMatch(/^0x[0-9a-f]{64}$/)
      // The retry a resource server might make: refused without a second transaction.
      expect(await impatient.settle(payment)).toMatchObject({
        success: false,
        errorReason: 'invalid_exact_evm_nonce_already_used',
        transaction: '',
      })
      expect(await impatient.verify(payment)).toMatchObject({ isValid: false, invalidReason: 'invalid_exact_evm_nonce_already_used' })
      expect(await devnet.publicClient.getTransactionCount({ address: signerAddress, blockTag: 'pending' })).toBe(sentBefore + 1)
      await devnet.mine()
      const receipt = await devnet.publicClient.getTransactionReceipt({ hash: first.transaction as Hex })
      expect(receipt.status).toBe('success')
      expect(await devnet.usdcBalance(payTo)).toBe(amount)
    } finally {
      await testClient.setIntervalMining({ interval: 2 })
    }
  })

  it('replaces a transaction that gets no receipt with the same call at higher fees, and settles once', async () => {
    const key = devnet.accounts[1]!.privateKey
    const patient = exactEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [key], pollingIntervalMs: 50 } },
      receiptTimeoutMs: 20_000,
      replaceAfterMs: 300,
    })
    const testClient = createTestClient({ mode: 'anvil', transport: http(devnet.rpcUrl) })
    const signerAddress = privateKeyToAccount(key).address
    const payTo = freshAddress()
    const payment = await pay(devnet.accounts[9]!.privateKey, offerOn(devnet, payTo))
    const minedBefore = await devnet.publicClient.getTransactionCount({ address: signerAddress })
    // No blocks: the first transaction waits in the pool, as one the node keeps but never mines.
    await testClient.setAutomine(false)
    let first: Hex | undefined
    try {
      const settling = patient.settle(payment)
      const pool = () =>
        testClient.request({ method: 'txpool_content' as never }) as Promise<{ pending: Record<string, Record<string, { hash: Hex }>> }>
      const pendingHash = async () =>
        Object.values((await pool()).pending[signerAddress] ?? (await pool()).pending[signerAddress.toLowerCase()] ?? {})[0]?.hash
      for (let i = 0; i < 100 && !first; i++) {
        first = await pendingHash()
        if (!first) await new Promise((resolve) => setTimeout(resolve, 20))
      }
      expect(first).toMatch(/^0x[0-9a-f]{64}$/)
      // Wait for the replacement to take the first one's place in the pool, then mine.
      for (let i = 0; i < 100 && (await pendingHash()) === first; i++) await new Promise((resolve) => setTimeout(resolve, 50))
      await devnet.mine()
      const result = await settling
      expect(result).toMatchObject({ success: true })
      expect(result.transaction).not.toBe(first)
      const receipt = await devnet.publicClient.getTransactionReceipt({ hash: result.transaction as Hex })
      expect(receipt.status).toBe('success')
    } finally {
      await testClient.setAutomine(true)
    }
    // One nonce used, one transfer: the money moved exactly once.
    expect(await devnet.publicClient.getTransactionCount({ address: signerAddress })).toBe(minedBefore + 1)
    expect(await devnet.usdcBalance(payTo)).toBe(amount)
  })
})

/** Settles `count` payments at once, spread over `payers`; checks every one succeeded and the money moved exactly. */
async function settleConcurrently(devnet: Devnet, facilitator: SchemeFacilitator, payers: Hex[], count: number): Promise<Hex[]> {
  const payTo = freshAddress()
  const offer = offerOn(devnet, payTo)
  const payments = await Promise.all(Array.from({ length: count }, (_, i) => pay(payers[i % payers.length]!, offer)))
  const owners = payers.map((key) => privateKeyToAccount(key).address)
  const before = await Promise.all(owners.map((owner) => devnet.usdcBalance(owner)))

  const results = await Promise.all(payments.map((payment) => facilitator.settle(payment)))
  const failures = results.filter((result) => !result.success)
  expect(failures).toEqual([])
  const hashes = results.map((result) => result.transaction as Hex)
  expect(new Set(hashes).size).toBe(count)

  expect(await devnet.usdcBalance(payTo)).toBe(BigInt(count) * amount)
  const after = await Promise.all(owners.map((owner) => devnet.usdcBalance(owner)))
  owners.forEach((_, i) => {
    const paid = BigInt(payments.filter((payment) => authorizationOf(payment).from === owners[i]).length) * amount
    expect(before[i]! - after[i]!).toBe(paid)
  })
  // Per sender, the nonces form one unbroken run: none skipped, none used twice.
  const transactions = await Promise.all(hashes.map((hash) => devnet.publicClient.getTransaction({ hash })))
  for (const sender of new Set(transactions.map((transaction) => transaction.from))) {
    const sent = transactions.filter((transaction) => transaction.from === sender)
    const nonces = sent.map((transaction) => transaction.nonce).sort((a, b) => a - b)
    expect(nonces).toEqual(nonces.map((_, i) => nonces[0]! + i))
  }
  return hashes
}
