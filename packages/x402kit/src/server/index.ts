export type { CredentialsConfig } from './credentials.ts'
export { createPaywall, type HandleOptions, type Paywall, type PaywallConfig, type SettledInfo } from './paywall.ts'
export { type DynamicPrice, type OfferConfig, PaywallConfigError, type RouteConfig, type RoutesConfig } from './routes.ts'
export { memoryUseStore, type UseStore } from './UseStore.ts'
