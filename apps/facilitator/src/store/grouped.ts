/**
 * Group commit: calls of one store operation that arrive while the previous group is still running
 * are run together, as one transaction of multi-row statements. An idle store runs a call at once
 * (it waits for nothing but the microtask queue); a busy one runs what piled up in one go, so the
 * statements per payment fall as the load rises.
 */

export type GroupOptions<input> = {
  /** Most calls in one group. */
  max: number
  /**
   * Calls with the same key never share a group: the later one waits for the next, so that it sees
   * what the earlier one wrote, exactly as if they had run one after the other.
   */
  keyOf(input: input): string
  /** Runs one call alone: for a group of one, and for each call of a group that failed as a whole. */
  one(input: input): Promise<unknown>
}

type Pending<input> = { input: input; resolve(value: unknown): void; reject(error: unknown): void }

/**
 * Wraps `many` (one group's results, in the order of its inputs) into a function of one input.
 * A group that throws is run again call by call, so one bad input fails only its own call.
 */
export function grouped<input, output>(
  many: (inputs: input[]) => Promise<output[]>,
  options: GroupOptions<input> & { one(input: input): Promise<output> },
): (input: input) => Promise<output> {
  let waiting: Pending<input>[] = []
  let running = false

  async function flush() {
    running = true
    try {
      while (waiting.length > 0) {
        const group: Pending<input>[] = []
        const later: Pending<input>[] = []
        const keys = new Set<string>()
        for (const call of waiting) {
          const key = options.keyOf(call.input)
          if (group.length >= options.max || keys.has(key)) later.push(call)
          else {
            keys.add(key)
            group.push(call)
          }
        }
        waiting = later
        await runGroup(group)
      }
    } finally {
      running = false
    }
  }

  async function runGroup(group: Pending<input>[]) {
    if (group.length === 1) {
      const [call] = group as [Pending<input>]
      await options.one(call.input).then(call.resolve, call.reject)
      return
    }
    let results: output[]
    try {
      results = await many(group.map((call) => call.input))
    } catch {
      // Nothing of the group was written (one transaction): each call runs alone and meets its own fate.
      await Promise.all(group.map((call) => options.one(call.input).then(call.resolve, call.reject)))
      return
    }
    for (const [index, call] of group.entries()) call.resolve(results[index])
  }

  return (input) =>
    new Promise<output>((resolve, reject) => {
      waiting.push({ input, resolve: resolve as (value: unknown) => void, reject })
      if (!running) {
        running = true
        queueMicrotask(() => void flush())
      }
    })
}
