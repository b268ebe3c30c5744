import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { expect, it } from 'vitest'
import { permitTokenAbi, permitTokenBytecode } from './artifacts/index.ts'
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
