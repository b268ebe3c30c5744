export { channelsHandler, channelView } from './channels.ts'
export { type Config, ConfigError, type ConfigInput, loadConfig } from './config.ts'
export { type FeePolicy, type Fees, feeFor, policyFor } from './ledger/fees.ts'
export { type LedgerEntry, ledgerEntries, recordLedger } from './ledger/ledger.ts'
export {
  type Period,
  type StatementHandlerOptions,
  type StatementOptions,
  StatementParameterError,
  type StatementRow,
  type StatementTotal,
  statement,
  statementHandler,
  statementOptions,
  statementTotals,
} from './ledger/statement.ts'
export { createLogger, type Logger, type LogLevel } from './log.ts'
export { runFacilitatorService } from './run.ts'
export { type FacilitatorService, type ServiceOptions, startFacilitatorService } from './server.ts'
export { channelsMigration, sqlChannelStore } from './store/channels.ts'
export { type Database, openDatabase } from './store/database.ts'
export type { SettledEntry } from './store/queue.ts'
export { migrate, type Queryable, sqlStore, type Transactional } from './store/sql.ts'
