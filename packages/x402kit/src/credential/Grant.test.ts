import { describe, expect, it } from 'vitest'
import * as Grant from './Grant.ts'

const route = { audience: 'https://api.test', scope: 'GET /feed/*' }

describe('Grant', () => {
  it.each<[Grant.Window, number]>([
    [90, 90],
    ['30s', 30],
    ['15m', 900],
    ['1h', 3600],
    ['7d', 604_800],
  ])('reads the window %s as %i seconds', (window, seconds) => {
    expect(Grant.windowSeconds(window)).toBe(seconds)
  })

  it.each([0, -1, 1.5, '0s', '1y', '1 h', 'h', '', 400 * 86_400, Number.NaN])('refuses the window %s', (window) => {
    expect(() => Grant.windowSeconds(window as Grant.Window)).toThrow(/not a duration up to a year/)
  })

  it('builds the wire grant from a route config', () => {
    expect(Grant.fromConfig({ uses: 3 }, route)).toEqual({ ...route, uses: 3 })
    expect(Grant.fromConfig({ window: '1h' }, route)).toEqual({ ...route, windowSeconds: 3600 })
    expect(Grant.fromConfig({ uses: 100, window: '1d' }, route)).toEqual({ ...route, uses: 100, windowSeconds: 86_400 })
    expect(() => Grant.fromConfig({} as Grant.GrantConfig, route)).toThrow(/uses, a window, or both/)
    expect(() => Grant.fromConfig({ uses: 0 }, route)).toThrow(/not a whole number/)
    expect(() => Grant.fromConfig({ uses: 2.5 }, route)).toThrow(/not a whole number/)
  })

  it('reads the grant an offer asks for, refusing a malformed one', () => {
    expect(Grant.of(undefined)).toBeUndefined()
    expect(Grant.of({ name: 'USDC' })).toBeUndefined()
    expect(Grant.of({ grant: { ...route, uses: 3 } })).toEqual({ ...route, uses: 3 })
    expect(Grant.of({ grant: { ...route, uses: -3 } })).toEqual({ error: 'extra.grant is malformed at uses.' })
    expect(Grant.of({ grant: { scope: 'GET /a' } })).toEqual({ error: 'extra.grant is malformed at audience.' })
    expect(Grant.of({ grant: { ...route, extra: 1 } })).toMatchObject({ error: expect.stringMatching(/malformed/) })
    expect(Grant.of({ grant: { ...route, scope: 'GET /a/../b' } })).toMatchObject({
      error: expect.stringMatching(/^extra.grant.scope: Route/),
    })
    expect(Grant.of({ grant: 'all of it' })).toMatchObject({ error: expect.stringMatching(/malformed/) })
  })
})
