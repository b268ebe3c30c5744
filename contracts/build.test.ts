import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { getAbiItem, toFunctionSelector } from 'viem'
import { expect, it } from 'vitest'
import { settlementBatcherAbi as libraryAbi } from '../packages/x402kit/src/evm/exact/batch/abi.ts'
import { permitTokenAbi, permitTokenBytecode, settlementBatcherAbi } from './artifacts/index.ts'
import { artifactsDir, compile } from './build.ts'

it('the committed artifacts are what contracts/src compiles to (run `npx tsx contracts/build.ts`)', () => {
  const generated = compile()
  expect(readdirSync(artifactsDir).sort()).toEqual(Object.keys(generated).sort())
  for (const [file, content] of Object.entries(generated)) expect(readFileSync(path.join(artifactsDir, file), 'utf8'), file).toBe(content)
})

it('PermitToken is an ERC-20 with EIP-2612 permit, an owner-only mint and no EIP-3009', () => {
  const functions = permitTokenAbi.flatMap((item) => (item.type === 'function' ? [item.name] : []))
  expect(functions).toEqual(
    expect.arrayContaining(['permit', 'nonces', 'DOMAIN_SEPARATOR', 'eip712Domain', 'transferFrom', 'mint', 'owner']),
  )
  expect(functions).not.toContain('transferWithAuthorization')
  expect(permitTokenBytecode).toMatch(/^0x[0-9a-f]+$/)
})

it("SettlementBatcher's ABI in the library is the compiled one, and its settle selector is fixed", () => {
  const withoutInternalTypes = (abi: readonly unknown[]) =>
    JSON.parse(JSON.stringify(abi, (key, value) => (key === 'internalType' || key === 'anonymous' ? undefined : value)))
  const sorted = (abi: readonly { name?: string }[]) => [...abi].sort((a, b) => (a.name ?? '').localeCompare(b.name ?? ''))
  expect(sorted(withoutInternalTypes(libraryAbi))).toEqual(sorted(withoutInternalTypes(settlementBatcherAbi)))
  expect(toFunctionSelector(getAbiItem({ abi: libraryAbi, name: 'settle' }))).toMatchInlineSnapshot(`"0xab347961"`)
})
