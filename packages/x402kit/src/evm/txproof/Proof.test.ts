import { type Address, concat, encodeAbiParameters, hashTypedData, keccak256, parseAbiParameters, toHex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { describe, expect, it } from 'vitest'
import type { Payment } from '../../core/Facilitator.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import { txproofEvmFacilitator } from './facilitator.ts'
import * as Proof from './Proof.ts'
import { nativeCoin, txproofServer } from './server.ts'
import { settlementKey } from './verify.ts'

const payTo = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
const transaction = `0x${'ab'.repeat(32)}` as const
const key = '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d'
const resource = 'https://api.example.com/report'

const offer = (extra?: Record<string, unknown>): PaymentRequirements =>
  txproofServer().requirements({ price: '$0.01', network: 'eip155:8453', payTo, ...(extra && { extra }) })

function payment(payload: Record<string, unknown>, requirements = offer(), accepted = requirements): Payment {
  return { payload: { x402Version: 2, resource: { url: resource }, accepted, payload }, requirements }
}

describe('TransactionProof', () => {
  it('is the EIP-712 struct TransactionProof under the domain "x402 transaction proof" version 1', () => {
    const typedData = Proof.typedData(8453, { transaction, asset: offer().asset, payTo, amount: '10000', resource })
    expect(typedData.domain).toEqual({ name: 'x402 transaction proof', version: '1', chainId: 8453 })
    // The digest built by hand from the struct as written in the spec, independently of viem's encoder.
    const typeHash = keccak256(toHex('TransactionProof(bytes32 transaction,address asset,address payTo,uint256 amount,string resource)'))
    const domainHash = keccak256(toHex('EIP712Domain(string name,string version,uint256 chainId)'))
    const separator = keccak256(
      encodeAbiParameters(parseAbiParameters('bytes32, bytes32, bytes32, uint256'), [
        domainHash,
        keccak256(toHex('x402 transaction proof')),
        keccak256(toHex('1')),
        8453n,
      ]),
    )
    const struct = keccak256(
      encodeAbiParameters(parseAbiParameters('bytes32, bytes32, address, address, uint256, bytes32'), [
        typeHash,
        transaction,
        offer().asset as Address,
        payTo,
        10000n,
        keccak256(toHex(resource)),
      ]),
    )
    expect(hashTypedData(typedData)).toBe(keccak256(concat(['0x1901', separator, struct])))
    expect(hashTypedData(typedData)).toMatchInlineSnapshot(`"0x15d3949d84168cdb2b4df543690e28b05e5542d172b0e6063ee0f15129f9da39"`)
  })

  it('parses a payload of a 32-byte hash and a 65-byte signature, and nothing else', () => {
    const signature = `0x${'11'.repeat(65)}`
    expect(Proof.payload.safeParse({ transaction, signature }).success).toBe(true)
    expect(Proof.payload.safeParse({ transaction: transaction.slice(0, -2), signature }).success).toBe(false)
    expect(Proof.payload.safeParse({ transaction, signature: `${signature}00` }).success).toBe(false)
    expect(Proof.payload.safeParse({ transaction }).success).toBe(false)
  })

  it('knows the native coin marker in any case', () => {
    expect(Proof.isNativeCoin('0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee')).toBe(true)
    expect(Proof.isNativeCoin(offer().asset)).toBe(false)
    expect(Proof.isNativeCoin('native')).toBe(false)
  })
})

describe('txproofServer', () => {
  it('offers the network stablecoin, one confirmation and the proof domain by default', () => {
    expect(offer()).toMatchInlineSnapshot(`
      {
        "amount": "10000",
        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "extra": {
          "confirmations": 1,
          "name": "x402 transaction proof",
          "version": "1",
        },
        "maxTimeoutSeconds": 300,
        "network": "eip155:8453",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "scheme": "txproof",
      }
    `)
  })

  it('offers the native coin in 18 decimals', () => {
    const native = txproofServer().requirements({ price: '0.001', network: 'eip155:8453', payTo, asset: nativeCoin, maxTimeoutSeconds: 60 })
    expect(native).toMatchObject({
      network: 'eip155:8453',
      amount: '1000000000000000',
      asset: Proof.nativeCoinAddress,
      maxTimeoutSeconds: 60,
    })
  })

  it('takes confirmations from its options or a route, and refuses ones a payer could not meet', () => {
    expect(txproofServer({ confirmations: 3 }).requirements({ price: '$1', network: 'eip155:8453', payTo }).extra).toMatchObject({
      confirmations: 3,
    })
    expect(offer({ confirmations: 5 }).extra).toMatchObject({ confirmations: 5, name: 'x402 transaction proof', version: '1' })
    expect(() => txproofServer({ confirmations: 0 })).toThrow('confirmations')
    expect(() => offer({ confirmations: 1.5 })).toThrow('confirmations')
    expect(() => txproofServer().requirements({ price: '$1', network: 'eip155:11155111', payTo })).toThrow('No default asset')
  })
})

describe('settlementKey', () => {
  it('is the network and the transaction hash, in lower case, whoever signed', () => {
    const upper = `0x${'AB'.repeat(32)}`
    expect(settlementKey(payment({ transaction: upper, signature: `0x${'11'.repeat(65)}` }))).toBe(`eip155:8453:txproof:${transaction}`)
    expect(settlementKey(payment({ transaction: 'nope', signature: '0x' }))).toBeUndefined()
  })
})

describe('txproofEvmFacilitator, before any chain read', () => {
  // Nothing listens on port 9: a check that reached the chain would answer unexpected_verify_error.
  const facilitator = txproofEvmFacilitator({ networks: { 'eip155:8453': { rpcUrl: 'http://127.0.0.1:9' } }, rpcTimeoutMs: 2_000 })
  const account = privateKeyToAccount(key)
  const sign = (requirements = offer()) =>
    account.signTypedData(Proof.typedData(8453, { transaction, asset: requirements.asset, payTo, amount: requirements.amount, resource }))

  it('refuses what is not a txproof offer it serves', async () => {
    const signature = await sign()
    const other = { ...offer(), network: 'eip155:84532' }
    expect(await facilitator.verify(payment({ transaction, signature }, { ...offer(), scheme: 'exact' }))).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_scheme',
    })
    expect((await facilitator.verify(payment({ transaction, signature }, other))).invalidReason).toBe('invalid_network')
    expect((await facilitator.verify(payment({ transaction, signature }, offer(), { ...offer(), amount: '1' }))).invalidReason).toBe(
      'payment_offer_mismatch',
    )
    const badConfirmations = { ...offer(), extra: { ...offer().extra, confirmations: -1 } }
    expect((await facilitator.verify(payment({ transaction, signature }, badConfirmations))).invalidReason).toBe(
      'invalid_payment_requirements',
    )
  })

  it('refuses a malformed payload, and a malformed or malleated signature, as such', async () => {
    const signature = await sign()
    expect((await facilitator.verify(payment({ transaction: '0x12', signature }))).invalidReason).toBe('invalid_payload')
    expect((await facilitator.verify(payment({ transaction, signature: '0x1234' }))).invalidReason).toBe('invalid_txproof_evm_signature')
    // The high-s twin of a valid signature recovers to the same key; the chain refuses it, and so do we.
    const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
    const s = BigInt(`0x${signature.slice(66, 130)}`)
    const v = Number.parseInt(signature.slice(130), 16)
    const malleated = `${signature.slice(0, 66)}${(n - s).toString(16).padStart(64, '0')}${(v === 27 ? 28 : 27).toString(16)}`
    expect((await facilitator.verify(payment({ transaction, signature: malleated }))).invalidReason).toBe('invalid_txproof_evm_signature')
  })

  it('answers unexpected errors, never throws, when the chain cannot be asked', async () => {
    const signature = await sign()
    expect(await facilitator.verify(payment({ transaction, signature }))).toMatchObject({
      isValid: false,
      invalidReason: 'unexpected_verify_error',
    })
    expect(await facilitator.settle(payment({ transaction, signature }))).toMatchObject({
      success: false,
      errorReason: 'unexpected_settle_error',
      transaction: '',
      network: 'eip155:8453',
    })
  })

  it('sends nothing, so it has no signers; it advertises its confirmations', () => {
    expect(facilitator.signers('eip155:8453')).toEqual([])
    expect(facilitator.extra?.('eip155:8453')).toEqual({ confirmations: 1 })
    expect(() => txproofEvmFacilitator({ networks: {} })).toThrow('No network')
    expect(() => txproofEvmFacilitator({ networks: { base: { rpcUrl: 'http://x' } } })).toThrow('CAIP-2')
    expect(() => txproofEvmFacilitator({ networks: { 'eip155:1': { rpcUrl: 'ftp://x' } } })).toThrow('http(s)')
  })
})
