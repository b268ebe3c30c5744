/**
 * Verification of an `exact` EIP-3009 payment (specs/schemes/exact/scheme_exact_evm.md, "Facilitator
 * verification"), in the order of PROTOCOL.md: the offer, the authorization's terms, the signature,
 * then the chain (nonce, balance, token domain, simulated transfer).
 *
 * Everything that needs no chain runs first, so that a bad payment costs no RPC call, and the chain
 * reads of one payment go out together as one JSON-RPC batch.
 */
import {
  type Address,
  ContractFunctionRevertedError,
  encodeFunctionData,
  getAddress,
  type Hash,
  type Hex,
  isAddress,
  isErc6492Signature,
  parseErc6492Signature,
  BaseError as ViemBaseError,
} from 'viem'
import { Reason } from '../../core/Errors.ts'
import type { Payment, VerifyResponse } from '../../core/Facilitator.ts'
import * as PaymentRequirements from '../../core/PaymentRequirements.ts'
import { type Failure, fail, messageOf, verifyResponse } from '../Outcome.ts'
import { recoverAddress } from '../recover.ts'
import { eip3009Abi, erc1271Abi, erc1271MagicValue } from './abi.ts'
import { type Admission, admissionOf, admitFromCache, admitFromRead, headOf } from './admission.ts'
import * as Eip3009 from './Eip3009.ts'
import { isRevert, readPayment } from './reads.ts'
import { type Context, checkChain, type NetworkState, type TokenInfo } from './state.ts'

const maxUint256 = 2n ** 256n - 1n

/** How the payer's signature is checked on chain, and so which `transferWithAuthorization` carries it. */
export type Signature =
  | { kind: 'eoa'; v: number; r: Hex; s: Hex }
  | { kind: 'contract'; bytes: Hex }
  | { kind: 'counterfactual'; bytes: Hex; factory: Address; factoryData: Hex }

export type Verified = {
  ok: true
  state: NetworkState
  payer: Address
  asset: Address
  authorization: Eip3009.Authorization
  signature: Signature
}

/** Verifies a payment; infrastructure failures become `unexpected_verify_error`, never a throw. */
export function verify(context: Context, payment: Payment): Promise<VerifyResponse> {
  return verifyResponse(() => check(context, payment, { simulate: true, settling: false, cached: true }), payerOf(payment))
}

/**
 * Every check of a payment. `settling` is set by the settlement of this very payment, which must not
 * see itself as a concurrent settlement.
 */
export async function check(
  context: Context,
  payment: Payment,
  options: { simulate: boolean; settling: boolean; cached?: boolean },
): Promise<Failure | Verified> {
  const offline = checkOffline(context, payment)
  if (!offline.ok) return offline
  const { state, payer, asset, authorization } = offline
  const signature = await checkSignature(context, state, offline.digest, offline.signature, payer)
  if ('reason' in signature) return { ...signature, payer }
  const key = settlementKey(payment)
  if (!options.settling && key && context.settling.has(key))
    return fail(Reason.exactNonceAlreadyUsed, payer, 'The authorization is being settled.')
  const admission = options.cached && key && signature.kind === 'eoa' ? admissionOf(state, context.admission) : undefined
  const value = BigInt(authorization.value)
  const head = admission && headOf(state, admission)
  if (admission && key) {
    const cached = await admitCached(state, admission, { payment, asset, payer, value, key, head })
    if (cached === true) return { ok: true, state, payer, asset, authorization, signature }
    if (cached) return { ...cached, payer }
  }
  const onChain = await checkOnChain(state, { payment, asset, authorization, signature, simulate: options.simulate })
  if (!onChain.ok) return { ...onChain, payer }
  if (admission && key) admitFromRead(admission, { asset, payer, value, key, balance: onChain.balance, block: head })
  return { ok: true, state, payer, asset, authorization, signature }
}

/**
 * A payment admitted from what is cached (`admission.ts`): true, a refusal the cache is sure of (the
 * token's domain), or `undefined` when the chain must be read.
 */
async function admitCached(
  state: NetworkState,
  admission: Admission,
  input: { payment: Payment; asset: Address; payer: Address; value: bigint; key: string; head: bigint | undefined },
): Promise<true | Failure | undefined> {
  const token = state.tokens.get(input.asset.toLowerCase())
  if (!token || input.head === undefined) return undefined
  const known = await token
  if (!known.deployed) return undefined
  const refusal = checkDomain(known, input.payment)
  if (refusal) return refusal
  return admitFromCache(admission, input) || undefined
}

/**
 * The identity of the transfer a payment authorises, `network:asset:payer:nonce` in lower case; an
 * EIP-3009 authorization executes at most once per `(token, from, nonce)`.
 */
export function settlementKey(payment: Payment): string | undefined {
  const parsed = Eip3009.payload.safeParse(payment?.payload?.payload)
  const { network, asset } = payment?.requirements ?? {}
  if (!parsed.success || typeof network !== 'string' || typeof asset !== 'string') return undefined
  const { from, nonce } = parsed.data.authorization
  return `${network}:${asset}:${from}:${nonce}`.toLowerCase()
}

/** The calldata of `transferWithAuthorization` for a verified payment. */
export function transferData(authorization: Eip3009.Authorization, signature: Signature): Hex {
  return encodeFunctionData({
    abi: eip3009Abi,
    functionName: 'transferWithAuthorization',
    args: transferArgs(authorization, signature) as never,
  })
}

/** The arguments of `transferWithAuthorization` for a verified payment. */
export function transferArgs(authorization: Eip3009.Authorization, signature: Signature) {
  const { from, to, value, validAfter, validBefore, nonce } = authorization
  const head = [getAddress(from), getAddress(to), BigInt(value), BigInt(validAfter), BigInt(validBefore), nonce as Hash] as const
  // 65-byte signatures of a plain key go through the (v, r, s) overload, which every EIP-3009 token
  // has; only FiatToken 2.2 and later have the `bytes` overload that smart-wallet signatures need.
  if (signature.kind === 'eoa') return [...head, signature.v, signature.r, signature.s] as const
  return [...head, signature.bytes] as const
}

type Offline =
  | Failure
  | { ok: true; state: NetworkState; payer: Address; asset: Address; authorization: Eip3009.Authorization; digest: Hash; signature: Hex }

function checkOffline(context: Context, payment: Payment, now = Math.floor(Date.now() / 1000)): Offline {
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

  const parsed = Eip3009.payload.safeParse(payload.payload)
  if (!parsed.success) {
    const onlySignature = parsed.error.issues.every((issue) => issue.path[0] === 'signature')
    return fail(onlySignature ? Reason.exactFailedToParseSignature : Reason.invalidPayload, payer, parsed.error.issues[0]?.message)
  }
  const { authorization, signature } = parsed.data
  const from = getAddress(authorization.from)
  if ([authorization.value, authorization.validAfter, authorization.validBefore].some((field) => BigInt(field) > maxUint256))
    return fail(Reason.invalidPayload, from, 'A uint256 field of the authorization is out of range.')
  const { name, version } = requirements.extra ?? {}
  if (typeof name !== 'string' || typeof version !== 'string' || !name || !version) return fail(Reason.exactMissingEip712Domain, from)
  if (getAddress(authorization.to) !== getAddress(requirements.payTo)) return fail(Reason.exactRecipientMismatch, from)
  if (BigInt(authorization.value) !== BigInt(requirements.amount))
    return fail(Reason.exactValueMismatch, from, `The authorization is for ${authorization.value}, the offer for ${requirements.amount}.`)
  if (BigInt(authorization.validBefore) < BigInt(now + context.minValidSeconds))
    return fail(Reason.exactValidBefore, from, `validBefore must be at least ${context.minValidSeconds} s ahead.`)
  if (BigInt(authorization.validAfter) > BigInt(now)) return fail(Reason.exactValidAfter, from)
  if (signature.length % 2 !== 0 || signature.length < 4) return fail(Reason.exactFailedToParseSignature, from)

  const asset = getAddress(requirements.asset)
  const digest = Eip3009.digest({ name, version, chainId: state.chainId, verifyingContract: asset }, authorization)
  return { ok: true, state, payer: from, asset, authorization, digest, signature: signature as Hex }
}

async function checkSignature(
  context: Context,
  state: NetworkState,
  digest: Hash,
  signature: Hex,
  from: Address,
): Promise<Failure | Signature> {
  if (isErc6492Signature(signature)) {
    let wrapped: ReturnType<typeof parseErc6492Signature>
    try {
      wrapped = parseErc6492Signature(signature)
    } catch {
      return fail(Reason.exactFailedToParseSignature)
    }
    if (await hasCode(state, from)) return checkContractSignature(state, from, digest, wrapped.signature)
    // Not deployed: settling would mean sending the payer's factory call from our own account, which
    // must never happen for a factory the operator has not approved.
    const factory = wrapped.address
    if (!factory || !wrapped.data || !context.factories.has(factory.toLowerCase())) return fail(Reason.eip6492FactoryNotAllowed)
    const valid = await state.client.verifyHash({ address: from, hash: digest, signature })
    if (!valid) return fail(Reason.exactSignature)
    return { kind: 'counterfactual', bytes: wrapped.signature, factory: getAddress(factory), factoryData: wrapped.data }
  }
  if (signature.length === 132) {
    try {
      if (recoverAddress(digest, signature) === from) {
        const v = Number.parseInt(signature.slice(130), 16)
        return { kind: 'eoa', r: `0x${signature.slice(2, 66)}`, s: `0x${signature.slice(66, 130)}`, v: v < 27 ? v + 27 : v }
      }
    } catch {
      // Not a valid plain-key signature; it may still be a smart wallet's.
    }
  }
  if (!(await hasCode(state, from))) return fail(Reason.exactSignature)
  return checkContractSignature(state, from, digest, signature)
}

async function checkContractSignature(state: NetworkState, wallet: Address, digest: Hash, signature: Hex): Promise<Failure | Signature> {
  const answer = await settled(
    state.client.readContract({ address: wallet, abi: erc1271Abi, functionName: 'isValidSignature', args: [digest, signature] }),
  )
  if (!answer.ok || answer.value.toLowerCase() !== erc1271MagicValue) return fail(Reason.exactSignature)
  return { kind: 'contract', bytes: signature }
}

async function checkOnChain(
  state: NetworkState,
  input: { payment: Payment; asset: Address; authorization: Eip3009.Authorization; signature: Signature; simulate: boolean },
): Promise<Failure | { ok: true; balance: bigint }> {
  const { asset, authorization, signature } = input
  const from = getAddress(authorization.from)
  await checkChain(state)
  // A counterfactual wallet cannot be simulated before its deployment; its signature was checked
  // through the ERC-6492 validator instead.
  const simulate = input.simulate && input.signature.kind !== 'counterfactual'
  const [token, { used, balance, simulation }] = await Promise.all([
    tokenInfo(state, asset),
    readPayment(state, { asset, from, authorization, transfer: simulate ? transferArgs(authorization, signature) : undefined }),
  ])
  if (!token.deployed) return fail(Reason.assetNotDeployedContract, undefined, `No contract at ${asset}.`)
  if (!used.ok) return fail(Reason.exactEip3009NotSupported, undefined, 'The token has no authorizationState (EIP-3009).')
  if (used.value) return fail(Reason.exactNonceAlreadyUsed)
  if (!balance.ok) return fail(Reason.exactEip3009NotSupported, undefined, 'The token has no balanceOf.')
  if (balance.value < BigInt(authorization.value))
    return fail(Reason.exactInsufficientBalance, undefined, `Balance ${balance.value} is below ${authorization.value}.`)
  const domain = checkDomain(token, input.payment)
  if (domain) return domain
  if (simulation && !simulation.ok) return fail(Reason.exactSimulationFailed, undefined, revertReason(simulation.error))
  return { ok: true, balance: balance.value }
}

/** The offer's EIP-712 name and version against what the token says of itself. */
function checkDomain(token: TokenInfo, payment: Payment): Failure | undefined {
  const { name, version } = payment.requirements.extra as { name: string; version: string }
  if (token.name !== undefined && token.name !== name)
    return fail(Reason.exactTokenNameMismatch, undefined, `The token's EIP-712 name is "${token.name}", the offer says "${name}".`)
  if (token.version !== undefined && token.version !== version)
    return fail(
      Reason.exactTokenVersionMismatch,
      undefined,
      `The token's EIP-712 version is "${token.version}", the offer says "${version}".`,
    )
  return undefined
}

function tokenInfo(state: NetworkState, asset: Address): Promise<TokenInfo> {
  const key = asset.toLowerCase()
  const cached = state.tokens.get(key)
  if (cached) return cached
  const read = (functionName: 'name' | 'version') => settled(state.client.readContract({ address: asset, abi: eip3009Abi, functionName }))
  const info = Promise.all([hasCode(state, asset), read('name'), read('version')]).then(([deployed, name, version]) => ({
    deployed,
    name: name.ok ? name.value : undefined,
    version: version.ok ? version.value : undefined,
  }))
  state.tokens.set(key, info)
  // Only what a deployed token says is kept; a failed read or a missing contract is asked again.
  info.then(
    (value) => value.deployed || state.tokens.delete(key),
    () => state.tokens.delete(key),
  )
  return info
}

export async function hasCode(state: NetworkState, address: Address): Promise<boolean> {
  const code = await state.client.getCode({ address })
  return code !== undefined && code !== '0x'
}

/**
 * The outcome of a contract read: a revert is an answer (`ok: false`); a transport failure is not and
 * is thrown, so that an RPC outage never reads as "the payment is invalid".
 */
export async function settled<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await promise }
  } catch (error) {
    if (isRevert(error)) return { ok: false, error }
    throw error
  }
}

export function revertReason(error: unknown): string {
  if (error instanceof ViemBaseError) {
    const reverted = error.walk((e) => e instanceof ContractFunctionRevertedError)
    if (reverted instanceof ContractFunctionRevertedError && reverted.reason) return reverted.reason
    const details = error.walk((e) => e instanceof ViemBaseError && e.name === 'ExecutionRevertedError')
    if (details instanceof ViemBaseError)
      return (details.details || details.shortMessage).replace(/^execution reverted:?\s*/i, '') || 'reverted'
    return error.shortMessage
  }
  return messageOf(error)
}

/** The payer named by a payment, where it names one; reported even when the payment is refused. */
export function payerOf(payment: Payment): string | undefined {
  const from = (payment?.payload?.payload as { authorization?: { from?: unknown } } | undefined)?.authorization?.from
  return typeof from === 'string' && isAddress(from, { strict: false }) ? getAddress(from) : undefined
}
