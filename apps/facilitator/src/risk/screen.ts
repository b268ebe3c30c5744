/**
 * The risk screen: checks a payment against the deny lists, the largest single payment per asset and
 * the per-payer limits before the facilitator verifies or settles it. A refusal is data with a stable
 * reason code from `Reason`; a screen that cannot tell (its database list never loaded) throws.
 */
import { BaseError, Reason } from 'x402kit'
import type { Queryable } from '../store/sql.ts'
import { loadDenied, watchDenyListFile } from './denyList.ts'
import { type PayerLimits, payerWindows } from './limits.ts'

export type RiskInput = { payer: string; payTo: string; asset: string; network: string; amount: bigint }

export type Refusal = { reason: string; message: string }

export type RiskScreenOptions = {
  /** A deny list file: one address a line with `#` comments, or a JSON array. Read again when it changes. */
  denyListFile?: string | undefined
  /** How often the file's modification time is checked, in ms. Default 1 s. */
  denyListPollMs?: number | undefined
  /** A migrated database whose `deny_list` table is read every `denyListReloadMs`. */
  database?: Queryable | undefined
  /** How often the database deny list is read again, in ms. Default 5 s. */
  denyListReloadMs?: number | undefined
  /** Whether a deny-listed `payTo` is refused too. Default true. */
  denyPayTo?: boolean | undefined
  /** The largest single payment per asset address, in atomic units. */
  maxPaymentAmount?: Record<string, bigint> | undefined
  /** Limits per payer over a sliding window, counted by this instance only. */
  perPayer?: PayerLimits | undefined
  /** Payers whose windows are kept at most; past it the least recently active is dropped. Default 100 000. */
  maxPayers?: number | undefined
  /** A deny list that could not be reloaded (the last good one stays in force). */
  onError?: ((error: unknown) => void) | undefined
  now?: (() => number) | undefined
}

export type RiskScreen = {
  /** The refusal of a payment, or `undefined` when it may go ahead. */
  screen(input: RiskInput): Promise<Refusal | undefined>
  /**
   * Counts an accepted payment against its payer's limits. Payments screened at once before either is
   * recorded are not counted against each other: record as soon as a payment is accepted.
   */
  record(input: RiskInput): void
  /** Stops watching the file and reloading the database list. */
  close(): void
}

/**
 * Builds the risk screen from the `risk` configuration, the service's database and an error sink.
 *
 * @example
 * ```ts
 * import { createRiskScreen } from './risk/screen.ts'
 * const risk = createRiskScreen({ ...config.risk, database, onError: console.error })
 * const refusal = await risk.screen({ payer, payTo, asset, network, amount: 10_000n })
 * if (!refusal) risk.record({ payer, payTo, asset, network, amount: 10_000n })
 * ```
 */
export function createRiskScreen(options: RiskScreenOptions = {}): RiskScreen {
  const onError = options.onError ?? (() => {})
  const denyPayTo = options.denyPayTo ?? true
  const file = options.denyListFile
    ? watchDenyListFile(options.denyListFile, { intervalMs: options.denyListPollMs ?? 1_000, onError })
    : undefined
  const database = options.database && denyListTable(options.database, options.denyListReloadMs ?? 5_000, onError)
  const maxPaymentAmount = new Map(Object.entries(options.maxPaymentAmount ?? {}).map(([asset, max]) => [asset.toLowerCase(), max]))
  const windows =
    options.perPayer &&
    payerWindows(options.perPayer, {
      ...(options.maxPayers !== undefined && { maxPayers: options.maxPayers }),
      ...(options.now && { now: options.now }),
    })

  async function denied(address: string): Promise<boolean> {
    const lower = address.toLowerCase()
    if (file?.list().has(lower)) return true
    return Boolean(database && (await database.list()).has(lower))
  }

  return {
    async screen(input) {
      if (await denied(input.payer)) return { reason: Reason.payerDenied, message: 'The payer is on the deny list.' }
      if (denyPayTo && (await denied(input.payTo)))
        return { reason: Reason.payToDenied, message: 'The recipient (payTo) is on the deny list.' }
      const max = maxPaymentAmount.get(input.asset.toLowerCase())
      if (max !== undefined && input.amount > max)
        return {
          reason: Reason.paymentAmountTooLarge,
          message: `The amount ${input.amount} is above the largest single payment of ${max} this facilitator takes in this asset.`,
        }
      const over = windows?.check(input.payer, input.asset, input.amount)
      if (over === 'payments')
        return {
          reason: Reason.payerRateLimited,
          message: `The payer has made ${options.perPayer!.maxPayments} payments in the last ${options.perPayer!.windowSeconds} s, the most allowed.`,
        }
      if (over === 'amount')
        return {
          reason: Reason.payerAmountLimited,
          message: `This payment would take the payer past the most allowed in this asset in ${options.perPayer!.windowSeconds} s.`,
        }
      return undefined
    },
    record(input) {
      windows?.record(input.payer, input.asset, input.amount)
    },
    close() {
      file?.close()
      database?.close()
    },
  }
}

/**
 * The `deny_list` table, read again every `reloadMs`. Until one read succeeds, `list()` tries again
 * and throws, so no payment passes a list that was never read; later failures keep the last good list.
 */
function denyListTable(db: Queryable, reloadMs: number, onError: (error: unknown) => void) {
  let list: Set<string> | undefined
  let loading: Promise<Set<string>> | undefined
  const load = () =>
    (loading ??= loadDenied(db)
      .then((loaded) => (list = loaded))
      .finally(() => {
        loading = undefined
      }))
  const first = load().catch(() => undefined)
  const timer = setInterval(
    () =>
      load().catch((error) =>
        onError(
          new BaseError('The deny list table cannot be read; the last good list stays.', { code: 'deny_list_unavailable', cause: error }),
        ),
      ),
    reloadMs,
  )
  timer.unref()
  return {
    async list(): Promise<Set<string>> {
      await first
      if (list) return list
      try {
        return await load()
      } catch (error) {
        throw new BaseError('The deny list table cannot be read, so no payment can be screened.', {
          code: 'deny_list_unavailable',
          hint: 'Check the database connection and that migrations ran (the deny_list table is migration 6).',
          cause: error,
        })
      }
    },
    close: () => clearInterval(timer),
  }
}
