import { type Devnet, PERMIT_TOKEN_ABI, startDevnet } from '@x402kit/devnet'
import { type Address, bytesToHex, type Hash, type Hex, hexToBytes, parseSignature, toFunctionSelector, toHex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Payment } from '../../../core/Facilitator.ts'
import type { Asset } from '../../../core/Network.ts'
import type { PaymentRequirements } from '../../../core/PaymentRequirements.ts'
import type { SchemeFacilitator } from '../../../core/Scheme.ts'
import { createFacilitator } from '../../../facilitator/createFacilitator.ts'
import { domainOf, exactEvmClient } from '../client.ts'
import * as Eip2612 from '../Eip2612.ts'
import type * as Eip3009 from '../Eip3009.ts'
import { exactEvmFacilitator } from '../facilitator.ts'
import { exactEvmServer } from '../server.ts'

const amount = 1_000n // 0.001 PUSD
const selectors = {
  permit: toFunctionSelector('permit(address,address,uint256,uint256,uint8,bytes32,bytes32)'),
  transferFrom: toFunctionSelector('transferFrom(address,address,uint256)'),
}

const pusdOf = (devnet: Devnet): Asset => ({
  address: devnet.permitToken,
  name: 'Permit Dollar',
  version: '1',
  decimals: 6,
  symbol: 'PUSD',
  transfer: 'eip2612',
})
const freshAddress = () => privateKeyToAccount(generatePrivateKey()).address
const permitOf = (payment: Payment) => payment.payload.payload.permit as Eip2612.Permit
const now = () => Math.floor(Date.now() / 1000)

/** The n − s, flipped-v twin of a signature: same signer by plain ecrecover, refused by EIP-2. */
function malleate(signature: Hex): Hex {
  const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
  const bytes = hexToBytes(signature)
  bytes.set(hexToBytes(toHex(n - BigInt(bytesToHex(bytes.slice(32, 64))), { size: 32 })), 32)
  bytes[64] = bytes[64] === 27 ? 28 : 27
  return bytesToHex(bytes)
}

function permitChain(devnet: Devnet) {
  const pusd = pusdOf(devnet)
  const read = {
    nonce: (owner: Address) =>
      devnet.publicClient.readContract({ address: pusd.address, abi: PERMIT_TOKEN_ABI, functionName: 'nonces', args: [owner] }),
    allowance: (owner: Address, spender: Address) =>
      devnet.publicClient.readContract({ address: pusd.address, abi: PERMIT_TOKEN_ABI, functionName: 'allowance', args: [owner, spender] }),
  }

  function offer(payTo: Address, spender: Address, extra: Record<string, unknown> = {}, asset: Asset = pusd): PaymentRequirements {
    return exactEvmServer().requirements({ price: { atomic: amount }, network: devnet.network, payTo, asset, extra: { spender, ...extra } })
  }

  /** A payment signed by exactEvmClient, which reads the nonce from the chain. */
  async function pay(key: Hex, requirements: PaymentRequirements): Promise<Payment> {
    const client = exactEvmClient(privateKeyToAccount(key), { publicClient: devnet.publicClient })
    expect(client.canPay(requirements)).toBe(true)
    const payload = await client.createPayload(requirements, { resource: 'http://localhost/paid' })
    return { payload: { x402Version: 2, accepted: requirements, payload }, requirements }
  }

  /** A payment signed by `signer` over a permit with some terms changed (its signature is valid for them). */
  async function payWith(key: Hex, requirements: PaymentRequirements, terms: Partial<Eip2612.Permit> = {}, signer: Hex = key) {
    const owner = privateKeyToAccount(key).address
    const permit: Eip2612.Permit = {
      owner,
      spender: requirements.extra?.spender as string,
      value: requirements.amount,
      nonce: terms.nonce ?? String(await read.nonce(owner)),
      deadline: String(now() + 300),
      ...terms,
    }
    const signature = await privateKeyToAccount(signer).signTypedData(Eip2612.typedData(domainOf(requirements), permit))
    return { payload: { x402Version: 2, accepted: requirements, payload: { signature, permit } }, requirements } satisfies Payment
  }

  return { pusd, read, offer, pay, payWith }
}

describe('exact with EIP-2612 permit on a devnet (automine)', () => {
  let devnet: Devnet
  let chain: ReturnType<typeof permitChain>
  let facilitator: SchemeFacilitator
  let signers: { a: Address; b: Address }
  let keys: { a: Hex; b: Hex }
  let payerKey: Hex

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 8 })
    chain = permitChain(devnet)
    keys = { a: devnet.accounts[0]!.privateKey, b: devnet.accounts[1]!.privateKey }
    signers = { a: devnet.accounts[0]!.address, b: devnet.accounts[1]!.address }
    payerKey = devnet.accounts[2]!.privateKey
    facilitator = exactEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [keys.a, keys.b] } },
      receiptTimeoutMs: 20_000,
    })
  })
  afterAll(async () => {
    await devnet?.stop()
  })

  /** PUSD of everyone the payment could move money between, and both signers' transaction nonces. */
  async function snapshot(payment: Payment) {
    const { owner } = permitOf(payment)
    const parties = [owner, payment.requirements.payTo, signers.a, signers.b] as Address[]
    return {
      balances: await Promise.all(parties.map((party) => devnet.tokenBalance(devnet.permitToken, party))),
      signerNonces: await Promise.all([signers.a, signers.b].map((address) => devnet.publicClient.getTransactionCount({ address }))),
    }
  }

  /** Verify and settle both refuse with `reason`, nothing is sent and no balance moves. */
  async function expectRefused(payment: Payment, reason: string) {
    const before = await snapshot(payment)
    const verified = await facilitator.verify(payment)
    expect(verified).toMatchObject({ isValid: false, invalidReason: reason })
    const settled = await facilitator.settle(payment)
    expect(settled).toMatchObject({ success: false, errorReason: reason, transaction: '', network: payment.requirements.network })
    expect(await snapshot(payment)).toEqual(before)
  }

  async function transactionsOf(hash: Hash) {
    const settled = await devnet.publicClient.getTransaction({ hash })
    const receipt = await devnet.publicClient.getTransactionReceipt({ hash })
    return { settled, receipt }
  }

  it('verifies and settles a permit from the named spender: permit then transferFrom, PUSD moves by exactly the amount', async () => {
    const payTo = freshAddress()
    const payment = await chain.pay(payerKey, chain.offer(payTo, signers.b))
    const { owner, nonce } = permitOf(payment)
    const before = await snapshot(payment)

    expect(await facilitator.verify(payment)).toEqual({ isValid: true, payer: owner })
    const settled = await facilitator.settle(payment)
    expect(settled).toMatchObject({ success: true, network: devnet.network, payer: owner, amount: String(amount) })

    const [ownerPusd, payToPusd] = before.balances as [bigint, bigint]
    expect(await Promise.all([owner, payTo].map((a) => devnet.tokenBalance(devnet.permitToken, a as Address)))).toEqual([
      ownerPusd - amount,
      payToPusd + amount,
    ])
    // Two transactions, both from signer b (the spender), none from a; the answer names the transferFrom.
    expect(await snapshot(payment)).toMatchObject({ signerNonces: [before.signerNonces[0], before.signerNonces[1]! + 2] })
    const { settled: transfer, receipt } = await transactionsOf(settled.transaction as Hash)
    expect(receipt.status).toBe('success')
    expect(receipt.gasUsed).toBeLessThan(120_000n)
    expect({ from: transfer.from, to: transfer.to, selector: transfer.input.slice(0, 10) }).toEqual({
      from: signers.b.toLowerCase(),
      to: devnet.permitToken.toLowerCase(),
      selector: selectors.transferFrom,
    })
    const permitTx = (await devnet.publicClient.getBlock({ blockNumber: receipt.blockNumber - 1n, includeTransactions: true }))
      .transactions[0]!
    expect({ from: permitTx.from, nonce: permitTx.nonce, selector: permitTx.input.slice(0, 10) }).toEqual({
      from: signers.b.toLowerCase(),
      nonce: transfer.nonce - 1,
      selector: selectors.permit,
    })
    expect(await devnet.publicClient.getTransactionReceipt({ hash: permitTx.hash })).toMatchObject({ status: 'success' })
    expect((await devnet.publicClient.getTransactionReceipt({ hash: permitTx.hash })).gasUsed).toBeLessThan(120_000n)
    expect(await chain.read.nonce(owner as Address)).toBe(BigInt(nonce) + 1n)
    expect(await chain.read.allowance(owner as Address, signers.b)).toBe(0n)
  })

  it('names the settlement key by owner and permit nonce; EIP-3009 payloads keep theirs', async () => {
    const payment = await chain.payWith(payerKey, chain.offer(freshAddress(), signers.a), { nonce: '007' })
    const { owner } = permitOf(payment)
    expect(facilitator.settlementKey(payment)).toBe(`${devnet.network}:${devnet.permitToken}:${owner}:permit:7`.toLowerCase())

    const usdc = { ...chain.pusd, address: devnet.usdc, name: 'USD Coin', version: '2', symbol: 'USDC', transfer: 'eip3009' } as const
    const offer = exactEvmServer().requirements({ price: { atomic: amount }, network: devnet.network, payTo: freshAddress(), asset: usdc })
    const payload = await exactEvmClient(privateKeyToAccount(payerKey)).createPayload(offer, { resource: 'http://localhost/paid' })
    const { from, nonce } = payload.authorization as Eip3009.Authorization
    const authorization = { payload: { x402Version: 2, accepted: offer, payload }, requirements: offer } as const
    expect(facilitator.settlementKey(authorization)).toBe(`${devnet.network}:${devnet.usdc}:${from}:${nonce}`.toLowerCase())
    expect(await facilitator.verify(authorization)).toEqual({ isValid: true, payer: from })
  })

  describe('refuses bad permits with the exact reason, moving nothing', () => {
    it('deadline past, or too close to settle in time', async () => {
      const offer = chain.offer(freshAddress(), signers.a)
      await expectRefused(await chain.payWith(payerKey, offer, { deadline: String(now() - 10) }), 'invalid_exact_evm_permit_deadline')
      await expectRefused(await chain.payWith(payerKey, offer, { deadline: String(now() + 3) }), 'invalid_exact_evm_permit_deadline')
    })

    it('nonce already used: the same payment after it settled, and a new permit over the used nonce', async () => {
      const offer = chain.offer(freshAddress(), signers.a)
      const payment = await chain.pay(payerKey, offer)
      expect(await facilitator.settle(payment)).toMatchObject({ success: true })
      await expectRefused(payment, 'invalid_exact_evm_permit_nonce')
      await expectRefused(await chain.payWith(payerKey, offer, { nonce: permitOf(payment).nonce }), 'invalid_exact_evm_permit_nonce')
    })

    it('nonce ahead of the token’s', async () => {
      const owner = privateKeyToAccount(payerKey).address
      const ahead = String((await chain.read.nonce(owner)) + 1n)
      await expectRefused(
        await chain.payWith(payerKey, chain.offer(freshAddress(), signers.a), { nonce: ahead }),
        'invalid_exact_evm_permit_nonce',
      )
    })

    it('spender not a signer of this facilitator, or not the offer’s spender', async () => {
      const offer = chain.offer(freshAddress(), signers.a)
      await expectRefused(await chain.payWith(payerKey, offer, { spender: freshAddress() }), 'invalid_exact_evm_permit_spender_mismatch')
      await expectRefused(await chain.payWith(payerKey, offer, { spender: signers.b }), 'invalid_exact_evm_permit_spender_mismatch')
    })

    it('value other than the amount (less, and more)', async () => {
      const offer = chain.offer(freshAddress(), signers.a)
      await expectRefused(await chain.payWith(payerKey, offer, { value: String(amount - 1n) }), 'invalid_exact_evm_permit_value_mismatch')
      await expectRefused(await chain.payWith(payerKey, offer, { value: String(amount + 1n) }), 'invalid_exact_evm_permit_value_mismatch')
    })

    it('signature by another key than the owner', async () => {
      const payment = await chain.payWith(payerKey, chain.offer(freshAddress(), signers.a), {}, generatePrivateKey())
      await expectRefused(payment, 'invalid_exact_evm_permit_signature')
    })

    it('malleated high-s twin of a valid signature', async () => {
      const payment = await chain.pay(payerKey, chain.offer(freshAddress(), signers.a))
      const { signature } = payment.payload.payload as Eip2612.Payload
      const twin = {
        ...payment,
        payload: { ...payment.payload, payload: { ...payment.payload.payload, signature: malleate(signature as Hex) } },
      }
      await expectRefused(twin, 'invalid_exact_evm_permit_signature')
      expect(await facilitator.verify(payment)).toMatchObject({ isValid: true }) // the original is fine
    })

    it('owner without enough PUSD', async () => {
      await expectRefused(
        await chain.pay(generatePrivateKey(), chain.offer(freshAddress(), signers.a)),
        'invalid_exact_evm_insufficient_balance',
      )
    })

    it('a token without permit (a contract without nonces), and an address with no contract', async () => {
      const noPermit = freshAddress()
      await devnet.setCode(noPermit, '0x60006000fd') // reverts on every call
      const offerOn = (address: Address) => chain.offer(freshAddress(), signers.a, {}, { ...chain.pusd, address })
      await expectRefused(await chain.payWith(payerKey, offerOn(noPermit), { nonce: '0' }), 'invalid_exact_evm_permit_not_supported')
      await expectRefused(await chain.payWith(payerKey, offerOn(freshAddress()), { nonce: '0' }), 'asset_not_deployed_contract')
    })

    it('EIP-712 domain name or version other than the token’s', async () => {
      const payTo = freshAddress()
      await expectRefused(
        await chain.pay(payerKey, chain.offer(payTo, signers.a, { name: 'Permit Dollars' })),
        'invalid_exact_evm_token_name_mismatch',
      )
      await expectRefused(
        await chain.pay(payerKey, chain.offer(payTo, signers.a, { version: '2' })),
        'invalid_exact_evm_token_version_mismatch',
      )
    })

    it('a permit for an offer not paid by permit, a malformed permit, an unparsable signature', async () => {
      const offer = chain.offer(freshAddress(), signers.a)
      const payment = await chain.pay(payerKey, offer)
      const { assetTransferMethod, ...eip3009Extra } = offer.extra ?? {}
      const notPermit = { ...offer, extra: eip3009Extra }
      await expectRefused({ payload: { ...payment.payload, accepted: notPermit }, requirements: notPermit }, 'unsupported_payload_type')
      const withPayload = (payload: Record<string, unknown>) => ({ ...payment, payload: { ...payment.payload, payload } })
      const { permit, signature } = payment.payload.payload as Eip2612.Payload
      await expectRefused(withPayload({ signature, permit: { ...permit, deadline: '-1' } }), 'invalid_payload')
      await expectRefused(withPayload({ signature: signature.slice(0, 130), permit }), 'invalid_exact_evm_failed_to_parse_signature')
    })
  })

  it('settles one permit submitted 10 times at once through createFacilitator exactly once', async () => {
    const service = createFacilitator({ schemes: [facilitator] })
    const payment = await chain.pay(payerKey, chain.offer(freshAddress(), signers.a))
    const before = await snapshot(payment)
    const results = await Promise.all(Array.from({ length: 10 }, () => service.settle(payment)))
    expect(results.every((result) => result.success)).toBe(true)
    expect(new Set(results.map((result) => result.transaction)).size).toBe(1)
    const after = await snapshot(payment)
    expect(after.balances).toEqual([before.balances[0]! - amount, before.balances[1]! + amount, before.balances[2], before.balances[3]])
    expect(after.signerNonces).toEqual([before.signerNonces[0]! + 2, before.signerNonces[1]])
  })

  it('settles one permit submitted 10 times at once to the scheme itself once; the others are refused', async () => {
    const payment = await chain.pay(payerKey, chain.offer(freshAddress(), signers.a))
    const before = await snapshot(payment)
    const results = await Promise.all(Array.from({ length: 10 }, () => facilitator.settle(payment)))
    expect(results.filter((result) => result.success)).toHaveLength(1)
    expect(results.filter((result) => !result.success).map((result) => result.errorReason)).toEqual(
      Array(9).fill('invalid_exact_evm_permit_nonce'),
    )
    expect((await snapshot(payment)).balances[0]).toBe(before.balances[0]! - amount)
  })

  it('after a crash between permit and transferFrom, settling again sends only transferFrom, and never transfers twice', async () => {
    const payTo = freshAddress()
    const payment = await chain.pay(payerKey, chain.offer(payTo, signers.b))
    const { owner, spender, value, deadline } = permitOf(payment)
    const { r, s, v } = parseSignature((payment.payload.payload as Eip2612.Payload).signature as Hex)
    const before = await snapshot(payment)

    // The facilitator's key sent the permit, then the process died.
    const spenderWallet = devnet.walletClient(keys.b)
    const permitHash = await spenderWallet.writeContract({
      address: devnet.permitToken,
      abi: PERMIT_TOKEN_ABI,
      functionName: 'permit',
      args: [owner as Address, spender as Address, BigInt(value), BigInt(deadline), Number(v), r, s],
    })
    expect((await devnet.publicClient.waitForTransactionReceipt({ hash: permitHash })).status).toBe('success')
    // A half-settled permit is not a payment anyone may be served for.
    expect(await facilitator.verify(payment)).toMatchObject({ isValid: false, invalidReason: 'invalid_exact_evm_permit_nonce' })

    const restarted = exactEvmFacilitator({ networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [keys.a, keys.b] } } })
    const settled = await restarted.settle(payment)
    expect(settled).toMatchObject({ success: true, payer: owner, amount: String(amount) })
    const { settled: transfer } = await transactionsOf(settled.transaction as Hash)
    expect(transfer.input.slice(0, 10)).toBe(selectors.transferFrom)
    const after = await snapshot(payment)
    expect(after.balances).toEqual([before.balances[0]! - amount, before.balances[1]! + amount, before.balances[2], before.balances[3]])
    expect(after.signerNonces).toEqual([before.signerNonces[0], before.signerNonces[1]! + 2]) // the permit, then only transferFrom

    // Once more: the allowance is spent, so it is refused and nothing moves; a second transferFrom would revert anyway.
    expect(await restarted.settle(payment)).toMatchObject({
      success: false,
      errorReason: 'invalid_exact_evm_permit_nonce',
      transaction: '',
    })
    expect(await snapshot(payment)).toEqual(after)
    await expect(
      devnet.publicClient.simulateContract({
        account: signers.b,
        address: devnet.permitToken,
        abi: PERMIT_TOKEN_ABI,
        functionName: 'transferFrom',
        args: [owner as Address, payTo, amount],
      }),
    ).rejects.toThrow(/ERC20InsufficientAllowance/)
  })

  it('a permit someone else submitted first still settles once, by transferFrom alone', async () => {
    const payment = await chain.pay(payerKey, chain.offer(freshAddress(), signers.a))
    const { owner, spender, value, deadline } = permitOf(payment)
    const { r, s, v } = parseSignature((payment.payload.payload as Eip2612.Payload).signature as Hex)
    const before = await snapshot(payment)
    const stranger = devnet.walletClient(devnet.accounts[5]!.privateKey)
    await devnet.publicClient.waitForTransactionReceipt({
      hash: await stranger.writeContract({
        address: devnet.permitToken,
        abi: PERMIT_TOKEN_ABI,
        functionName: 'permit',
        args: [owner as Address, spender as Address, BigInt(value), BigInt(deadline), Number(v), r, s],
      }),
    })
    expect(await facilitator.settle(payment)).toMatchObject({ success: true })
    const after = await snapshot(payment)
    expect(after.balances[0]).toBe(before.balances[0]! - amount)
    expect(after.signerNonces).toEqual([before.signerNonces[0]! + 1, before.signerNonces[1]])
  })
})

describe('exact with EIP-2612 permit on a devnet with 1 s blocks', () => {
  let devnet: Devnet

  beforeAll(async () => {
    devnet = await startDevnet({ accounts: 3, blockTime: 1 })
  })
  afterAll(async () => {
    await devnet?.stop()
  })

  it('sends transferFrom without waiting for the permit’s receipt: both land in one block, consecutive nonces', async () => {
    const chain = permitChain(devnet)
    const signer = devnet.accounts[0]!
    const facilitator = exactEvmFacilitator({
      networks: { [devnet.network]: { rpcUrl: devnet.rpcUrl, signers: [signer.privateKey], pollingIntervalMs: 100 } },
    })
    const payment = await chain.pay(devnet.accounts[1]!.privateKey, chain.offer(freshAddress(), signer.address))
    const settled = await facilitator.settle(payment)
    expect(settled).toMatchObject({ success: true })
    const receipt = await devnet.publicClient.getTransactionReceipt({ hash: settled.transaction as Hash })
    const block = await devnet.publicClient.getBlock({ blockNumber: receipt.blockNumber, includeTransactions: true })
    const ours = block.transactions.filter((transaction) => transaction.from === signer.address.toLowerCase())
    expect(ours.map((transaction) => [transaction.input.slice(0, 10), transaction.nonce - ours[0]!.nonce])).toEqual([
      [selectors.permit, 0],
      [selectors.transferFrom, 1],
    ])
  })
})
