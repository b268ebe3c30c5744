import { HttpRequestError, InternalRpcError, InvalidInputRpcError, RpcRequestError, TimeoutError } from 'viem'
import { describe, expect, it } from 'vitest'
import * as NonceManager from './NonceManager.ts'

function counting(counts: number[]) {
  let reads = 0
  const manager = NonceManager.create(async () => counts[Math.min(reads++, counts.length - 1)]!)
  return { manager, reads: () => reads }
}

const rpcError = (message: string, code = -32000) =>
  new InvalidInputRpcError(new RpcRequestError({ body: {}, url: 'http://node', error: { code, message } }))

describe('NonceManager', () => {
  it('reads the chain once, then hands out consecutive nonces without a round trip', async () => {
    const { manager, reads } = counting([7])
    expect(() => manager.reserve()).toThrow(/before ready/)
    await Promise.all([manager.ready(), manager.ready(), manager.ready()])
    const nonces = Array.from({ length: 50 }, () => manager.reserve())
    expect(nonces).toEqual(Array.from({ length: 50 }, (_, i) => 7 + i))
    await manager.ready()
    expect(reads()).toBe(1)
  })

  it('takes back the top nonce, and reuses a refused nonce below the top before moving on', async () => {
    const { manager } = counting([0])
    await manager.ready()
    const [a, b, c] = [manager.reserve(), manager.reserve(), manager.reserve()]
    expect([a, b, c]).toEqual([0, 1, 2])
    manager.release(c)
    expect(manager.reserve()).toBe(2)
    manager.release(a)
    manager.release(b)
    // 0 and 1 are gaps that nonce 2 waits behind: they go out first.
    expect([manager.reserve(), manager.reserve(), manager.reserve()]).toEqual([0, 1, 3])
  })

  it('collapses gaps into the top when the top is released too', async () => {
    const { manager } = counting([10])
    await manager.ready()
    const nonces = [manager.reserve(), manager.reserve(), manager.reserve()]
    manager.release(nonces[1]!)
    manager.release(nonces[2]!)
    expect([manager.reserve(), manager.reserve()]).toEqual([11, 12])
  })

  it('resync only moves forward and drops gaps the chain has filled', async () => {
    const { manager } = counting([0, 5, 2])
    await manager.ready()
    for (let i = 0; i < 4; i++) manager.reserve()
    manager.release(1)
    await manager.resync() // chain says 5: nonce 1 was taken by someone else
    expect(manager.reserve()).toBe(5)
    await manager.resync() // a lagging node says 2: keep our higher count
    expect(manager.reserve()).toBe(6)
  })

  it('a failed first read is retried by the next ready()', async () => {
    let calls = 0
    const manager = NonceManager.create(async () => {
      if (calls++ === 0) throw new Error('down')
      return 3
    })
    await expect(manager.ready()).rejects.toThrow('down')
    await manager.ready()
    expect(manager.reserve()).toBe(3)
  })
})

describe('NonceManager.classifySendError', () => {
  it('tells a node that has the transaction, a nonce conflict, a refusal and no answer apart', () => {
    expect(NonceManager.classifySendError(rpcError('already known'))).toBe('known')
    expect(NonceManager.classifySendError(rpcError('nonce too low: next nonce 5, tx nonce 3'))).toBe('conflict')
    expect(NonceManager.classifySendError(rpcError('replacement transaction underpriced'))).toBe('conflict')
    expect(NonceManager.classifySendError(rpcError('insufficient funds for gas * price + value'))).toBe('refused')
    expect(NonceManager.classifySendError(new InternalRpcError(new Error('internal')))).toBe('unknown')
    expect(NonceManager.classifySendError(new TimeoutError({ body: {}, url: 'http://node' }))).toBe('unknown')
    expect(NonceManager.classifySendError(new HttpRequestError({ url: 'http://node', status: 502 }))).toBe('unknown')
    expect(NonceManager.classifySendError(new HttpRequestError({ url: 'http://node', cause: new Error('ECONNRESET') }))).toBe('unknown')
  })
})
