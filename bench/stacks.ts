/**
 * The two stacks under test, each on a local chain of its own: ours (x402kit facilitator service on
 * PGlite, x402kit paywall, `wrapFetch`) and the reference (`@x402/*` as `test/reference.ts` assembles
 * it). Facilitator and resource server each run in a child process (`serve.ts`); the payers run here.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { type SpendControlAsset, x402Client, x402HTTPClient } from '@x402/core/client'
import { decodePaymentResponseHeader } from '@x402/core/http'
import { HTTPFacilitatorClient } from '@x402/core/server'
import { ExactEvmScheme } from '@x402/evm/exact/client'
import { type Devnet, startDevnet } from '@x402kit/devnet'
import type { Address } from 'viem'
import { type PrivateKeyAccount, privateKeyToAccount } from 'viem/accounts'
import { HttpHeader, type Payment, PaymentRequired } from 'x402kit'
import { getPaymentResult, wrapFetch } from 'x402kit/client'
import { exactEvmClient, toEvmSigner } from 'x402kit/evm'
import { httpFacilitator } from 'x402kit/facilitator'
import { referenceFetch } from '../test/reference.ts'
import { childNamed, type Processes } from './cpu.ts'
import { type RoleReply, type RoleStart, registerUsdc } from './serve.ts'

export type StackName = 'ours' | 'reference'

/** What happened to one payment: settled on chain, or why not. */
export type Outcome = { ok: true } | { ok: false; reason: string }

/** One payment taken a protocol step at a time with a stack's own pieces, for the latency split. */
export type Steps = {
  /** The unpaid request, answered 402 and decoded. */
  ask(): Promise<{ sign(account: PrivateKeyAccount): Promise<{ verify(): Promise<Outcome>; settle(): Promise<Outcome> }> }>
}

export type Stack = {
  name: StackName
  blockTime: number
  devnet: Devnet
  resourceUrl: string
  payTo: Address
  /** The facilitator's signer key's address: it sends every settlement. */
  signer: Address
  /** Funded accounts, one per concurrent payer. */
  payers: PrivateKeyAccount[]
  steps: Steps
  /** The processes of the stack by role, for CPU accounting. */
  processes: Processes
  /** A paying client of one payer; each call is one paid request, client → server → facilitator → chain. */
  client(account: PrivateKeyAccount): (signal: AbortSignal) => Promise<Outcome>
  close(): Promise<void>
}

export type StackOptions = { blockTime: number; accounts: number; gasLimit: bigint; framework: 'express' | 'hono' }

/** The price of the paid route, in atomic USDC (6 decimals): $0.001. */
export const priceAtomic = 1_000n

const startTimeoutMs = 30_000
const stopTimeoutMs = 10_000

/**
 * Starts a fresh devnet and one stack on it. Devnet account 0 is the facilitator's signer key,
 * account 1 the payTo, the rest are payers.
 */
export async function startStack(name: StackName, options: StackOptions): Promise<Stack> {
  const devnet = await startChain(options)
  const stops: (() => Promise<void>)[] = [devnet.stop]
  const close = async () => {
    for (const stop of stops.splice(0).reverse()) await stop().catch((error) => console.error(`bench: stopping ${name} failed`, error))
  }
  try {
    const [signer, receiver, ...payerAccounts] = devnet.accounts
    const payTo = receiver!.address
    const base = {
      rpcUrl: devnet.rpcUrl,
      network: devnet.network,
      chainId: devnet.chainId,
      usdc: devnet.usdc,
      blockTime: options.blockTime,
      amount: priceAtomic.toString(),
    }
    registerUsdc(base)
    const facilitator = await spawnRole({ ...base, role: `${name}-facilitator`, signerKey: signer!.privateKey })
    stops.push(facilitator.stop)
    const server = await spawnRole({
      ...base,
      role: `${name}-server`,
      facilitatorUrl: facilitator.url,
      payTo,
      framework: options.framework,
    })
    stops.push(server.stop)
    const resourceUrl = `${server.url}/weather`
    const parts =
      name === 'ours'
        ? ours(resourceUrl, facilitator.url)
        : reference(resourceUrl, facilitator.url, [{ network: devnet.network, asset: devnet.usdc }])
    return {
      name,
      blockTime: options.blockTime,
      devnet,
      resourceUrl,
      payTo,
      signer: signer!.address,
      payers: payerAccounts.map((account) => privateKeyToAccount(account.privateKey)),
      processes: { payers: process.pid, server: server.pid, facilitator: facilitator.pid, anvil: childNamed('anvil') },
      ...parts,
      close,
    }
  } catch (error) {
    await close()
    throw error
  }
}

/** Devnet starts that failed and were tried again, over the whole run (reported, never hidden). */
export const setupRetries: string[] = []

const setupAttempts = 3

async function startChain(options: StackOptions): Promise<Devnet> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDevnet({ blockTime: options.blockTime, accounts: options.accounts, gasLimit: options.gasLimit })
    } catch (error) {
      if (attempt >= setupAttempts) throw error
      const reason = error instanceof Error ? error.message : String(error)
      setupRetries.push(reason)
      process.stderr.write(`[bench] starting the devnet failed (${reason}); trying again\n`)
    }
  }
}

function ours(resourceUrl: string, facilitatorUrl: string): Pick<Stack, 'steps' | 'client'> {
  const facilitator = httpFacilitator(facilitatorUrl)
  const schemes = new Map<Address, ReturnType<typeof exactEvmClient>>()
  type Answer = { success?: boolean; isValid?: boolean; invalidReason?: string | null; invalidMessage?: string | null } & {
    errorReason?: string | null
    errorMessage?: string | null
  }
  const verdict = (answer: Answer): Outcome =>
    answer.isValid === true || answer.success === true
      ? { ok: true }
      : { ok: false, reason: joined(answer.invalidReason ?? answer.errorReason, answer.invalidMessage ?? answer.errorMessage) }
  return {
    steps: {
      async ask() {
        const response = await fetch(resourceUrl)
        await response.arrayBuffer()
        const header = response.headers.get(HttpHeader.paymentRequired)
        if (response.status !== 402 || header === null)
          throw new Error(`ours: expected a 402 with a PAYMENT-REQUIRED header, got ${response.status}`)
        const required = PaymentRequired.decode(header)
        const offer = required.accepts[0]!
        return {
          async sign(account) {
            const scheme = await cached(schemes, account.address, async () => exactEvmClient(await toEvmSigner(account)))
            const payload = await scheme.createPayload(offer, { resource: required.resource.url })
            const payment: Payment = {
              payload: { x402Version: 2, resource: required.resource, accepted: offer, payload },
              requirements: offer,
            }
            return {
              verify: async () => verdict(await facilitator.verify(payment)),
              settle: async () => verdict(await facilitator.settle(payment)),
            }
          },
        }
      },
    },
    client(account) {
      const pay = wrapFetch(fetch, { account, budget: { perRequest: '$0.05' } })
      return async (signal) => {
        const response = await pay(resourceUrl, { signal })
        const body = await response.text()
        const result = getPaymentResult(response)
        if (response.ok && result?.paid && result.settlement?.success) return { ok: true }
        if (result && !result.paid) return { ok: false, reason: joined(result.reason, result.error, result.settlement?.errorMessage) }
        return { ok: false, reason: `status ${response.status} ${problemCode(body)}`.trim() }
      }
    },
  }
}

/** `allowed`: the local chain's USDC, which the reference client's spend controls refuse unless listed. */
function reference(resourceUrl: string, facilitatorUrl: string, allowed: SpendControlAsset[]): Pick<Stack, 'steps' | 'client'> {
  const facilitator = new HTTPFacilitatorClient({ url: facilitatorUrl })
  const decoder = new x402HTTPClient(new x402Client())
  const clients = new Map<Address, x402Client>()
  return {
    steps: {
      async ask() {
        const response = await fetch(resourceUrl)
        const text = await response.text()
        if (response.status !== 402) throw new Error(`reference: expected a 402, got ${response.status}`)
        const required = decoder.getPaymentRequiredResponse((name) => response.headers.get(name), text ? JSON.parse(text) : undefined)
        return {
          async sign(account) {
            const client = await cached(clients, account.address, async () =>
              x402Client.fromConfig({
                schemes: [{ network: 'eip155:*', client: new ExactEvmScheme(account) }],
                spendControls: { allowedAssets: allowed },
              }),
            )
            const payload = await client.createPaymentPayload(required)
            return {
              async verify() {
                const verdict = await facilitator.verify(payload, payload.accepted)
                return verdict.isValid ? { ok: true } : { ok: false, reason: joined(verdict.invalidReason, verdict.invalidMessage) }
              },
              async settle() {
                const settlement = await facilitator.settle(payload, payload.accepted)
                return settlement.success ? { ok: true } : { ok: false, reason: joined(settlement.errorReason, settlement.errorMessage) }
              },
            }
          },
        }
      },
    },
    client(account) {
      const pay = referenceFetch(account, allowed)
      return async (signal) => {
        const response = await pay(resourceUrl, { signal })
        const body = await response.text()
        const header = response.headers.get('PAYMENT-RESPONSE')
        const settlement = header ? decodePaymentResponseHeader(header) : undefined
        if (response.ok && settlement?.success) return { ok: true }
        if (settlement && !settlement.success) return { ok: false, reason: joined(settlement.errorReason, settlement.errorMessage) }
        const reason = response.status === 402 ? askedError(response) : undefined
        return { ok: false, reason: reason ?? `status ${response.status} ${problemCode(body)}`.trim() }
      }
    },
  }
}

/** Each payer's scheme client is built once, outside the timed signing. */
async function cached<value>(map: Map<Address, value>, key: Address, make: () => Promise<value>): Promise<value> {
  const known = map.get(key)
  if (known !== undefined) return known
  const made = await make()
  map.set(key, made)
  return made
}

function joined(...parts: (string | null | undefined)[]): string {
  return parts.filter((part) => part).join(': ')
}

/** The `error` of a version 2 402 answering a payment (the reference puts the refusal there). */
function askedError(response: Response): string | undefined {
  const header = response.headers.get('PAYMENT-REQUIRED')
  if (!header) return undefined
  try {
    return (JSON.parse(Buffer.from(header, 'base64').toString('utf8')) as { error?: string }).error
  } catch {
    return undefined
  }
}

function problemCode(body: string): string {
  try {
    const json = JSON.parse(body) as { code?: unknown; error?: unknown; detail?: unknown }
    return String(json.code ?? json.error ?? json.detail ?? '')
  } catch {
    return body.slice(0, 120)
  }
}

const children = new Set<ChildProcess>()

/** Forks `serve.ts` for one role; resolves once it listens. */
async function spawnRole(start: RoleStart): Promise<{ url: string; pid: number | undefined; stop(): Promise<void> }> {
  const child = fork(fileURLToPath(new URL('./serve.ts', import.meta.url)), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  if (!process.listeners('exit').includes(killChildren)) process.on('exit', killChildren)
  children.add(child)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  void exited.then(() => children.delete(child))
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    if (child.connected) child.send('stop')
    else child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs)
    await exited
    clearTimeout(timer)
  }
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    const answered = new Promise<RoleReply>((resolve) => child.once('message', (message) => resolve(message as RoleReply)))
    child.send(start)
    const reply = await Promise.race([
      answered,
      exited.then(() => ({ error: `exited (code ${child.exitCode}) before listening` })),
      new Promise<RoleReply>((resolve) => {
        timer = setTimeout(() => resolve({ error: `did not listen within ${startTimeoutMs} ms` }), startTimeoutMs)
      }),
    ])
    if ('error' in reply) throw new Error(`bench: ${start.role} ${reply.error}`)
    return { url: reply.url, pid: child.pid, stop }
  } catch (error) {
    await stop()
    throw error
  } finally {
    clearTimeout(timer)
  }
}

// A run that dies before stopping its children leaves none behind (they also leave on disconnect).
function killChildren() {
  for (const child of children) child.kill('SIGKILL')
}
