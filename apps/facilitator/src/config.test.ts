import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { hashApiKey } from './access/guard.ts'
import { ConfigError, loadConfig, parseConfig } from './config.ts'

const key = `0x${'11'.repeat(32)}`
const key2 = `0x${'22'.repeat(32)}`
let dir: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'x402-config-'))
})

async function file(name: string, content: unknown) {
  const path = join(dir, name)
  await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content))
  return path
}

function issues(load: () => unknown): string[] {
  try {
    load()
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).code).toBe('invalid_config')
    return (error as ConfigError).issues
  }
  throw new Error('expected a ConfigError')
}

describe('loadConfig', () => {
  it('has defaults for everything but networks', () => {
    expect(loadConfig({ env: {}, argv: [] })).toEqual({
      port: 4020,
      host: '127.0.0.1',
      networks: {},
      dataDir: '.data/facilitator',
      eip6492Factories: [],
      pipeline: {},
    })
  })

  it('reads the environment, with the one-network shorthand', () => {
    const config = loadConfig({
      argv: [],
      env: {
        X402_PORT: '8080',
        X402_HOST: '0.0.0.0',
        X402_NETWORK: 'base-sepolia',
        X402_RPC_URL: 'https://sepolia.base.org',
        X402_SIGNER_KEYS: `${key}, ${key2.slice(2)}`,
        X402_CONFIRMATIONS: '2',
        DATABASE_URL: 'postgres://x402@db/x402',
        X402_DATA_DIR: '/var/lib/x402',
        X402_EIP6492_FACTORIES: '0x0000000000000000000000000000000000000001',
        X402_BATCHER: '0x610178dA211FEF7D417bC0e6FeD39F05609AD788',
        X402_INSTANCE_ID: 'facilitator-a',
      },
    })
    expect(config).toEqual({
      port: 8080,
      host: '0.0.0.0',
      networks: {
        'eip155:84532': {
          rpcUrl: 'https://sepolia.base.org',
          signers: [key, key2],
          confirmations: 2,
          batcher: '0x610178dA211FEF7D417bC0e6FeD39F05609AD788',
        },
      },
      databaseUrl: 'postgres://x402@db/x402',
      dataDir: '/var/lib/x402',
      eip6492Factories: ['0x0000000000000000000000000000000000000001'],
      pipeline: { instanceId: 'facilitator-a' },
    })
  })

  it('serves batch-settlement on the network of X402_NETWORK when asked to, and names a bad setting', () => {
    const base = { X402_NETWORK: 'eip155:8453', X402_RPC_URL: 'https://mainnet.base.org', X402_SIGNER_KEYS: key }
    expect(loadConfig({ argv: [], env: base }).networks['eip155:8453']?.batchSettlement).toBeUndefined()
    expect(loadConfig({ argv: [], env: { ...base, X402_BATCH_SETTLEMENT: '1' } }).networks['eip155:8453']?.batchSettlement).toEqual({})
    expect(
      loadConfig({
        argv: [],
        env: {
          ...base,
          X402_BATCH_SETTLEMENT: 'true',
          X402_BATCH_ESCROW: '0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003',
          X402_BATCH_SIGNER_KEY: key2,
        },
      }).networks['eip155:8453']?.batchSettlement,
    ).toEqual({ escrow: '0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003', signer: key2 })
    expect(issues(() => loadConfig({ argv: [], env: { ...base, X402_BATCH_ESCROW: '0x12' } }))).toEqual([
      'networks.eip155:8453.batchSettlement.escrow (from X402_BATCH_ESCROW): must be an address: 0x and 40 hex digits',
    ])
    expect(issues(() => loadConfig({ argv: [], env: { ...base, X402_BATCH_SETTLEMENT: 'yes' } }))).toEqual([
      'X402_BATCH_SETTLEMENT must be 1, true, 0 or false',
    ])
    expect(issues(() => loadConfig({ argv: [], env: { X402_BATCH_SETTLEMENT: '1' } }))).toEqual([
      'X402_BATCH_SETTLEMENT is set, but X402_NETWORK (the CAIP-2 network it is for) is not',
    ])
  })

  it('reads a file from --config or X402_CONFIG, with the environment over it', async () => {
    const path = await file('config.json', {
      port: 5000,
      networks: {
        'eip155:8453': { rpcUrl: 'https://mainnet.base.org', signers: [key] },
        'eip155:84532': { rpcUrl: 'https://sepolia.base.org', signers: [key] },
      },
    })
    const env = { X402_NETWORK: 'eip155:8453', X402_SIGNER_KEYS: key2 }
    const fromArg = loadConfig({ env, argv: ['--config', path] })
    expect(fromArg.port).toBe(5000)
    expect(fromArg.networks).toEqual({
      'eip155:8453': { rpcUrl: 'https://mainnet.base.org', signers: [key2] },
      'eip155:84532': { rpcUrl: 'https://sepolia.base.org', signers: [key] },
    })
    expect(loadConfig({ env: { ...env, X402_CONFIG: path }, argv: [] })).toEqual(fromArg)
    expect(loadConfig({ env, argv: [`--config=${path}`] })).toEqual(fromArg)
  })

  it('reads admission from cache: off, or its age in blocks', async () => {
    const networks = { 'eip155:8453': { rpcUrl: 'https://mainnet.base.org', signers: [key] } }
    expect(loadConfig({ env: {}, argv: ['--config', await file('on.json', { networks })] }).admission).toBeUndefined()
    expect(loadConfig({ env: {}, argv: ['--config', await file('off.json', { networks, admission: false })] }).admission).toBe(false)
    const aged = await file('aged.json', { networks, admission: { maxAgeBlocks: 4 } })
    expect(loadConfig({ env: {}, argv: ['--config', aged] }).admission).toEqual({ maxAgeBlocks: 4 })
    const bad = await file('bad-admission.json', { networks, admission: { maxAgeBlocks: 0 } })
    expect(issues(() => loadConfig({ env: {}, argv: ['--config', bad] }))).toHaveLength(1)
  })

  it('names each bad key, where it came from, and what is wrong', () => {
    const found = issues(() =>
      loadConfig({
        argv: [],
        env: {
          X402_PORT: '80000',
          X402_NETWORK: 'eip155:8453',
          X402_RPC_URL: 'ftp://node',
          X402_SIGNER_KEYS: '0xnotakey',
          DATABASE_URL: 'mysql://db',
          X402_EIP6492_FACTORIES: '0x12',
        },
      }),
    )
    expect(found).toEqual([
      'port (from X402_PORT): Too big: expected number to be <=65535',
      'networks.eip155:8453.rpcUrl (from X402_RPC_URL): must be an http(s) or ws(s) URL of the network’s JSON-RPC endpoint',
      'networks.eip155:8453.signers.0 (from X402_SIGNER_KEYS): must be a private key: 32 bytes of hex, 0x and 64 hex digits',
      'databaseUrl (from DATABASE_URL): must be a postgres:// or postgresql:// URL',
      'eip6492Factories.0 (from X402_EIP6492_FACTORIES): must be an address: 0x and 40 hex digits',
    ])
  })

  it('never repeats a secret in an error', () => {
    const secret = `0x${'ab'.repeat(31)}`
    const error = (() => {
      try {
        loadConfig({
          argv: [],
          env: {
            X402_NETWORK: 'eip155:8453',
            X402_RPC_URL: 'https://rpc.example/v2/API-KEY-123x',
            X402_SIGNER_KEYS: secret,
            X402_PORT: 'x',
          },
        })
      } catch (error) {
        return error as Error
      }
    })()
    expect(error?.message).toMatch(/signers\.0/)
    expect(error?.message).not.toContain(secret.slice(2))
    expect(error?.message).not.toContain('API-KEY')
  })

  it('asks for the network and its settings together', () => {
    expect(issues(() => loadConfig({ argv: [], env: { X402_RPC_URL: 'https://rpc', X402_SIGNER_KEYS: key } }))).toEqual([
      'X402_RPC_URL is set, but X402_NETWORK (the CAIP-2 network it is for) is not',
      'X402_SIGNER_KEYS is set, but X402_NETWORK (the CAIP-2 network it is for) is not',
    ])
    expect(issues(() => loadConfig({ argv: [], env: { X402_NETWORK: 'eip155:8453' } }))).toEqual([
      'networks.eip155:8453.rpcUrl (from X402_RPC_URL): must be an http(s) or ws(s) URL of the network’s JSON-RPC endpoint',
      'networks.eip155:8453.signers (from X402_SIGNER_KEYS): must be a list of private keys',
    ])
    expect(
      issues(() => loadConfig({ argv: [], env: { X402_NETWORK: 'atlantis', X402_RPC_URL: 'https://rpc', X402_SIGNER_KEYS: key } })),
    ).toEqual(['networks.atlantis (from X402_NETWORK): must be a CAIP-2 network such as "eip155:8453"'])
  })

  it('names bad keys in a file, and the file', async () => {
    const path = await file('bad.json', {
      port: '4020',
      networks: { 'eip155:1': { rpcUrl: 'https://rpc', signers: [], gas: 1 } },
      colour: 'blue',
    })
    expect(issues(() => loadConfig({ env: {}, argv: ['--config', path] }))).toEqual([
      `port (in ${path}): Invalid input: expected number, received string`,
      `networks.eip155:1.signers (in ${path}): needs at least one private key`,
      `networks.eip155:1 (in ${path}): Unrecognized key: "gas"`,
      `configuration (in ${path}): Unrecognized key: "colour"`,
    ])
  })

  it('says when the file is missing or not JSON, without quoting it', async () => {
    expect(issues(() => loadConfig({ env: {}, argv: ['--config', join(dir, 'nope.json')] }))).toEqual([
      `cannot read the config file ${join(dir, 'nope.json')}: ENOENT`,
    ])
    const path = await file('broken.json', `{"networks": {"eip155:1": {"signers": [${key}]}}}`)
    const [issue] = issues(() => loadConfig({ env: {}, argv: ['--config', path] }))
    expect(issue).toMatch(/is not JSON \(at character \d+\)$/)
    expect(issue).not.toContain(key.slice(2))
    expect(issues(() => loadConfig({ env: {}, argv: ['--config'] }))).toEqual(['--config needs a file path'])
    const list = await file('list.json', [])
    expect(issues(() => loadConfig({ env: {}, argv: ['--config', list] }))[0]).toMatch(/must hold a JSON object/)
  })
})

describe('parseConfig', () => {
  it('fills defaults into a configuration written in code, and checks it', () => {
    expect(parseConfig({ port: 0, networks: { 'eip155:31337': { rpcUrl: 'http://127.0.0.1:8545', signers: [key] } } })).toMatchObject({
      port: 0,
      host: '127.0.0.1',
      eip6492Factories: [],
    })
    expect(issues(() => parseConfig({ port: -1 }))).toEqual(['port: Too small: expected number to be >=0'])
  })
})

describe('risk and access', () => {
  const usdc = '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913'
  const payTo = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'
  const apiKey = 'sk_live_7f3a9c1e5b2d4680aa11bb22cc33dd44'

  it('reads them from a file, amounts as exact bigints and API keys as digests only', async () => {
    const path = await file('risk.json', {
      risk: {
        denyListFile: '/etc/x402/deny.txt',
        denyListReloadMs: 2_000,
        maxPaymentAmount: { [usdc]: '1000000000000000000000000' },
        perPayer: { windowSeconds: 60, maxPayments: 10, maxAmount: { [usdc]: '5000000' } },
      },
      access: {
        apiKeys: [
          { key: apiKey, merchant: 'shop', payTo: [payTo] },
          { key: hashApiKey('another-key-of-16+'), merchant: 'cafe' },
        ],
        rateLimit: { requestsPerSecond: 0.5, burst: 5 },
        maxClients: 1_000,
      },
    })
    const config = loadConfig({ env: {}, argv: ['--config', path] })
    expect(config.risk).toEqual({
      denyListFile: '/etc/x402/deny.txt',
      denyListReloadMs: 2_000,
      maxPaymentAmount: { [usdc]: 10n ** 24n },
      perPayer: { windowSeconds: 60, maxPayments: 10, maxAmount: { [usdc]: 5_000_000n } },
    })
    expect(config.access).toEqual({
      apiKeys: [
        { key: hashApiKey(apiKey), merchant: 'shop', payTo: [payTo] },
        { key: hashApiKey('another-key-of-16+'), merchant: 'cafe' },
      ],
      rateLimit: { requestsPerSecond: 0.5, burst: 5 },
      maxClients: 1_000,
    })
    expect(JSON.stringify(config.access)).not.toContain(apiKey)
    // A checked configuration passes the check again unchanged, as startFacilitatorService does.
    expect(parseConfig(config)).toEqual(config)
  })

  it('reads them from the environment, over the file', async () => {
    const path = await file('access.json', { access: { rateLimit: { requestsPerSecond: 1, burst: 1 } }, risk: { denyPayTo: false } })
    const config = loadConfig({
      argv: ['--config', path],
      env: {
        X402_DENY_LIST_FILE: '/etc/x402/deny.txt',
        X402_DENY_LIST_RELOAD_MS: '10000',
        X402_API_KEYS: `shop=${apiKey}, cafe = ${hashApiKey('another-key-of-16+')}`,
        X402_RATE_LIMIT_RPS: '2.5',
      },
    })
    expect(config.risk).toEqual({ denyListFile: '/etc/x402/deny.txt', denyListReloadMs: 10_000, denyPayTo: false })
    expect(config.access).toEqual({
      apiKeys: [
        { key: hashApiKey(apiKey), merchant: 'shop' },
        { key: hashApiKey('another-key-of-16+'), merchant: 'cafe' },
      ],
      rateLimit: { requestsPerSecond: 2.5, burst: 1 },
    })
  })

  it('names each bad key and its source, never the value', async () => {
    const path = await file('bad-risk.json', {
      risk: { maxPaymentAmount: { [usdc]: '1.5', USDC: '1' }, perPayer: { maxPayments: 0 } },
      access: {
        apiKeys: [
          { key: 'sk_live_copied_twice_1234', merchant: 'a' },
          { key: 'sk_live_copied_twice_1234', merchant: 'b' },
        ],
      },
    })
    const found = issues(() =>
      loadConfig({
        argv: ['--config', path],
        env: { X402_API_KEYS: undefined, X402_RATE_LIMIT_RPS: '0', X402_RATE_LIMIT_BURST: 'lots', X402_DENY_LIST_RELOAD_MS: '5' },
      }),
    )
    expect(found).toEqual([
      `risk.denyListReloadMs (from X402_DENY_LIST_RELOAD_MS): Too small: expected number to be >=100`,
      `risk.maxPaymentAmount.${usdc} (in ${path}): must be an amount in the asset’s atomic units, a whole number written as a string`,
      `risk.maxPaymentAmount.USDC (in ${path}): must be an asset address: 0x and 40 hex digits`,
      `risk.perPayer.windowSeconds (in ${path}): Invalid input: expected number, received undefined`,
      `risk.perPayer.maxPayments (in ${path}): Too small: expected number to be >=1`,
      `access.apiKeys.1.key (in ${path}): is the same key as entry 0`,
      'access.rateLimit.requestsPerSecond (from X402_RATE_LIMIT_RPS): Too small: expected number to be >0',
      'access.rateLimit.burst (from X402_RATE_LIMIT_BURST): Invalid input: expected number, received string',
    ])
    const secret = 'sk_live_short'
    const fromEnv = issues(() => loadConfig({ argv: [], env: { X402_API_KEYS: `shop=${secret},${secret}` } }))
    expect(fromEnv).toEqual([
      'X402_API_KEYS: entry 2 must be merchant=key',
      'access.apiKeys.0.key (from X402_API_KEYS): must be at least 16 characters, or sha256: and the key’s SHA-256 digest in hex',
      'access.apiKeys.1.key (from X402_API_KEYS): must be at least 16 characters, or sha256: and the key’s SHA-256 digest in hex',
      'access.apiKeys.1.merchant (from X402_API_KEYS): Too small: expected string to have >=1 characters',
      'access.apiKeys.1.key (from X402_API_KEYS): is the same key as entry 0',
    ])
    expect(issues(() => parseConfig({ access: { apiKeys: [null as never] } }))).toEqual([
      'access.apiKeys.0: Invalid input: expected object, received null',
    ])
    expect(fromEnv.join('\n')).not.toContain(secret)
  })
})

describe('fees', () => {
  const merchant = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C'

  it('reads a default policy and per-merchant ones, keyed by lower-case address', async () => {
    const path = await file('fees.json', {
      fees: { default: { bps: 100 }, merchants: { [merchant]: { bps: 25, fixed: '1000', minimum: '2000' } } },
    })
    expect(loadConfig({ env: {}, argv: ['--config', path] }).fees).toEqual({
      default: { bps: 100 },
      merchants: { [merchant.toLowerCase()]: { bps: 25, fixed: '1000', minimum: '2000' } },
    })
    expect(parseConfig({ fees: { default: { fixed: '0' } } }).fees).toEqual({ default: { fixed: '0' } })
    expect(parseConfig({}).fees).toBeUndefined()
  })

  it('names each bad policy and what is wrong with it', async () => {
    const path = await file('bad-fees.json', {
      fees: {
        default: { bps: 1.5 },
        merchants: {
          [merchant]: { bps: 10_001 },
          [merchant.toLowerCase()]: { fixed: 10 },
          '0x12': { bps: 1 },
          [`0x${'1'.repeat(40)}`]: { minimum: '5' },
          [`0x${'2'.repeat(40)}`]: { bps: 1, percent: 2 },
          [`0x${'3'.repeat(40)}`]: { fixed: '-1' },
        },
      },
    })
    expect(issues(() => loadConfig({ env: {}, argv: ['--config', path] }))).toEqual([
      `fees.default.bps (in ${path}): must be an integer of basis points from 0 to 10000`,
      `fees.merchants.${merchant}.bps (in ${path}): must be an integer of basis points from 0 to 10000`,
      `fees.merchants.${merchant.toLowerCase()}.fixed (in ${path}): Invalid input: expected string, received number`,
      `fees.merchants.0x12 (in ${path}): must be an address: 0x and 40 hex digits`,
      `fees.merchants.0x${'1'.repeat(40)} (in ${path}): needs bps, fixed, or both`,
      `fees.merchants.0x${'2'.repeat(40)} (in ${path}): Unrecognized key: "percent"`,
      `fees.merchants.0x${'3'.repeat(40)}.fixed (in ${path}): must be atomic units: a decimal integer string such as "1000"`,
    ])
    expect(issues(() => parseConfig({ fees: { merchants: { [merchant]: { bps: 1 }, [merchant.toLowerCase()]: { bps: 2 } } } }))).toEqual([
      `fees.merchants.${merchant.toLowerCase()}: is listed twice (addresses differ only in case)`,
    ])
  })
})
