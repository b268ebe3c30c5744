/**
 * Verification of a paid request on a channel: the offer, the payload's form, the channel's terms and
 * voucher signature (no chain), a deposit's EIP-3009 authorization and a simulated deposit, then the
 * charge against the channel's state. The chain is read only for a deposit and a channel seen first.
 */
import { type Address, encodeFunctionData, type Hex, hashTypedData, isAddressEqual } from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { Payment, VerifyResponse } from '../../core/Facilitator.ts'
import { recoverAddress } from '../recover.ts'
import { escrowAbi } from './abi.ts'
import * as Channel from './Channel.ts'
import { binding, type ChannelState, charge, type Refusal } from './check.ts'
import { type Context, channelOf, messageOf, type NetworkState } from './state.ts'

export async function verify(context: Context, payment: Payment): Promise<VerifyResponse> {
  const checked = await check(context, payment)
  if (!checked.ok) return { isValid: false, invalidReason: checked.refusal.reason, invalidMessage: checked.refusal.message }
  const { channel, payload } = checked
  // The channel as a resource server that keeps channel state reads it (the reference's `extra`).
  return {
    isValid: true,
    payer: payload.channelConfig.payer,
    extra: {
      channelId: channel.id,
      balance: channel.balance.toString(),
      totalClaimed: channel.claimed.toString(),
      withdrawRequestedAt: channel.withdrawRequestedAt ?? 0,
      refundNonce: (channel.refundNonce ?? 0n).toString(),
    },
  } as VerifyResponse
}

export type Checked =
  | { ok: true; state: NetworkState; payload: Channel.Payload; channel: ChannelState; price: bigint }
  | { ok: false; refusal: Refusal }

/** Every check of a payment; the chain is asked only for a deposit and a channel seen for the first time. */
export async function check(context: Context, payment: Payment, settling = false): Promise<Checked> {
  const refuse = (reason: Reason, message: string): Checked => ({ ok: false, refusal: { reason, message } })
  const { requirements, payload: sent } = payment
  if (requirements.scheme !== Channel.scheme || sent.accepted.scheme !== Channel.scheme)
    return refuse(Reason.batchScheme, 'The payment is not for batch-settlement.')
  if (sent.accepted.network !== requirements.network)
    return refuse(Reason.batchNetworkMismatch, `The payment is for ${sent.accepted.network}, the offer for ${requirements.network}.`)
  const state = context.networks.get(requirements.network)
  if (!state) return refuse(Reason.invalidNetwork, `This facilitator does not serve ${requirements.network}.`)
  const type = (sent.payload as { type?: unknown }).type
  if (type !== 'deposit' && type !== 'voucher')
    return refuse(Reason.batchPayloadType, 'Only deposit and voucher payloads pay for a request.')
  const parsed = Channel.payload.safeParse(sent.payload)
  if (!parsed.success) return refuse(Reason.invalidPayload, parsed.error.issues[0]?.message ?? 'The payload is malformed.')
  const payload = parsed.data
  // A voucher this facilitator settles is one it must claim: its signer is the channel's receiver
  // authorizer. A resource server with its own authorizer only has deposits settled here, and claims itself.
  if (payload.type === 'voucher' && settling && !isAddressEqual(payload.channelConfig.receiverAuthorizer, state.account.address))
    return refuse(Reason.batchReceiverAuthorizerMismatch, "The channel's receiver authorizer is not this facilitator's signer.")
  const bound = binding(payload, requirements, { chainId: state.chainId, escrow: state.escrow })
  if (bound) return { ok: false, refusal: bound }
  const price = BigInt(requirements.amount)

  let deposit = 0n
  if (payload.type === 'deposit') {
    const refusal = await checkDeposit(context, state, payload, requirements.extra ?? {})
    if (refusal) return { ok: false, refusal }
    deposit = payload.deposit.amount
  }
  let channel: ChannelState
  try {
    channel = await channelOf(context, state, payload.voucher.channelId, payload.channelConfig)
  } catch (error) {
    return refuse(Reason.batchRpcReadFailed, `The channel could not be read: ${messageOf(error)}`)
  }
  if (payload.type === 'voucher' && channel.balance === 0n)
    return refuse(Reason.batchChannelNotFound, 'The channel has no deposit; open it with a deposit payload.')
  const refusal = charge(channel, payload.voucher.maxClaimableAmount, price, deposit)
  if (refusal) return { ok: false, refusal }
  return { ok: true, state, payload, channel, price }
}

async function checkDeposit(
  context: Context,
  state: NetworkState,
  payload: Channel.DepositPayload,
  extra: Record<string, unknown>,
): Promise<Refusal | undefined> {
  const { channelConfig: config, voucher, deposit } = payload
  const authorization = deposit.authorization.erc3009Authorization
  if (typeof extra.name !== 'string' || typeof extra.version !== 'string')
    return { reason: Reason.batchMissingEip712Domain, message: "The offer lacks the token's EIP-712 name and version." }
  const now = BigInt(Math.floor(Date.now() / 1000))
  if (authorization.validBefore < now + BigInt(context.minValidSeconds))
    return { reason: Reason.batchValidBefore, message: 'The deposit authorization expires too soon to be sent.' }
  if (authorization.validAfter > now) return { reason: Reason.batchValidAfter, message: 'The deposit authorization is not valid yet.' }
  const digest = hashTypedData({
    domain: { name: extra.name, version: extra.version, chainId: state.chainId, verifyingContract: config.token },
    types: Channel.receiveWithAuthorizationTypes,
    primaryType: 'ReceiveWithAuthorization',
    message: {
      from: config.payer,
      to: state.collector,
      value: deposit.amount,
      validAfter: authorization.validAfter,
      validBefore: authorization.validBefore,
      nonce: Channel.depositNonce(voucher.channelId, authorization.salt),
    },
  })
  let signer: Address | undefined
  try {
    signer = recoverAddress(digest, authorization.signature)
  } catch {
    signer = undefined
  }
  if (!signer || !isAddressEqual(signer, config.payer))
    return { reason: Reason.batchReceiveAuthorizationSignature, message: 'The deposit authorization is not signed by the payer.' }
  try {
    await state.client.call({ account: state.account, to: state.escrow, data: depositCall(state, payload) })
  } catch (error) {
    return { reason: Reason.batchDepositSimulationFailed, message: `The deposit would revert: ${messageOf(error)}` }
  }
  return undefined
}

export function depositCall(state: NetworkState, payload: Channel.DepositPayload): Hex {
  return encodeFunctionData({
    abi: escrowAbi,
    functionName: 'deposit',
    args: [
      payload.channelConfig,
      payload.deposit.amount,
      state.collector,
      Channel.collectorData(payload.deposit.authorization.erc3009Authorization),
    ],
  })
}
