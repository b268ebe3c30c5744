import {
  concat,
  createPublicClient,
  custom,
  defineChain,
  domainSeparator,
  encodeAbiParameters,
  hashTypedData,
  keccak256,
  recoverTypedDataAddress,
  toBytes,
} from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { describe, expect, it } from 'vitest'
import { BaseError } from '../../../core/Errors.ts'
import type { Payment } from '../../../core/Facilitator.ts'
import type { Asset } from '../../../core/Network.ts'
import { exactEvmClient } from '../client.ts'
import * as Eip2612 from '../Eip2612.ts'
import { exactEvmServer } from '../server.ts'
import { settlementKey } from './verify.ts'

const network = 'eip155:31337'
const token = '0x8A791620dd6260079BF849Dc5567aDC3F2FdC318'
const spender = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8'
const payTo = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
const pusd: Asset = { address: token, name: 'Permit Dollar', version: '1', decimals: 6, symbol: 'PUSD', transfer: 'eip2612' }

/** A public client of `chainId` whose token answers `nonces(owner)` with `nonce`, recording what was asked. */
function chainReading(nonce: bigint, chainId = 31337) {
  const asked: string[] = []
  const client = createPublicClient({
    chain: defineChain({
      id: chainId,
      name: 'test',
      nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
      rpcUrls: { default: { http: [] } },
    }),
    transport: custom({
      async request({ method, params }) {
        asked.push(method)
        if (method === 'eth_call') {
          expect((params as [{ to: string }])[0].to.toLowerCase()).toBe(token.toLowerCase())
          return encodeAbiParameters([{ type: 'uint256' }], [nonce])
        }
        throw new Error(`unexpected ${method}`)
      },
    }),
  })
  return { client, asked }
}

describe('exactEvmServer with a permit token', () => {
  it('offers the permit method and the spender, from the route or the scheme default', () => {
    const fromRoute = exactEvmServer().requirements({
      price: '$0.01',
      network,
      payTo,
      asset: pusd,
      extra: { spender: spender.toLowerCase() },
    })
    expect(fromRoute).toEqual({
      scheme: 'exact',
      network,
      amount: '10000',
      asset: token,
      payTo,
      maxTimeoutSeconds: 300,
      extra: { name: 'Permit Dollar', version: '1', assetTransferMethod: 'eip2612', spender },
    })
    const fromDefault = exactEvmServer({ spender }).requirements({ price: '$0.01', network, payTo, asset: pusd })
    expect(fromDefault.extra).toEqual(fromRoute.extra)
  })

  it('refuses a permit offer without a spender, and leaves other tokens as they were', () => {
    const missing = () => exactEvmServer().requirements({ price: '$0.01', network, payTo, asset: pusd })
    expect(missing).toThrow(BaseError)
    expect(missing).toThrow(/needs a spender address[\s\S]*Hint: Give the route extra: \{ spender \}/)
    expect(() => exactEvmServer().requirements({ price: '$0.01', network, payTo, asset: pusd, extra: { spender: 'me' } })).toThrow(
      /needs a spender/,
    )
    const usdc = exactEvmServer({ spender }).requirements({ price: '$0.01', network, payTo, asset: { ...pusd, transfer: 'eip3009' } })
    expect(usdc.extra).toEqual({ name: 'Permit Dollar', version: '1' })
  })
})

describe('exactEvmClient with permit offers', () => {
  const offer = exactEvmServer({ spender }).requirements({ price: { atomic: '2500' }, network, payTo, asset: pusd })
  const account = privateKeyToAccount(generatePrivateKey())

  it('pays a permit offer only with chain access to the offer’s chain, and only when it names a spender', () => {
    expect(exactEvmClient(account).canPay(offer)).toBe(false)
    expect(exactEvmClient(account, { publicClient: chainReading(0n, 1).client }).canPay(offer)).toBe(false)
    const client = exactEvmClient(account, { publicClient: chainReading(0n).client })
    expect(client.canPay(offer)).toBe(true)
    expect(client.canPay({ ...offer, extra: { ...offer.extra, spender: undefined } })).toBe(false)
    expect(client.canPay({ ...offer, extra: { ...offer.extra, assetTransferMethod: 'permit2' } })).toBe(false)
    const { assetTransferMethod, spender: _, ...eip3009 } = offer.extra ?? {}
    expect(exactEvmClient(account).canPay({ ...offer, extra: eip3009 })).toBe(true)
  })

  it('signs a permit of the amount to the spender over the token’s nonce, valid for the offer’s timeout', async () => {
    const { client, asked } = chainReading(5n)
    const before = Math.floor(Date.now() / 1000)
    const payload = Eip2612.payload.parse(await exactEvmClient(account, { publicClient: client }).createPayload(offer, { resource: 'x' }))
    expect(asked).toEqual(['eth_call'])
    expect(payload.permit).toMatchObject({ owner: account.address, spender, value: '2500', nonce: '5' })
    expect(Number(payload.permit.deadline) - before).toBeGreaterThanOrEqual(300)
    expect(Number(payload.permit.deadline) - before).toBeLessThanOrEqual(301)
    const domain = { name: 'Permit Dollar', version: '1', chainId: 31337, verifyingContract: token } as const
    expect(
      await recoverTypedDataAddress({ ...Eip2612.typedData(domain, payload.permit), signature: payload.signature as `0x${string}` }),
    ).toBe(account.address)
  })

  it('says why it cannot sign a permit without chain access', async () => {
    await expect(exactEvmClient(account).createPayload(offer, { resource: 'x' })).rejects.toThrow(
      /needs to read the token’s nonce[\s\S]*Hint: Create the scheme with exactEvmClient\(signer, \{ publicClient \}\)/,
    )
  })
})

describe('Eip2612', () => {
  const permit = { owner: payTo, spender, value: '1', nonce: '0', deadline: '1' }

  it('hashes the Permit struct under the token’s domain as EIP-2612 specifies', () => {
    const domain = { name: 'Permit Dollar', version: '1', chainId: 31337, verifyingContract: token } as const
    expect(Eip2612.typedData(domain, permit).types).toMatchInlineSnapshot(`
      {
        "Permit": [
          {
            "name": "owner",
            "type": "address",
          },
          {
            "name": "spender",
            "type": "address",
          },
          {
            "name": "value",
            "type": "uint256",
          },
          {
            "name": "nonce",
            "type": "uint256",
          },
          {
            "name": "deadline",
            "type": "uint256",
          },
        ],
      }
    `)
    // What ERC20Permit hashes on chain, spelled out.
    const typeHash = keccak256(toBytes('Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)'))
    expect(typeHash).toBe('0x6e71edae12b1b97f4d1f60370fef10105fa2faae0126114a169c64845d6126c9')
    const structHash = keccak256(
      encodeAbiParameters(
        ['bytes32', 'address', 'address', 'uint256', 'uint256', 'uint256'].map((type) => ({ type })),
        [typeHash, permit.owner, permit.spender, 1n, 0n, 1n],
      ),
    )
    expect(hashTypedData(Eip2612.typedData(domain, permit))).toBe(keccak256(concat(['0x1901', domainSeparator({ domain }), structHash])))
  })

  it('tells permit payloads from EIP-3009 ones by shape, and keys them by owner and nonce', () => {
    expect(Eip2612.isPayload({ signature: '0x', permit })).toBe(true)
    expect(Eip2612.isPayload({ signature: '0x', authorization: {} })).toBe(false)
    expect(Eip2612.isPayload({ permit, authorization: {} })).toBe(false)
    expect(Eip2612.isPayload(null)).toBe(false)
    const requirements = exactEvmServer({ spender }).requirements({ price: '$0.01', network, payTo, asset: pusd })
    const payment = (nonce: string): Payment => ({
      requirements,
      payload: { x402Version: 2, accepted: requirements, payload: { signature: `0x${'1'.repeat(130)}`, permit: { ...permit, nonce } } },
    })
    // Leading zeros name the same on-chain nonce, so the same key.
    expect(settlementKey(payment('007'))).toBe(settlementKey(payment('7')))
    expect(settlementKey(payment('7'))).toBe(`${network}:${token}:${payTo}:permit:7`.toLowerCase())
  })
})
