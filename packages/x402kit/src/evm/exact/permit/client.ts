/**
 * The payer's part of `exact` with an EIP-2612 permit: sign `Permit(owner, spender, value, nonce,
 * deadline)` over the token's current nonce for the offer's spender. The nonce is the token's
 * `nonces(owner)`, read from the chain: permits of one owner are used in nonce order, so a payer pays
 * one permit offer of a token at a time, each after the previous has settled.
 */
import { type Client, getAddress, isAddress } from 'viem'
import { getChainId, readContract } from 'viem/actions'
import { BaseError } from '../../../core/Errors.ts'
import * as Network from '../../../core/Network.ts'
import type { PaymentRequirements } from '../../../core/PaymentRequirements.ts'
import type { EvmSigner } from '../../Signer.ts'
import { eip2612Abi } from '../abi.ts'
import * as Eip2612 from '../Eip2612.ts'

/** Whether a permit offer can be paid: it names a spender, and the chain it is on can be read. */
export function canPayPermit(offer: PaymentRequirements, publicClient: Client | undefined): boolean {
  const spender = offer.extra?.spender
  if (!publicClient || typeof spender !== 'string' || !isAddress(spender, { strict: false })) return false
  const chainId = publicClient.chain?.id
  return chainId === undefined || chainId === Network.chainId(offer.network)
}

/** Signs a permit of exactly the offer's amount to its spender, valid for the offer's timeout. */
export async function permitPayload(
  signer: EvmSigner,
  offer: PaymentRequirements,
  domain: Eip2612.Domain,
  publicClient: Client | undefined,
  now = Math.floor(Date.now() / 1000),
): Promise<Eip2612.Payload> {
  if (!publicClient)
    throw new BaseError('Paying by EIP-2612 permit needs to read the token’s nonce from the chain.', {
      code: 'invalid_config',
      hint: 'Create the scheme with exactEvmClient(signer, { publicClient }).',
    })
  const spender = offer.extra?.spender
  if (typeof spender !== 'string' || !isAddress(spender, { strict: false }))
    throw new BaseError('The permit offer names no spender (extra.spender).', { code: 'invalid_payment_requirements' })
  const chainId = publicClient.chain?.id ?? (await getChainId(publicClient))
  if (chainId !== domain.chainId)
    throw new BaseError(`The public client reads chain ${chainId}; the offer is on ${offer.network}.`, {
      code: 'invalid_config',
      hint: 'Give exactEvmClient a publicClient of the offer’s chain.',
    })
  const owner = getAddress(signer.address)
  const nonce = await readContract(publicClient, {
    address: domain.verifyingContract,
    abi: eip2612Abi,
    functionName: 'nonces',
    args: [owner],
  })
  const permit: Eip2612.Permit = {
    owner,
    spender: getAddress(spender),
    value: offer.amount,
    nonce: nonce.toString(),
    deadline: String(now + offer.maxTimeoutSeconds),
  }
  const signature = await signer.signTypedData(Eip2612.typedData(domain, permit) as never)
  return { signature, permit }
}
