import { computeChannelId, signVoucher as referenceSignVoucher } from '@x402/evm/batch-settlement/client'
import { type Address, type Hex, zeroAddress } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { describe, expect, it } from 'vitest'
import { Reason } from '../../core/Errors.ts'
import type { PaymentRequirements } from '../../core/PaymentRequirements.ts'
import * as Channel from './Channel.ts'
import { binding, type ChannelState, charge } from './check.ts'

const chainId = 84532
const network = `eip155:${chainId}` as const
const payer = privateKeyToAccount(generatePrivateKey())
const stranger = privateKeyToAccount(generatePrivateKey())
const receiver = '0x1111111111111111111111111111111111111111' as Address
const authorizer = '0x2222222222222222222222222222222222222222' as Address
const token = '0x036CbD53842c5426634e7929541eC2318f3dCF7e' as Address

const config: Channel.ChannelConfig = {
  payer: payer.address,
  payerAuthorizer: payer.address,
  receiver,
  receiverAuthorizer: authorizer,
  token,
  withdrawDelay: 900,
  salt: `0x${'00'.repeat(32)}`,
}
const requirements: PaymentRequirements = {
  scheme: 'batch-settlement',
  network,
  amount: '1000',
  asset: token,
  payTo: receiver,
  maxTimeoutSeconds: 300,
  extra: { name: 'USDC', version: '2', receiverAuthorizer: authorizer, withdrawDelay: 900 },
}

async function voucherPayload(max: bigint, options: { signer?: typeof payer; channelId?: Hex; chain?: number } = {}) {
  const id = options.channelId ?? Channel.id(config, chainId)
  const signed = await referenceSignVoucher(options.signer ?? payer, id, max.toString(), `eip155:${options.chain ?? chainId}`)
  return Channel.payload.parse({ type: 'voucher', channelConfig: config, voucher: signed })
}

const state = (overrides: Partial<ChannelState> = {}): ChannelState => ({
  id: Channel.id(config, chainId),
  config,
  network,
  balance: 10_000n,
  claimed: 0n,
  charged: 3_000n,
  signedMax: 3_000n,
  signature: undefined,
  closing: false,
  ...overrides,
})

describe('Channel', () => {
  it('computes the channel id and voucher digest the reference client signs', async () => {
    expect(Channel.id(config, chainId)).toBe(computeChannelId(config, network))
    expect(Channel.id(config, chainId)).not.toBe(Channel.id(config, 8453))
    const payload = await voucherPayload(5_000n)
    expect(Channel.recoverVoucherSigner(payload.voucher, chainId)).toBe(payer.address)
    expect(Channel.voucherSigner({ ...config, payerAuthorizer: zeroAddress })).toBe(payer.address)
  })

  it('parses the payloads the reference sends and refuses malformed ones', async () => {
    const payload = await voucherPayload(5_000n)
    expect(payload.voucher.maxClaimableAmount).toBe(5_000n)
    const wire = { type: 'voucher', channelConfig: config, voucher: { ...payload.voucher, maxClaimableAmount: '5000' } }
    expect(Channel.payload.safeParse(wire).success).toBe(true)
    expect(Channel.payload.safeParse({ ...wire, voucher: { ...wire.voucher, maxClaimableAmount: '-1' } }).success).toBe(false)
    expect(Channel.payload.safeParse({ ...wire, voucher: { ...wire.voucher, maxClaimableAmount: (1n << 128n).toString() } }).success).toBe(
      false,
    )
    expect(Channel.payload.safeParse({ ...wire, type: 'claim' }).success).toBe(false)
    expect(Channel.payload.safeParse({ ...wire, channelConfig: { ...config, payer: '0x12' } }).success).toBe(false)
  })
})

describe('binding', () => {
  const options = { chainId }

  it('accepts a voucher of the channel, signed by its payer', async () => {
    expect(binding(await voucherPayload(4_000n), requirements, options)).toBeUndefined()
  })

  it('refuses a bad signature', async () => {
    const payload = await voucherPayload(4_000n, { signer: stranger })
    expect(binding(payload, requirements, options)?.reason).toBe(Reason.batchVoucherSignature)
    const garbled = { ...payload, voucher: { ...payload.voucher, signature: `0x${'ab'.repeat(65)}` as Hex } }
    expect(binding(garbled, requirements, options)?.reason).toBe(Reason.batchVoucherSignature)
  })

  it('refuses a voucher for another channel', async () => {
    const other = Channel.id({ ...config, salt: `0x${'01'.repeat(32)}` }, chainId)
    expect(binding(await voucherPayload(4_000n, { channelId: other }), requirements, options)?.reason).toBe(Reason.batchChannelIdMismatch)
  })

  it('refuses a voucher signed for another chain', async () => {
    // The payer names this chain's channel id but signs under another chain's domain.
    expect(binding(await voucherPayload(4_000n, { chain: 8453 }), requirements, options)?.reason).toBe(Reason.batchVoucherSignature)
    // And a channel of another chain does not bind here.
    expect(binding(await voucherPayload(4_000n), requirements, { chainId: 8453 })?.reason).toBe(Reason.batchChannelIdMismatch)
  })

  it("refuses a channel with other terms than the offer's", async () => {
    const payload = await voucherPayload(4_000n)
    expect(binding(payload, { ...requirements, payTo: stranger.address }, options)?.reason).toBe(Reason.batchReceiverMismatch)
    expect(binding(payload, { ...requirements, asset: stranger.address }, options)?.reason).toBe(Reason.batchTokenMismatch)
    const extra = { ...requirements.extra, receiverAuthorizer: stranger.address }
    expect(binding(payload, { ...requirements, extra }, options)?.reason).toBe(Reason.batchReceiverAuthorizerMismatch)
    const delayed = { ...requirements.extra, withdrawDelay: 3600 }
    expect(binding(payload, { ...requirements, extra: delayed }, options)?.reason).toBe(Reason.batchWithdrawDelayMismatch)
  })
})

describe('charge', () => {
  it('accepts a voucher covering the price on top of what was charged', () => {
    expect(charge(state(), 4_000n, 1_000n)).toBeUndefined()
    expect(charge(state(), 4_500n, 1_000n)).toBeUndefined()
  })

  it('refuses a voucher lower than the last', () => {
    expect(charge(state({ signedMax: 5_000n }), 4_000n, 1_000n)?.reason).toBe(Reason.batchCumulativeBelowClaimed)
  })

  it('refuses a voucher not covering the price, including a replay of the last', () => {
    expect(charge(state(), 3_999n, 1_000n)?.reason).toBe(Reason.batchCumulativeAmountMismatch)
    expect(charge(state(), 3_000n, 1_000n)?.reason).toBe(Reason.batchCumulativeAmountMismatch)
  })

  it('refuses an under-funded channel, counting a deposit that comes with the voucher', () => {
    expect(charge(state({ balance: 3_500n }), 4_000n, 1_000n)?.reason).toBe(Reason.batchCumulativeExceedsBalance)
    expect(charge(state({ balance: 3_500n }), 4_000n, 1_000n, 500n)).toBeUndefined()
  })

  it('refuses a closing channel', () => {
    expect(charge(state({ closing: true }), 4_000n, 1_000n)?.reason).toBe(Reason.batchChannelClosing)
  })
})
