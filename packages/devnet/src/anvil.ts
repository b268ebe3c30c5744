/**
 * Anvil as a child process: the binary from `@foundry-rs/anvil-linux-amd64` (never `npx anvil`,
 * whose kill leaves anvil running), on a free loopback port, ready once `eth_chainId` answers.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import net from 'node:net'
import path from 'node:path'
import { type Hex, toHex } from 'viem'
import { mnemonicToAccount } from 'viem/accounts'

/** Anvil's default mnemonic; its dev accounts are `m/44'/60'/0'/0/{index}`. */
export const ANVIL_MNEMONIC = 'test test test test test test test test test test test junk'
export const CHAIN_ID = 31337

export type AnvilOptions = {
  accounts: number
  blockTime?: number | undefined
  gasLimit?: bigint | undefined
  port?: number | undefined
}

export type Anvil = {
  rpcUrl: string
  port: number
  /** SIGTERM, SIGKILL after 2 s; resolves once the process has exited. */
  stop(): Promise<void>
}

export class AnvilError extends Error {
  override name = 'AnvilError'
  constructor(
    message: string,
    readonly stderr = '',
  ) {
    super(stderr ? `${message}\nanvil stderr:\n${stderr.trim()}` : message)
  }
  get addressInUse(): boolean {
    return /address already in use/i.test(this.stderr)
  }
}

const READY_TIMEOUT_MS = 15_000
// A bare --prune-history keeps no past state, so a read of "latest" fails whenever a block lands
// between resolving the tag and executing the read; a few recent states make that race harmless.
const KEPT_STATES = 16
const KILL_GRACE_MS = 2_000
const PORT_ATTEMPTS = 4

export function anvilBinary(): string {
  const manifest = createRequire(import.meta.url).resolve('@foundry-rs/anvil-linux-amd64/package.json')
  return path.join(path.dirname(manifest), 'bin', 'anvil')
}

export async function startAnvil(options: AnvilOptions): Promise<Anvil> {
  if (options.port !== undefined) {
    // Checked first: the readiness probe cannot tell another anvil on this port from ours.
    await bindable(options.port).catch((error: NodeJS.ErrnoException) => {
      throw new AnvilError(`port ${options.port} on 127.0.0.1 is not free (${error.code ?? error.message})`)
    })
    return launch(options.port, options)
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch(await bindable(0), options)
    } catch (error) {
      // Another process can bind the probed port before anvil does.
      if (!(error instanceof AnvilError && error.addressInUse) || attempt >= PORT_ATTEMPTS) throw error
    }
  }
}

const keys: Hex[] = []

/** Private keys of anvil's first `count` dev accounts (derived once, then cached). */
export function anvilPrivateKeys(count: number): Hex[] {
  if (keys.length < count) {
    // Deriving from the parent node skips one mnemonic-to-seed PBKDF2 per account.
    const parent = mnemonicToAccount(ANVIL_MNEMONIC, { path: "m/44'/60'/0'/0" }).getHdKey()
    for (let index = keys.length; index < count; index++) {
      const { privateKey } = parent.deriveChild(index)
      if (!privateKey) throw new Error(`anvilPrivateKeys: no private key at index ${index}`)
      keys.push(toHex(privateKey))
    }
  }
  return keys.slice(0, count)
}

async function launch(port: number, options: AnvilOptions): Promise<Anvil> {
  const args = ['--host', '127.0.0.1', '--port', String(port), '--chain-id', String(CHAIN_ID)]
  args.push('--accounts', String(options.accounts), '--prune-history', String(KEPT_STATES), '--quiet')
  if (options.blockTime && options.blockTime > 0) args.push('--block-time', String(options.blockTime))
  if (options.gasLimit !== undefined) args.push('--gas-limit', options.gasLimit.toString())

  const child = spawn(anvilBinary(), args, { stdio: ['ignore', 'ignore', 'pipe'] })
  if (!process.listeners('exit').includes(killRunning)) process.on('exit', killRunning)
  running.add(child)
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_000)
  })
  const exited = new Promise<{ exit: string }>((resolve) => {
    child.once('close', (code, signal) => {
      running.delete(child)
      resolve({ exit: `exited (${signal ?? `code ${code}`})` })
    })
    child.on('error', (error) => resolve({ exit: `failed to start (${error.message})` }))
  })

  const rpcUrl = `http://127.0.0.1:${port}`
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS)
      await exited
      clearTimeout(timer)
    }
  }

  const deadline = Date.now() + READY_TIMEOUT_MS
  for (;;) {
    const outcome = await Promise.race([chainId(rpcUrl).catch(() => undefined), exited])
    if (typeof outcome === 'object') {
      throw new AnvilError(`anvil ${outcome.exit} before answering on ${rpcUrl}`, stderr)
    }
    if (outcome === toHex(CHAIN_ID)) break
    if (Date.now() > deadline) {
      await stop()
      throw new AnvilError(`anvil did not answer eth_chainId on ${rpcUrl} within ${READY_TIMEOUT_MS} ms`, stderr)
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return { rpcUrl, port, stop }
}

async function chainId(rpcUrl: string): Promise<string | undefined> {
  const response = await fetch(rpcUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
    signal: AbortSignal.timeout(1_000),
  })
  const body = (await response.json()) as { result?: string }
  return body.result
}

/** Binds and releases `port` on loopback; resolves with the port bound (a free one for 0). */
function bindable(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

const running = new Set<ChildProcess>()

// One 'exit' handler for all children, so a run that crashes or skips stop() leaves no anvil behind.
function killRunning() {
  for (const child of running) child.kill('SIGKILL')
}
