/**
 * Verification of an `exact` payment by EIP-2612 permit (PROTOCOL.md "EIP-2612 permit"), in the
 * order of the EIP-3009 checks: the offer, the permit's terms (spender, value, deadline), the
 * signature, then the chain (token domain, nonce, balance, simulated `permit`).
 *
 * Everything that needs no chain runs first, so that a bad payment costs no RPC call, and the chain
 * reads of one payment go out together as one JSON-RPC batch.
 */
import {
  type Address,
  domainSeparator,
  encodeFunctionData,
  getAddress,
  type Hash,
  type Hex,
  hashTypedData,
  isAddress,
  maxUint256,
} from 'viem'
import { Reason } from '../../../core/Errors.ts'
import type { Payment, VerifyResponse } from '../../../core/Facilitator.ts'
import * as PaymentRequirements from '../../../core/PaymentRequirements.ts'
import { type Failure, fail, messageOf, verifyResponse } from '../../Outcome.ts'
import { recoverAddress } from '../../recover.ts'
import { eip2612Abi } from '../abi.ts'
import * as Eip2612 from '../Eip2612.ts'
import { type Context, checkChain, type NetworkState, type PermitTokenInfo, type SignerState } from '../state.ts'
import { hasCode, revertReason, settled } from '../verify.ts'

export type PermitVerified = {
  ok: true
  state: NetworkState
  payer: Address
  asset: Address
  payTo: Address
  permit: Eip2612.Permit
  signature: { v: number; r: Hex; s: Hex }
  /** The pool key the permit names as spender: the only one that can use the allowance. */
  signer: SignerState
  /**
   * `permit`: send `permit`, then `transferFrom`. `transfer`: the permit is already on chain for this
   * spender (a settlement cut short after it), so only `transferFrom` remains.
   */
  stage: 'permit' | 'transfer'
}

/** Verifies a permit payment; infrastructure failures become `unexpected_verify_error`, never a throw. */
export function verify(context: Context, payment: Payment): Promise<VerifyResponse> {
  return verifyResponse(() => check(context, payment, { simulate: true, settling: false }), payerOf(payment))
}

/**
 * Every check of a permit payment. `settling` is set by the settlement of this very payment, which
 * must not see itself as a concurrent settlement, and may resume one cut short after its `permit`.
 */
export async function check(
  context: Context,
  payment: Payment,
  options: { simulate: boolean; settling: boolean },
): Promise<Failure | PermitVerified> {
  const offline = checkOffline(context, payment)
  if (!offline.ok) return offline
  if (!options.settling) {
    const key = settlementKey(payment)
    if (key && context.settling.has(key)) return fail(Reason.permitNonce, offline.payer, 'The permit is being settled.')
  }
  const stage = await checkOnChain(offline, options)
  if (typeof stage !== 'string') return { ...stage, payer: offline.payer }
  return { ...offline, stage }
}

/**
 * The identity of the transfer a permit pays for, `network:asset:owner:permit:nonce` in lower case:
 * a token uses each nonce of an owner once.
 */
export function settlementKey(payment: Payment): string | undefined {
  const parsed = Eip2612.payload.safeParse(payment?.payload?.payload)
  const { network, asset } = payment?.requirements ?? {}
  if (!parsed.success || typeof network !== 'string' || typeof asset !== 'string') return undefined
  const { owner, nonce } = parsed.data.permit
  return `${network}:${asset}:${owner}:permit:${BigInt(nonce)}`.toLowerCase()
}

/** The calldata of `permit(owner, spender, value, deadline, v, r, s)`. */
export function permitData(verified: Pick<PermitVerified, 'permit' | 'signature'>): Hex {
  const { permit, signature } = verified
  return encodeFunctionData({
    abi: eip2612Abi,
    functionName: 'permit',
    args: [
      getAddress(permit.owner),
      getAddress(permit.spender),
      BigInt(permit.value),
      BigInt(permit.deadline),
      signature.v,
      signature.r,
      signature.s,
    ],
  })
}

/** The calldata of `transferFrom(owner, payTo, value)`. */
export function transferFromData(verified: Pick<PermitVerified, 'permit' | 'payTo'>): Hex {
  const { permit, payTo } = verified
  return encodeFunctionData({
    abi: eip2612Abi,
    functionName: 'transferFrom',
    args: [getAddress(permit.owner), payTo, BigInt(permit.value)],
  })
}

type Offline = Omit<PermitVerified, 'stage'> & { domain: { name: string; version: string } }

function checkOffline(context: Context, payment: Payment, now = Math.floor(Date.now() / 1000)): Failure | Offline {
  const payload = payment?.payload
  const requirements = payment?.requirements
  const payer = payerOf(payment)
  if (payload?.x402Version !== 2 || !requirements) return fail(Reason.invalidX402Version, payer, 'Expected an x402 version 2 payment.')
  const accepted = payload.accepted
  if (requirements.scheme !== 'exact' || accepted?.scheme !== 'exact') return fail(Reason.exactScheme, payer)
  if (accepted.network !== requirements.network)
    return fail(Reason.exactNetworkMismatch, payer, `The payment is for ${accepted.network}, the offer for ${requirements.network}.`)
  const state = context.networks.get(requirements.network)
  if (!state) return fail(Reason.exactNetworkMismatch, payer, `This facilitator does not serve ${requirements.network}.`)
  if (!PaymentRequirements.matches(requirements, accepted))
    return fail(Reason.offerMismatch, payer, 'The accepted offer differs from the requirements in amount, asset or payTo.')
  if (!isAddress(requirements.asset, { strict: false }) || !isAddress(requirements.payTo, { strict: false }))
    return fail(Reason.invalidPaymentRequirements, payer, 'asset and payTo must be addresses.')
  const extra = requirements.extra ?? {}
  if (extra.assetTransferMethod !== Eip2612.assetTransferMethod)
    return fail(Reason.unsupportedPayloadType, payer, 'The offer is not paid by EIP-2612 permit (extra.assetTransferMethod).')

  const parsed = Eip2612.payload.safeParse(payload.payload)
  if (!parsed.success) {
    const onlySignature = parsed.error.issues.every((issue) => issue.path[0] === 'signature')
    return fail(onlySignature ? Reason.exactFailedToParseSignature : Reason.invalidPayload, payer, parsed.error.issues[0]?.message)
  }
  const { permit, signature } = parsed.data
  const owner = getAddress(permit.owner)
  if ([permit.value, permit.nonce, permit.deadline].some((field) => BigInt(field) > maxUint256))
    return fail(Reason.invalidPayload, owner, 'A uint256 field of the permit is out of range.')
  const { name, version } = extra
  if (typeof name !== 'string' || typeof version !== 'string' || !name || !version) return fail(Reason.exactMissingEip712Domain, owner)

  const spender = getAddress(permit.spender)
  const signer = state.signers.find((candidate) => candidate.account.address === spender)
  if (!signer)
    return fail(Reason.permitSpenderMismatch, owner, `The spender ${spender} is not a signer of this facilitator on ${state.network}.`)
  const offered = extra.spender
  if (offered !== undefined && (typeof offered !== 'string' || !isAddress(offered, { strict: false }) || getAddress(offered) !== spender))
    return fail(Reason.permitSpenderMismatch, owner, `The permit names ${spender}; the offer's spender is ${String(offered).slice(0, 64)}.`)
  if (BigInt(permit.value) !== BigInt(requirements.amount))
    return fail(Reason.permitValueMismatch, owner, `The permit is for ${permit.value}, the offer for ${requirements.amount}.`)
  if (BigInt(permit.deadline) < BigInt(now + context.minValidSeconds))
    return fail(Reason.permitDeadline, owner, `The deadline must be at least ${context.minValidSeconds} s ahead.`)

  const asset = getAddress(requirements.asset)
  const digest = hashTypedData(Eip2612.typedData({ name, version, chainId: state.chainId, verifyingContract: asset }, permit))
  let recovered: Address
  try {
    // recoverAddress refuses a high-s signature, as the token's ECDSA.recover does on chain.
    recovered = recoverAddress(digest, signature as Hex)
  } catch (error) {
    return fail(Reason.permitSignature, owner, messageOf(error))
  }
  if (recovered !== owner) return fail(Reason.permitSignature, owner, 'The signature is not by the owner.')
  const v = Number.parseInt(signature.slice(130), 16)
  return {
    ok: true,
    state,
    payer: owner,
    asset,
    payTo: getAddress(requirements.payTo),
    permit,
    signature: { v: v < 27 ? v + 27 : v, r: `0x${signature.slice(2, 66)}`, s: `0x${signature.slice(66, 130)}` },
    signer,
    domain: { name, version },
  }
}

async function checkOnChain(
  offline: Offline,
  options: { simulate: boolean; settling: boolean },
): Promise<Failure | PermitVerified['stage']> {
  const { state, asset, permit, payer, domain } = offline
  const spender = offline.signer.account.address
  const value = BigInt(permit.value)
  await checkChain(state)
  const [token, nonce, balance, allowance, simulation] = await Promise.all([
    permitTokenInfo(state, asset),
    settled(state.client.readContract({ address: asset, abi: eip2612Abi, functionName: 'nonces', args: [payer] })),
    settled(state.client.readContract({ address: asset, abi: eip2612Abi, functionName: 'balanceOf', args: [payer] })),
    settled(state.client.readContract({ address: asset, abi: eip2612Abi, functionName: 'allowance', args: [payer, spender] })),
    options.simulate ? settled(state.client.call({ account: spender, to: asset, data: permitData(offline) })) : undefined,
  ])
  if (!token.deployed) return fail(Reason.assetNotDeployedContract, undefined, `No contract at ${asset}.`)
  if (!token.domainSeparator || !nonce.ok)
    return fail(Reason.permitNotSupported, undefined, 'The token has no DOMAIN_SEPARATOR or nonces (EIP-2612).')
  const expected = domainSeparator({ domain: { ...domain, chainId: state.chainId, verifyingContract: asset } })
  if (token.domainSeparator !== expected) return domainMismatch(token, domain)

  const wanted = BigInt(permit.nonce)
  let stage: PermitVerified['stage'] = 'permit'
  if (nonce.value !== wanted) {
    // A settlement cut short between its two transactions: the permit's nonce is the last one used
    // and the allowance is still exactly what it set (transferFrom would have spent it).
    const resumable = options.settling && nonce.value === wanted + 1n && value < maxUint256 && allowance.ok && allowance.value === value
    if (!resumable)
      return fail(Reason.permitNonce, undefined, `The token's next nonce for ${payer} is ${nonce.value}; the permit's is ${wanted}.`)
    stage = 'transfer'
  }
  if (!balance.ok) return fail(Reason.permitNotSupported, undefined, 'The token has no balanceOf.')
  if (balance.value < value) return fail(Reason.exactInsufficientBalance, undefined, `Balance ${balance.value} is below ${value}.`)
  if (simulation && stage === 'permit' && !simulation.ok)
    return fail(Reason.exactSimulationFailed, undefined, revertReason(simulation.error))
  return stage
}

function domainMismatch(token: PermitTokenInfo, domain: { name: string; version: string }): Failure {
  if (!token.domain)
    return fail(
      Reason.exactTokenNameMismatch,
      undefined,
      `The token's DOMAIN_SEPARATOR is not that of "${domain.name}" version "${domain.version}".`,
    )
  if (token.domain.name !== domain.name)
    return fail(
      Reason.exactTokenNameMismatch,
      undefined,
      `The token's EIP-712 name is "${token.domain.name}", the offer says "${domain.name}".`,
    )
  if (token.domain.version !== domain.version)
    return fail(
      Reason.exactTokenVersionMismatch,
      undefined,
      `The token's EIP-712 version is "${token.domain.version}", the offer says "${domain.version}".`,
    )
  return fail(Reason.permitNotSupported, undefined, "The token's DOMAIN_SEPARATOR is not the standard one for its chain and address.")
}

function permitTokenInfo(state: NetworkState, asset: Address): Promise<PermitTokenInfo> {
  const key = asset.toLowerCase()
  const cached = state.permitTokens.get(key)
  if (cached) return cached
  const info = Promise.all([
    hasCode(state, asset),
    settled(state.client.readContract({ address: asset, abi: eip2612Abi, functionName: 'DOMAIN_SEPARATOR' })),
    settled(state.client.readContract({ address: asset, abi: eip2612Abi, functionName: 'eip712Domain' })),
  ]).then(([deployed, separator, domain]) => ({
    deployed,
    domainSeparator: separator.ok ? (separator.value.toLowerCase() as Hash) : undefined,
    domain: domain.ok ? { name: domain.value[1], version: domain.value[2] } : undefined,
  }))
  state.permitTokens.set(key, info)
  // Only what a permit token says is kept; a failed read, a missing contract or a token without permit is asked again.
  info.then(
    (value) => (value.deployed && value.domainSeparator) || state.permitTokens.delete(key),
    () => state.permitTokens.delete(key),
  )
  return info
}

/** The owner named by a permit payment, where it names one; reported even when the payment is refused. */
export function payerOf(payment: Payment): string | undefined {
  const owner = (payment?.payload?.payload as { permit?: { owner?: unknown } } | undefined)?.permit?.owner
  return typeof owner === 'string' && isAddress(owner, { strict: false }) ? getAddress(owner) : undefined
}
