import { type ChildProcess, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Network } from 'x402kit'

const main = fileURLToPath(new URL('./main.ts', import.meta.url))

type Run = { code: number | null; stdout: string; stderr: string }

function run(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', main, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => (stdout += chunk))
    child.stderr.on('data', (chunk) => (stderr += chunk))
    child.on('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

type Stack = {
  rpcUrl: string
  chainId: number
  usdc: string
  facilitatorUrl: string
  apiUrl: string
  payerPrivateKey: string
  payTo: string
}

describe('x402 dev --once', () => {
  it('pays every way the demo offers, prints the stack as JSON and exits 0', async () => {
    const { code, stdout, stderr } = await run(['dev', '--once'])
    expect(stderr).toBe('')
    expect(code).toBe(0)
    expect(stdout).toMatch(/All 9 calls served and every payment settled on chain; 500 more over one channel\./)
    // EIP-3009 twice before the response, a permit, a transaction of the agent's own, and the payment that bought a credential.
    expect(stdout.match(/transaction {2}0x[0-9a-f]{64}/g)).toHaveLength(5)
    // One EIP-3009 payment answered before its block, then settled in a batch.
    expect(stdout).toMatch(/^paid +GET \/quote[^\n]*\n[^\n]*\n +settlement +queued/m)
    expect(stdout).toMatch(/^settled +0\.0025 USDC queued after its response reached the seller in a batch$/m)
    expect(stdout.match(/^paid +GET \/report/m)).not.toBeNull()
    expect(stdout.match(/^paid +GET \/archive/m)).not.toBeNull()
    expect(stdout.match(/^credential GET \/feed/gm)).toHaveLength(3)
    // 500 calls over one channel: one deposit, then a claim and a sweep; three transactions in all.
    expect(stdout).toMatch(/^channel +GET \/tick × 500 over one channel → 500 served in [\d.]+ s \(\d+ calls\/s\)$/m)
    expect(stdout).toMatch(/^ +paid +\$0\.05 in 500 cumulative vouchers of \$0\.0001, the last for \$0\.05$/m)
    expect(stdout).toMatch(/^ +deposit +1 of \$1 \(gasless EIP-3009\): 0x[0-9a-f]{64}$/m)
    expect(stdout).toMatch(/^ +claim +\$0\.05 claimed and swept to the seller: 0x[0-9a-f]{64}, 0x[0-9a-f]{64}$/m)
    expect(stdout).toMatch(/^ +on chain +3 transactions for 500 calls;/m)
    expect(stdout).toMatch(/^ +agent .*\$0\.95 still held in the channel$/m)
    const last = stdout.trim().split('\n').at(-1)!
    const stack = JSON.parse(last) as Stack
    expect(Object.keys(stack)).toEqual(['rpcUrl', 'chainId', 'usdc', 'facilitatorUrl', 'apiUrl', 'payerPrivateKey', 'payTo'])
    expect(stack.chainId).toBe(31337)
    // Clients in other processes know the local USDC from the network table: the deployment must land there.
    expect(stack.usdc).toBe(Network.asset('eip155:31337')?.address)
    expect(stack.apiUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/weather$/)
  })
})

describe('x402 dev, then x402 pay against it', () => {
  let dev: ChildProcess
  let stack: Stack

  beforeAll(async () => {
    dev = spawn(process.execPath, ['--import', 'tsx', main, 'dev', '--channel-calls', '20'], { stdio: ['ignore', 'pipe', 'inherit'] })
    const lines = createInterface({ input: dev.stdout! })
    stack = await new Promise<Stack>((resolve, reject) => {
      lines.on('line', (line) => {
        if (line.startsWith('{')) resolve(JSON.parse(line) as Stack)
      })
      dev.on('exit', (code) => reject(new Error(`x402 dev exited with ${code}`)))
    })
  })

  afterAll(async () => {
    if (dev.exitCode === null) {
      dev.kill('SIGINT')
      await new Promise((resolve) => dev.once('exit', resolve))
    }
  })

  const balanceOf = async (address: string) => {
    const data = `0x70a08231${address.slice(2).toLowerCase().padStart(64, '0')}`
    const response = await fetch(stack.rpcUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_call', params: [{ to: stack.usdc, data }, 'latest'] }),
    })
    return BigInt(((await response.json()) as { result: string }).result)
  }

  it('pays one URL and prints the response and the settlement', async () => {
    const before = await balanceOf(stack.payTo)
    const { code, stdout } = await run(['pay', stack.apiUrl, '--max', '$0.01'], { X402_PRIVATE_KEY: stack.payerPrivateKey })
    expect(code).toBe(0)
    expect(stdout).toMatch(/^200 OK/)
    expect(stdout).toMatch(/"temperatureC"/)
    expect(stdout).toMatch(/"transaction": "0x[0-9a-f]{64}"/)
    expect(await balanceOf(stack.payTo)).toBe(before + 1000n)
  })

  it('refuses to pay above --max, says why, and charges nothing', async () => {
    const before = await balanceOf(stack.payTo)
    const { code, stdout } = await run(['pay', stack.apiUrl, '--key', stack.payerPrivateKey, '--max', '$0.0005'])
    expect(code).toBe(1)
    expect(stdout).toMatch(/^402 Payment Required/)
    expect(stdout).toMatch(/"reason": "over_budget"/)
    expect(await balanceOf(stack.payTo)).toBe(before)
  })

  it('explains a missing or malformed key', async () => {
    const { code, stderr } = await run(['pay', stack.apiUrl], { X402_PRIVATE_KEY: 'not-a-key' })
    expect(code).toBe(1)
    expect(stderr).toMatch(/A payer key is needed/)
    expect(stderr).toMatch(/X402_PRIVATE_KEY/)
  })

  it('stops everything it started on SIGINT', async () => {
    dev.kill('SIGINT')
    const code = await new Promise((resolve) => dev.once('exit', resolve))
    expect(code).toBe(0)
    await expect(fetch(stack.rpcUrl, { method: 'POST', body: '{}' })).rejects.toThrow()
    await expect(fetch(stack.apiUrl)).rejects.toThrow()
  })
})

describe('x402 usage errors', () => {
  it('names an unknown command and shows usage', async () => {
    const { code, stderr } = await run(['fly'])
    expect(code).toBe(1)
    expect(stderr).toMatch(/Unknown command "fly"/)
    expect(stderr).toMatch(/x402 pay <url>/)
  })

  it('refuses a URL that is not one', async () => {
    const { code, stderr } = await run(['pay', 'nowhere', '--key', `0x${'11'.repeat(32)}`])
    expect(code).toBe(1)
    expect(stderr).toMatch(/Not a URL: nowhere/)
  })
})
