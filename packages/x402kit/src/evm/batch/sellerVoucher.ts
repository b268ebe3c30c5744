/**
 * The seller's hot path of `batch-settlement` on EVM (x402 `specs/schemes/batch-settlement/`): a
 * voucher for a channel the seller already holds is checked with string compares, two Keccak hashes
 * and one native secp256k1 recovery (both on a worker thread where there is one) — no schema pass over addresses, no EIP-712 type walk, no I/O.
 */
import { type Address, encodeAbiParameters, type Hex, hexToBytes, keccak256, toBytes } from 'viem'
import { addressOfKey } from '../recover.ts'
import type { RecoveryThreads } from '../recoverThreads.ts'
import * as Channel from './Channel.ts'
import type { SellerChannelRecord } from './sellerStore.ts'

/** What the seller holds of a channel: its stored record, and what it learns while serving (not stored). */
export type SellerChannel = Readonly<Pick<SellerChannelRecord, 'id' | 'network' | 'config'>> &
  Omit<SellerChannelRecord, 'id' | 'network' | 'config'> & {
    /** The config's fields in lower case, joined: a payload naming this channel must carry exactly these. */
    readonly fingerprint: string
    /** Who signs the vouchers (payer authorizer, or payer), lower case. */
    readonly signer: string
    /** The signer's public key, once a voucher has shown it: later vouchers are compared to it without hashing it. */
    signerKey?: Uint8Array
    /** The voucher request being served now, and since when (ms): one at a time per channel. */
    serving?: { payment: object; since: number }
  }

/** The config's fields, lower case, in a fixed order; `undefined` when any is not of its wire type. */
export function fingerprintOf(config: unknown): string | undefined {
  if (typeof config !== 'object' || config === null) return undefined
  const { payer, payerAuthorizer, receiver, receiverAuthorizer, token, withdrawDelay, salt } = config as Record<string, unknown>
  if (
    typeof payer !== 'string' ||
    typeof payerAuthorizer !== 'string' ||
    typeof receiver !== 'string' ||
    typeof receiverAuthorizer !== 'string' ||
    typeof token !== 'string' ||
    typeof withdrawDelay !== 'number' ||
    typeof salt !== 'string'
  )
    return undefined
  return `${payer}|${payerAuthorizer}|${receiver}|${receiverAuthorizer}|${token}|${withdrawDelay}|${salt}`.toLowerCase()
}

const voucherTypeHash = keccak256(toBytes('Voucher(bytes32 channelId,uint128 maxClaimableAmount)'), 'bytes')
const domainTypeHash = keccak256(toBytes('EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)'))

/** The escrow's EIP-712 domain separator on a chain. */
export function domainSeparator(chainId: number, escrow: Address = Channel.escrowAddress): Uint8Array {
  return keccak256(
    encodeAbiParameters(
      [{ type: 'bytes32' }, { type: 'bytes32' }, { type: 'bytes32' }, { type: 'uint256' }, { type: 'address' }],
      [domainTypeHash, keccak256(toBytes(Channel.domain.name)), keccak256(toBytes(Channel.domain.version)), BigInt(chainId), escrow],
    ),
    'bytes',
  )
}

/** A voucher's EIP-712 struct encoding: its type hash, channel id and amount, 32 bytes each. */
export function voucherStruct(channelId: Hex, maxClaimableAmount: bigint): Uint8Array {
  const struct = new Uint8Array(96)
  struct.set(voucherTypeHash, 0)
  struct.set(hexToBytes(channelId), 32)
  // A uint128 in the last 16 bytes of its word, as two big-endian 64-bit halves.
  const words = new DataView(struct.buffer)
  words.setBigUint64(80, maxClaimableAmount >> 64n)
  words.setBigUint64(88, maxClaimableAmount & 0xffffffffffffffffn)
  return struct
}

const hexSignature = /^0x[0-9a-fA-F]{130}$/

/**
 * Whether `signature` over the voucher (its domain separator and struct) is the channel's signer's.
 * The key is recovered by `recovery` (off the event loop where it has threads, hashing included),
 * then compared to the key an earlier voucher showed, or for the first voucher by address, keeping
 * the key it shows.
 */
export async function signedByChannel(
  separator: Uint8Array,
  struct: Uint8Array,
  signature: unknown,
  channel: SellerChannel,
  recovery: RecoveryThreads,
): Promise<boolean> {
  if (typeof signature !== 'string' || !hexSignature.test(signature)) return false
  let key: Uint8Array | undefined
  try {
    key = await recovery.recoverTyped(separator, struct, Buffer.from(signature.slice(2), 'hex'))
  } catch {
    return false
  }
  if (!key) return false
  const known = channel.signerKey
  if (known) return Buffer.compare(key, known) === 0
  if (addressOfKey(key).toLowerCase() !== channel.signer) return false
  channel.signerKey = Uint8Array.from(key)
  return true
}

const bytes32 = /^0x[0-9a-fA-F]{64}$/
const uint128 = /^\d{1,39}$/
const maxUint128 = (1n << 128n) - 1n

/** A voucher's fields as sent, checked for form; `undefined` when malformed. */
export function readVoucher(voucher: unknown): { channelId: Hex; maxClaimableAmount: bigint; signature: Hex } | undefined {
  if (typeof voucher !== 'object' || voucher === null) return undefined
  const { channelId, maxClaimableAmount, signature } = voucher as Record<string, unknown>
  if (typeof channelId !== 'string' || !bytes32.test(channelId)) return undefined
  if (typeof maxClaimableAmount !== 'string' || !uint128.test(maxClaimableAmount)) return undefined
  if (typeof signature !== 'string') return undefined
  const amount = BigInt(maxClaimableAmount)
  if (amount > maxUint128) return undefined
  return { channelId: channelId.toLowerCase() as Hex, maxClaimableAmount: amount, signature: signature as Hex }
}
