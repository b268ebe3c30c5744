/**
 * Signer: what an EVM payer needs — an address and EIP-712 signing. A viem local account (private
 * key, mnemonic), a viem wallet client (JSON-RPC wallet) or an EIP-1193 provider all become one.
 */
import {
  type Account,
  type Address,
  createWalletClient,
  custom,
  type EIP1193Provider,
  type Hex,
  type TypedDataDefinition,
  type WalletClient,
} from 'viem'
import { BaseError } from '../core/Errors.ts'

export type EvmSigner = {
  readonly address: Address
  signTypedData(typedData: TypedDataDefinition): Promise<Hex>
}

export type EvmSignerSource = EvmSigner | Account | WalletClient | { provider: EIP1193Provider; address?: Address }

/**
 * Turns any viem account, wallet client or EIP-1193 provider into a signer.
 *
 * @example
 * ```ts
 * import { privateKeyToAccount } from 'viem/accounts'
 * import { toEvmSigner } from 'x402kit/evm'
 * const signer = await toEvmSigner(privateKeyToAccount(key))
 * ```
 */
export async function toEvmSigner(source: EvmSignerSource): Promise<EvmSigner> {
  if ('provider' in source) {
    const wallet = createWalletClient({ transport: custom(source.provider) })
    const address = source.address ?? (await wallet.requestAddresses())[0]
    if (!address) throw new BaseError('The EIP-1193 provider has no account.', { hint: 'Connect a wallet account first.' })
    return { address, signTypedData: (typedData) => wallet.signTypedData({ account: address, ...(typedData as object) } as never) }
  }
  if ('transport' in source && 'request' in source) {
    const wallet = source as WalletClient
    const address = wallet.account?.address ?? (await wallet.getAddresses())[0]
    if (!address) throw new BaseError('The wallet client has no account.', { hint: 'Create it with an account, or connect one.' })
    return {
      address,
      signTypedData: (typedData) => wallet.signTypedData({ account: wallet.account ?? address, ...(typedData as object) } as never),
    }
  }
  const account = source as Account | EvmSigner
  if ('signTypedData' in account && typeof account.signTypedData === 'function') {
    const sign = account.signTypedData.bind(account) as EvmSigner['signTypedData']
    return { address: account.address, signTypedData: sign }
  }
  throw new BaseError('This account cannot sign typed data.', {
    hint: 'Pass a local account (privateKeyToAccount), a wallet client, or { provider } for an EIP-1193 provider.',
  })
}
