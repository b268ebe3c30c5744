/**
 * The devnet's setup transactions: all from one account, signed with explicit nonces and gas limits
 * so that none waits for the previous one to be mined, then checked together once mined.
 *
 * They reach the node one after the other, each once the node has taken the one before: anvil's
 * automine can park a transaction handed to it concurrently with its predecessor as "queued", with
 * no nonce gap, and never mine it (or anything after it).
 */
import { type Address, type Chain, type Client, getContractAddress, type Hex, type LocalAccount, parseGwei, type Transport } from 'viem'
import { getTransactionCount, getTransactionReceipt, sendRawTransaction } from 'viem/actions'

export type Batch = {
  readonly sender: Address
  /** Signs and sends a call to `to`, or a deployment when `to` is undefined; resolves with `to` or the new contract's address. */
  send(to: Address | undefined, data: Hex, gas: bigint): Promise<Address>
  /** Resolves once every transaction sent is mined and succeeded; `mine` is used when the chain does not automine. */
  mined(mine: () => Promise<void>): Promise<void>
}

/** A batch from `account`, starting at its pending nonce. */
export async function createBatch(client: Client<Transport, Chain>, account: LocalAccount): Promise<Batch> {
  let nonce = await getTransactionCount(client, { address: account.address, blockTag: 'pending' })
  const sent: Promise<Hex>[] = []
  let previous: Promise<unknown> = Promise.resolve()
  return {
    sender: account.address,
    async send(to, data, gas) {
      const created = getContractAddress({ from: account.address, nonce: BigInt(nonce) })
      const serializedTransaction = await account.signTransaction({
        chainId: client.chain.id,
        type: 'eip1559',
        nonce: nonce++,
        to,
        data,
        gas,
        maxFeePerGas: parseGwei('100'),
        maxPriorityFeePerGas: 0n,
      })
      const hash = previous.then(() => sendRawTransaction(client, { serializedTransaction }))
      previous = hash.catch(() => undefined) // rejections surface from mined(), not as unhandled ones
      sent.push(hash)
      return to ?? created
    },
    async mined(mine) {
      const hashes = await Promise.all(sent)
      const last = hashes.at(-1)
      if (!last) return
      for (let attempt = 0; ; attempt++) {
        if (await getTransactionReceipt(client, { hash: last }).catch(() => undefined)) break
        if (attempt >= 50) throw new Error(`devnet setup: transaction ${last} not mined after 50 blocks`)
        await mine()
      }
      const receipts = await Promise.all(hashes.map((hash) => getTransactionReceipt(client, { hash })))
      const failed = receipts.findIndex((receipt) => receipt.status !== 'success')
      if (failed >= 0) throw new Error(`devnet setup: transaction #${failed} (${hashes[failed]}) reverted`)
    },
  }
}
