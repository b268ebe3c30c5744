export { type Config, ConfigError, type ConfigInput, loadConfig } from './config.ts'
export { type FeePolicy, type Fees, feeFor, policyFor } from './ledger/fees.ts'
export { apportionGas, type LedgerEntry, ledgerEntries, recordLedger, type SettledTransaction } from './ledger/ledger.ts'
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
export { runFacilitatorService } from './run.ts'
export { type FacilitatorService, type ServiceOptions, startFacilitatorService } from './server.ts'
export { type Database, openDatabase } from './store/database.ts'
export { migrate, type Queryable, sqlStore } from './store/sql.ts'
