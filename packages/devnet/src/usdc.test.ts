import { formatAbiItem } from 'viem/utils'
import { describe, expect, it } from 'vitest'
import { artifacts, FIAT_TOKEN_ABI, linkBytecode, USDC_ABI } from './usdc.ts'

describe('linkBytecode', () => {
  const library = '0x5FbDB2315678afecb367f032d93F642f64180aa3'

  it('writes the library address at every linkReferences offset', () => {
    const linked = linkBytecode(artifacts.FiatTokenV2_2, { SignatureChecker: library })
    const offsets = artifacts.FiatTokenV2_2.linkReferences['contracts/util/SignatureChecker.sol']?.SignatureChecker ?? []
    expect(offsets.map(({ start, length }) => `0x${linked.slice(2 + start * 2, 2 + (start + length) * 2)}`)).toEqual([
      library.toLowerCase(),
      library.toLowerCase(),
    ])
    expect(linked).toHaveLength(artifacts.FiatTokenV2_2.bytecode.length)
  })

  it('refuses to leave a library unlinked', () => {
    expect(() => linkBytecode(artifacts.FiatTokenV2_2, {})).toThrow(/needs library .*SignatureChecker/)
  })
})

describe('USDC_ABI', () => {
  it('is a subset of Circle’s FiatTokenV2_2 ABI', () => {
    const circle = new Set(FIAT_TOKEN_ABI.map((item) => formatAbiItem(item as never)))
    for (const item of USDC_ABI) expect(circle).toContain(formatAbiItem(item))
  })
})
