import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Payment, SchemeFacilitator, SettleResponse } from 'x402kit'
import { Credential, trustedIssuers } from 'x402kit/credential'
import { httpFacilitator } from 'x402kit/facilitator'
import { loadConfig } from './config.ts'
import { type FacilitatorService, startFacilitatorService } from './server.ts'

const network = 'eip155:84532'
const issuer = 'https://facilitator.test'
const audience = 'https://api.test'
const grant = { audience, scope: 'GET /feed/*', windowSeconds: 3600 }
const requirements = {
  scheme: 'exact',
  network,
  amount: '1000',
  asset: '0xasset',
  payTo: '0xpayto',
  maxTimeoutSeconds: 60,
  extra: { grant },
}
const payment = (nonce: string): Payment => ({ requirements, payload: { x402Version: 2, accepted: requirements, payload: { nonce } } })

const scheme: SchemeFacilitator = {
  scheme: 'exact',
  networks: [network],
  verify: async () => ({ isValid: true, payer: '0xpayer' }),
  settle: async (paid) => ({ success: true, payer: '0xpayer', transaction: `0x${paid.payload.payload.nonce}`, network }),
  settlementKey: (paid) => String(paid.payload.payload.nonce),
  signers: () => [],
}

const tokenOf = (result: SettleResponse) => (result.extensions?.credential as { token: string } | undefined)?.token ?? ''

describe('the service as a credential issuer', () => {
  let dataDir: string
  let service: FacilitatorService | undefined

  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'x402-credentials-'))
  })
  afterEach(async () => {
    await service?.close()
    service = undefined
    await rm(dataDir, { recursive: true, force: true })
  })

  const start = () => startFacilitatorService({ port: 0, dataDir, credentials: { issuer } }, { schemes: [scheme] })
  /** A server's view of the service's keys, fetched over HTTP wherever the service listens now. */
  const verify = (token: string) =>
    Credential.verify(token, {
      audience,
      trust: trustedIssuers([{ issuer, jwksUrl: `${service!.url}/.well-known/jwks.json` }]),
    })
  const kids = async () =>
    ((await (await fetch(`${service!.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] }).keys.map((key) => key.kid)

  it('keeps its signing key across a restart: credentials already out stay valid', async () => {
    service = await start()
    const before = await kids()
    expect(before).toHaveLength(1)
    const token = tokenOf(await httpFacilitator(service.url).settle(payment('1')))
    expect(await verify(token)).toMatchObject({ ok: true, claims: { iss: issuer, aud: audience, scope: 'GET /feed/*' } })
    await service.close()

    service = await start()
    expect(await kids()).toEqual(before)
    expect(await verify(token)).toMatchObject({ ok: true })
    // The stored settlement answers with the credential it issued then.
    expect(tokenOf(await httpFacilitator(service.url).settle(payment('1')))).toBe(token)
    const next = tokenOf(await httpFacilitator(service.url).settle(payment('2')))
    expect(await verify(next)).toMatchObject({ ok: true, kid: before[0] })
  })

  it('rotates without breaking credentials already issued, and the rotation survives a restart', async () => {
    service = await start()
    const old = tokenOf(await httpFacilitator(service.url).settle(payment('3')))
    const [oldKid] = await kids()
    const newKid = await service.rotateCredentialKey()
    expect(await kids()).toEqual([oldKid, newKid])
    const fresh = tokenOf(await httpFacilitator(service.url).settle(payment('4')))
    expect(await verify(fresh)).toMatchObject({ ok: true, kid: newKid })
    expect(await verify(old)).toMatchObject({ ok: true, kid: oldKid })
    await service.close()

    service = await start()
    expect(await kids()).toEqual([oldKid, newKid])
    expect(await verify(tokenOf(await httpFacilitator(service.url).settle(payment('5'))))).toMatchObject({ ok: true, kid: newKid })
  })

  it('issues nothing and refuses grants without a credentials config', async () => {
    service = await startFacilitatorService({ port: 0, dataDir }, { schemes: [scheme] })
    expect((await fetch(`${service.url}/.well-known/jwks.json`)).status).toBe(404)
    expect(await httpFacilitator(service.url).verify(payment('6'))).toMatchObject({
      isValid: false,
      invalidReason: 'invalid_payment_requirements',
    })
    await expect(service.rotateCredentialKey()).rejects.toThrow(/X402_CREDENTIAL_ISSUER/)
  })

  it('reads the issuer from X402_CREDENTIAL_ISSUER', () => {
    expect(loadConfig({ env: { X402_CREDENTIAL_ISSUER: issuer }, argv: [] }).credentials).toEqual({
      issuer,
      algorithm: 'EdDSA',
      maxTtlSeconds: 604_800,
    })
    expect(loadConfig({ env: {}, argv: [] }).credentials).toBeUndefined()
  })
})
