/**
 * Public-key recovery on worker threads, for servers that check a signature on every request (a
 * channel's vouchers): the event loop hands each signature to a thread and goes on serving, so a
 * 50 µs native recovery stops being 50 µs of every request's share of one core.
 *
 * Signatures that arrive in one turn of the event loop go to a thread together in one message. The
 * form rules of `recoverPublicKey` (65 bytes, `v`, low `s`) are checked before anything is sent, so
 * a malformed signature is refused at once and never costs a thread a recovery.
 */
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { nativeBindingPath, recoverPublicKey, signatureParts } from './recover.ts'

export type RecoveryThreads = {
  /**
   * The uncompressed public key (65 bytes) whose key signed `digest`, by the rules of
   * `recoverPublicKey`; `undefined` when no key recovers. Throws `InvalidSignatureError` for a
   * signature of the wrong form, before any thread is involved.
   */
  recover(digest: Uint8Array, signature: Uint8Array): Promise<Uint8Array | undefined>
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

// Each job: digest (32) ‖ r ‖ s (64) ‖ recovery id (1). Each result: the key (65), all zero when none recovers.
const jobBytes = 97
const keyBytes = 65

// Plain JavaScript, evaluated by the worker: it must not depend on how the host loads TypeScript.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads')
const binding = require(workerData.binding)
parentPort.on('message', (jobs) => {
  const count = jobs.length / ${jobBytes}
  const keys = new Uint8Array(count * ${keyBytes})
  for (let index = 0; index < count; index++) {
    const at = index * ${jobBytes}
    try {
      keys.set(binding.ecdsaRecover(jobs.subarray(at + 32, at + 96), jobs[at + 96], jobs.subarray(at, at + 32), false), index * ${keyBytes})
    } catch {}
  }
  parentPort.postMessage(keys, [keys.buffer])
})
`

type Job = { digest: Uint8Array; compact: Uint8Array; recovery: number; resolve(key: Uint8Array | undefined): void }
type Lane = { worker: Worker; inFlight: Job[][] }

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
      job.resolve(recoverPublicKey(job.digest, Buffer.concat([job.compact, Uint8Array.of(job.recovery)])))
    } catch {
      job.resolve(undefined)
    }
  }

  function start(slot: number): Lane {
    const worker = new Worker(workerSource, { eval: true, workerData: { binding: nativeBindingPath } })
    const lane: Lane = { worker, inFlight: [] }
    worker.on('message', (keys: Uint8Array) => {
      const batch = lane.inFlight.shift() ?? []
      counted.threads += batch.length
      batch.forEach((job, index) => {
        const key = keys.subarray(index * keyBytes, (index + 1) * keyBytes)
        job.resolve(key[0] === 0x04 ? key : undefined)
      })
      if (lane.inFlight.length === 0) worker.unref()
      // What queued while this batch was out goes now, as one batch: the busier the server, the fewer messages per signature.
      if (queued.length > 0 && !scheduled) flush()
    })
    const fail = () => {
      if (lanes[slot] === lane) lanes[slot] = undefined
      for (const batch of lane.inFlight.splice(0)) batch.forEach(inline)
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
    const quiet = batch.length === 1 && lanes.every((lane) => lane === undefined || lane.inFlight.length === 0)
    if (closed || threads === 0 || quiet) return batch.forEach(inline)
    // The first idle thread takes the batch; with every thread busy, it waits for the first to answer.
    const slot = lanes.findIndex((lane) => lane === undefined || lane.inFlight.length === 0)
    if (slot < 0) {
      queued = batch
      return
    }
    const lane = lanes[slot] ?? start(slot)
    const jobs = new Uint8Array(batch.length * jobBytes)
    batch.forEach((job, index) => {
      const at = index * jobBytes
      jobs.set(job.digest, at)
      jobs.set(job.compact, at + 32)
      jobs[at + 96] = job.recovery
    })
    lane.inFlight.push(batch)
    lane.worker.ref()
    lane.worker.postMessage(jobs, [jobs.buffer])
  }

  return {
    threads,
    counts: () => ({ ...counted }),
    recover(digest, signature) {
      if (digest.length !== 32) throw new RangeError(`A digest is 32 bytes, got ${digest.length}.`)
      const { compact, recovery } = signatureParts(signature)
      return new Promise((resolve) => {
        queued.push({ digest, compact, recovery, resolve })
        if (scheduled) return
        scheduled = true
        // After the current turn's I/O callbacks: the signatures of requests read together travel together.
        setImmediate(flush)
      })
    },
    async close() {
      closed = true
      const running = lanes.splice(0).filter((lane): lane is Lane => lane !== undefined)
      await Promise.all(
        running.map(async (lane) => {
          // Answers already asked for are not lost: they are recovered here instead.
          for (const batch of lane.inFlight.splice(0)) batch.forEach(inline)
          await lane.worker.terminate()
        }),
      )
    },
  }
}
