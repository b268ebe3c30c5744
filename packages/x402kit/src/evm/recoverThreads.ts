/**
 * Public-key recovery on worker threads, for servers that check a signature on every request (a
 * channel's vouchers): the event loop hands each signature to a thread and goes on serving, so a
 * 50 µs native recovery stops being 50 µs of every request's share of one core.
 *
 * Signatures that arrive in one turn of the event loop go to a thread together in one message. The
 * form rules of `recoverPublicKey` (65 bytes, `v`, low `s`) are checked before anything is sent, so
 * a malformed signature is refused at once and never costs a thread a recovery. For EIP-712 typed
 * data the thread also does the hashing (`recoverTyped`), which is the other half of the work.
 */

import { createRequire } from 'node:module'
import { availableParallelism } from 'node:os'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { keccak_256 } from '@noble/hashes/sha3.js'
import { nativeBindingPath, recoverFromParts, signatureParts } from './recover.ts'

export type RecoveryThreads = {
  /**
   * The uncompressed public key (65 bytes) whose key signed `digest`, by the rules of
   * `recoverPublicKey`; `undefined` when no key recovers. Throws `InvalidSignatureError` for a
   * signature of the wrong form, before any thread is involved.
   */
  recover(digest: Uint8Array, signature: Uint8Array): Promise<Uint8Array | undefined>
  /**
   * As `recover`, for EIP-712 typed data given as its domain separator and its encoded struct (type
   * hash and fields, 32 bytes each): the digest `keccak256(0x1901 ‖ separator ‖ keccak256(struct))`
   * is computed where the recovery runs.
   */
  recoverTyped(separator: Uint8Array, struct: Uint8Array, signature: Uint8Array): Promise<Uint8Array | undefined>
  /** How many threads recover; 0 when recovery runs on the calling thread. */
  readonly threads: number
  /** Signatures recovered so far on the threads and on the calling thread. */
  counts(): { threads: number; here: number }
  /** Stops the threads; a recovery asked for afterwards runs on the calling thread. */
  close(): Promise<void>
}

/** Default thread count: one where the machine has a core to spare for it and the native binding loads. */
export function defaultRecoveryThreads(): number {
  return nativeBindingPath && availableParallelism() > 1 ? 1 : 0
}

// Each job: kind (1) ‖ length (2) ‖ data ‖ r ‖ s (64) ‖ recovery id (1). Kind 0: data is the digest;
// kind 1: data is a domain separator and a typed-data struct. Each result: the key (65), zeros when none recovers.
const keyBytes = 65
const typedPrefix = Uint8Array.of(0x19, 0x01)

// Plain CommonJS, evaluated by the worker: it must not depend on how the host loads TypeScript.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads')
const binding = require(workerData.binding)
const hashing = import(workerData.keccak)
parentPort.on('message', async (jobs) => {
  const { keccak_256 } = await hashing
  const keys = []
  for (let at = 0; at < jobs.length; ) {
    const length = (jobs[at + 1] << 8) | jobs[at + 2]
    const data = jobs.subarray(at + 3, at + 3 + length)
    const signature = jobs.subarray(at + 3 + length, at + 3 + length + 64)
    const recovery = jobs[at + 3 + length + 64]
    let digest = data
    if (jobs[at] === 1) {
      const message = new Uint8Array(66)
      message[0] = 0x19
      message[1] = 0x01
      message.set(data.subarray(0, 32), 2)
      message.set(keccak_256(data.subarray(32)), 34)
      digest = keccak_256(message)
    }
    let key = new Uint8Array(${keyBytes})
    try {
      key = binding.ecdsaRecover(signature, recovery, digest, false)
    } catch {}
    keys.push(key)
    at += 3 + length + 65
  }
  const out = new Uint8Array(keys.length * ${keyBytes})
  keys.forEach((key, index) => out.set(key, index * ${keyBytes}))
  parentPort.postMessage(out, [out.buffer])
})
`

type Job = { kind: 0 | 1; data: Uint8Array; compact: Uint8Array; recovery: number; resolve(key: Uint8Array | undefined): void }
/** A worker and the batch it is recovering, if any: one at a time, answered in order. */
type Lane = { worker: Worker; batch: Job[] | undefined }

const idle = (lane: Lane | undefined) => lane?.batch === undefined

const keccakModule = pathToFileURL(createRequire(import.meta.url).resolve('@noble/hashes/sha3.js')).href

/** The EIP-712 digest of typed data given as its domain separator and encoded struct. */
export function typedDigest(separator: Uint8Array, struct: Uint8Array): Uint8Array {
  const message = new Uint8Array(66)
  message.set(typedPrefix, 0)
  message.set(separator, 2)
  message.set(keccak_256(struct), 34)
  return keccak_256(message)
}

const digestOf = (job: Job) => (job.kind === 0 ? job.data : typedDigest(job.data.subarray(0, 32), job.data.subarray(32)))

/**
 * Recovers public keys on `threads` worker threads (default `defaultRecoveryThreads()`); with 0, or
 * where the native binding does not load, on the calling thread. A thread that dies hands its jobs
 * back to the calling thread, and a new one starts with the next batch.
 *
 * @example
 * ```ts
 * import { recoveryThreads } from 'x402kit/evm'
 * const recovery = recoveryThreads()
 * const key = await recovery.recover(digest, signatureBytes)
 * await recovery.close()
 * ```
 */
export function recoveryThreads(options: { threads?: number } = {}): RecoveryThreads {
  const wanted = options.threads ?? defaultRecoveryThreads()
  if (!Number.isInteger(wanted) || wanted < 0) throw new RangeError(`threads is a whole number of at least 0, got ${wanted}.`)
  const threads = nativeBindingPath ? wanted : 0
  const lanes: (Lane | undefined)[] = Array.from({ length: threads }, () => undefined)
  let queued: Job[] = []
  let scheduled = false
  let closed = false

  const counted = { threads: 0, here: 0 }
  const inline = (job: Job) => {
    counted.here++
    try {
      job.resolve(recoverFromParts(digestOf(job), job.compact, job.recovery))
    } catch {
      job.resolve(undefined)
    }
  }

  function start(slot: number): Lane {
    const worker = new Worker(workerSource, { eval: true, workerData: { binding: nativeBindingPath, keccak: keccakModule } })
    const lane: Lane = { worker, batch: undefined }
    worker.on('message', (keys: Uint8Array) => {
      const batch = lane.batch ?? []
      lane.batch = undefined
      counted.threads += batch.length
      batch.forEach((job, index) => {
        const key = keys.subarray(index * keyBytes, (index + 1) * keyBytes)
        job.resolve(key[0] === 0x04 ? key : undefined)
      })
      worker.unref()
      // What queued while this batch was out goes now, as one batch: the busier the server, the fewer messages per signature.
      if (queued.length > 0 && !scheduled) flush()
    })
    const fail = () => {
      if (lanes[slot] === lane) lanes[slot] = undefined
      lane.batch?.forEach(inline)
      lane.batch = undefined
    }
    worker.on('error', fail)
    worker.on('exit', fail)
    worker.unref()
    lanes[slot] = lane
    return lane
  }

  function flush() {
    scheduled = false
    const batch = queued
    queued = []
    if (batch.length === 0) return
    // A lone signature with every thread idle is the quiet case: recovering it here answers sooner than a thread's wake-up.
    const quiet = batch.length === 1 && lanes.every(idle)
    if (closed || threads === 0 || quiet) return batch.forEach(inline)
    // The first idle thread takes the batch; with every thread busy, it waits for the first to answer.
    const slot = lanes.findIndex(idle)
    if (slot < 0) {
      queued = batch
      return
    }
    const lane = lanes[slot] ?? start(slot)
    const jobs = new Uint8Array(batch.reduce((sum, job) => sum + 3 + job.data.length + 65, 0))
    let at = 0
    for (const job of batch) {
      jobs[at] = job.kind
      jobs[at + 1] = job.data.length >> 8
      jobs[at + 2] = job.data.length & 0xff
      jobs.set(job.data, at + 3)
      jobs.set(job.compact, at + 3 + job.data.length)
      jobs[at + 3 + job.data.length + 64] = job.recovery
      at += 3 + job.data.length + 65
    }
    lane.batch = batch
    lane.worker.ref()
    lane.worker.postMessage(jobs, [jobs.buffer])
  }

  function enqueue(kind: 0 | 1, data: Uint8Array, signature: Uint8Array): Promise<Uint8Array | undefined> {
    const { compact, recovery } = signatureParts(signature)
    return new Promise((resolve) => {
      queued.push({ kind, data, compact, recovery, resolve })
      if (scheduled) return
      scheduled = true
      // After the current turn's I/O callbacks: the signatures of requests read together travel together.
      setImmediate(flush)
    })
  }

  return {
    threads,
    counts: () => ({ ...counted }),
    recover(digest, signature) {
      if (digest.length !== 32) throw new RangeError(`A digest is 32 bytes, got ${digest.length}.`)
      return enqueue(0, digest, signature)
    },
    recoverTyped(separator, struct, signature) {
      if (separator.length !== 32) throw new RangeError(`A domain separator is 32 bytes, got ${separator.length}.`)
      if (struct.length < 32 || struct.length % 32 !== 0 || struct.length > 4_096)
        throw new RangeError(`A typed-data struct is 32 to 4,096 bytes in words of 32, got ${struct.length}.`)
      const data = new Uint8Array(32 + struct.length)
      data.set(separator, 0)
      data.set(struct, 32)
      return enqueue(1, data, signature)
    },
    async close() {
      closed = true
      const running = lanes.splice(0).filter((lane): lane is Lane => lane !== undefined)
      await Promise.all(
        running.map(async (lane) => {
          // Answers already asked for are not lost: they are recovered here instead.
          lane.batch?.forEach(inline)
          lane.batch = undefined
          await lane.worker.terminate()
        }),
      )
    },
  }
}
