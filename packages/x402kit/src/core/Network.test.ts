import { describe, expect, it } from 'vitest'
import * as Network from './Network.ts'

describe('Network', () => {
  it.each([
    ['base', 'eip155:8453', 8453],
    ['eip155:8453', 'eip155:8453', 8453],
    ['base-sepolia', 'eip155:84532', 84532],
    ['eip155:31337', 'eip155:31337', 31337],
    ['eip155:999999', 'eip155:999999', 999999],
  ])('resolves %s', (name, caip2, chainId) => {
    expect(Network.toCaip2(name)).toBe(caip2)
    expect(Network.chainId(name)).toBe(chainId)
  })

  it('knows USDC on Base and Base Sepolia with their EIP-712 domains', () => {
    expect(Network.asset('eip155:8453')).toMatchObject({
      address: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913',
      name: 'USD Coin',
      version: '2',
      decimals: 6,
    })
    expect(Network.asset('base-sepolia')).toMatchObject({
      address: '0x036CbD53842c5426634e7929541eC2318f3dCF7e',
      name: 'USDC',
      version: '2',
    })
    expect(Network.asset('eip155:8453', '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913')?.symbol).toBe('USDC')
  })

  it('refuses names it does not know, clearly', () => {
    expect(() => Network.get('solana-mainnet')).toThrow(/Unknown network "solana-mainnet"/)
    expect(() => Network.get('eip155:abc')).toThrow(/Unknown network/)
    expect(Network.find('nope')).toBeUndefined()
    expect(() => Network.toV1Name('eip155:42161')).toThrow(/no version 1 name/)
  })

  it('registers a local asset', () => {
    Network.registerAsset('eip155:31337', 31337, {
      address: '0x0000000000000000000000000000000000000001',
      name: 'USD Coin',
      version: '2',
      decimals: 6,
      symbol: 'USDC',
      transfer: 'eip3009',
    })
    expect(Network.asset('localhost')?.address).toBe('0x0000000000000000000000000000000000000001')
  })
})
