export { type Config, ConfigError, type ConfigInput, loadConfig } from './config.ts'
export { type FacilitatorService, type ServiceOptions, startFacilitatorService } from './server.ts'
export { type Database, openDatabase } from './store/database.ts'
export { migrate, type Queryable, sqlStore } from './store/sql.ts'
