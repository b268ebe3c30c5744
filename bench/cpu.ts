/**
 * CPU time of the processes of a stack, read from /proc (Linux), to show what the machine spends
 * where. Elsewhere every reading is empty, and the report leaves the CPU table out.
 */
import { readdirSync, readFileSync } from 'node:fs'

export type Processes = Record<string, number | undefined>
/** Seconds of CPU per process name. */
export type CpuTime = Record<string, { user: number; system: number }>

// USER_HZ: 100 on every Linux architecture Node runs on.
const ticksPerSecond = 100

export function cpuTime(processes: Processes): CpuTime {
  const time: CpuTime = {}
  for (const [name, pid] of Object.entries(processes)) {
    if (pid === undefined) continue
    const stat = readStat(pid)
    if (stat) time[name] = { user: stat.utime / ticksPerSecond, system: stat.stime / ticksPerSecond }
  }
  return time
}

export function elapsedCpu(before: CpuTime, after: CpuTime): CpuTime {
  const used: CpuTime = {}
  for (const [name, end] of Object.entries(after)) {
    const start = before[name]
    if (start) used[name] = { user: end.user - start.user, system: end.system - start.system }
  }
  return used
}

/**
 * CPU seconds the whole machine spent busy (every process, every core), from /proc/stat; `undefined`
 * where it cannot be read. The part not spent by a stack's processes was spent by other work.
 */
export function machineBusy(): number | undefined {
  let text: string
  try {
    text = readFileSync('/proc/stat', 'utf8')
  } catch {
    return undefined
  }
  // cpu  user nice system idle iowait irq softirq steal …
  const fields = text.split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number)
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields
  return (user + nice + system + irq + softirq + steal) / ticksPerSecond
}

/** The pid of this process's child named `command` (e.g. anvil, which the devnet starts). */
export function childNamed(command: string): number | undefined {
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return undefined
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    const stat = readStat(Number(entry))
    if (stat && stat.ppid === process.pid && stat.command === command) return Number(entry)
  }
  return undefined
}

function readStat(pid: number): { command: string; ppid: number; utime: number; stime: number } | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // The command is in parentheses and may itself hold spaces or parentheses: split after the last ')'.
  const close = text.lastIndexOf(')')
  const fields = text.slice(close + 2).split(' ')
  return {
    command: text.slice(text.indexOf('(') + 1, close),
    ppid: Number(fields[1]),
    utime: Number(fields[11]),
    stime: Number(fields[12]),
  }
}
