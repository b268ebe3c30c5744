import { describe, expect, it } from 'vitest'
import { any, matchSegments, one, type Segment } from '../core/RoutePattern.ts'
import { exactEvmServer } from '../evm/exact/server.ts'
import { network, payTo } from './internal/fakeFacilitator.ts'
import { compileRoutes, findRoute, normalizePath, type RoutesConfig, readPath, readTarget } from './routes.ts'

const routes = compileRoutes(
  {
    'GET /weather': { price: '$0.001' },
    '/admin/*': { price: '$1' },
    'POST /files/*/meta': { price: '$0.01' },
    'GET /café': { price: '$0.002' },
  },
  { payTo, network, schemes: [exactEvmServer()] },
)

/** The route a request reaches, read as a Node adapter reads it: the URL, plus the raw target. */
function routeOf(method: string, target: string): string | undefined {
  const readings = readTarget(new URL(`http://localhost${target}`), target)
  if (!readings) return 'refused'
  return findRoute(routes, method, readings)?.key
}

describe('path normalisation: every way to the paid handler is paid', () => {
  it.each([
    // the path itself, and what only looks different
    ['GET', '/weather', 'GET /weather'],
    ['GET', '/weather?city=Paris', 'GET /weather'],
    ['GET', '/Weather', 'GET /weather'],
    ['GET', '/WEATHER', 'GET /weather'],
    ['GET', '/weather/', 'GET /weather'],
    ['GET', '/weather//', 'GET /weather'],
    ['GET', '//weather', 'GET /weather'],
    ['GET', '///weather', 'GET /weather'],
    ['GET', '/./weather', 'GET /weather'],
    ['GET', '/weather/.', 'GET /weather'],
    ['GET', '/x/../weather', 'GET /weather'],
    ['GET', '/x/y/../../weather', 'GET /weather'],
    ['GET', '/../weather', 'GET /weather'],
    // percent-encoding, once and more
    ['GET', '/%77eather', 'GET /weather'],
    ['GET', '/%57EATHER', 'GET /weather'],
    ['GET', '/weather%2F', 'GET /weather'],
    ['GET', '/weather%2f', 'GET /weather'],
    ['GET', '/%2Fweather', 'GET /weather'],
    ['GET', '/x/..%2Fweather', 'GET /weather'],
    ['GET', '/x/%2e%2e/weather', 'GET /weather'],
    ['GET', '/x%2F%2E%2E%2Fweather', 'GET /weather'],
    ['GET', '/weather%252F', 'GET /weather'],
    ['GET', '/%2577eather', 'GET /weather'],
    ['GET', '/weather%25252F', 'GET /weather'],
    ['GET', '/weather%2525252F', 'refused'],
    // separators other servers honour: backslash, matrix parameters, NUL, encoded ? and #
    ['GET', '/weather\\', 'GET /weather'],
    ['GET', '/weather%5C', 'GET /weather'],
    ['GET', '/x%5C..%5Cweather', 'GET /weather'],
    ['GET', '/weather;jsessionid=1', 'GET /weather'],
    ['GET', '/weather;', 'GET /weather'],
    ['GET', '/weather;/../free', 'GET /weather'],
    ['GET', '/free/..;/weather', 'GET /weather'],
    ['GET', '/weather%3B', 'GET /weather'],
    ['GET', '/weather%00', 'GET /weather'],
    ['GET', '/weather%00.png', 'GET /weather'],
    ['GET', '/weather%3Fx=1', 'GET /weather'],
    ['GET', '/weather%23top', 'GET /weather'],
    // methods: GET covers HEAD; a method-less route covers all
    ['HEAD', '/weather', 'GET /weather'],
    ['head', '/weather', 'GET /weather'],
    ['POST', '/weather', undefined],
    ['OPTIONS', '/weather', undefined],
    ['GET', '/admin', '/admin/*'],
    ['POST', '/admin/users/1', '/admin/*'],
    ['DELETE', '/ADMIN/x', '/admin/*'],
    ['PATCH', '/admin%2Fx', '/admin/*'],
    ['GET', '/x/../admin/users', '/admin/*'],
    ['GET', '/free/..%2F..%2Fadmin/x', '/admin/*'],
    // a router matching raw segments reads `..` literally, and would serve the tail route
    ['GET', '/admin/..%2F..%2Ffree', '/admin/*'],
    ['GET', '/admin/../free', '/admin/*'],
    // `*` covers one or more segments, including one holding an encoded slash
    ['POST', '/files/a/meta', 'POST /files/*/meta'],
    ['POST', '/files/a/b/meta', 'POST /files/*/meta'],
    ['POST', '/files/a%2Fb/meta', 'POST /files/*/meta'],
    ['POST', '/FILES/a/META/', 'POST /files/*/meta'],
    ['POST', '/files/meta', undefined],
    // unicode, decoded from UTF-8
    ['GET', '/caf%C3%A9', 'GET /café'],
    ['GET', '/CAF%C3%89', 'GET /café'],
    // other resources stay free
    ['GET', '/', undefined],
    ['GET', '/free', undefined],
    ['GET', '/weather.json', undefined],
    ['GET', '/weatherx', undefined],
    ['GET', '/administrator', undefined],
    ['GET', '/weather/../free', undefined],
    ['GET', '/weather%', undefined],
    ['GET', '/%E0%A4%A', undefined],
    ['GET', '/%C0%AFweather', undefined],
  ])('%s %s → %s', (method, target, expected) => {
    expect(routeOf(method, target)).toBe(expected)
  })

  it('reads a path every way a router might', () => {
    expect(readPath('/Weather;a=1/../Free%2Fx/')).toMatchInlineSnapshot(`
      [
        "/free/x",
        "/weather",
        "/weather;a=1/../free/x",
      ]
    `)
    expect(normalizePath('//A/./b/../C/')).toBe('/a/c')
    expect(normalizePath('/')).toBe('/')
  })

  it('matches the URL alone the same way (Hono routes on the URL)', () => {
    const readings = readTarget(new URL('http://localhost/x/..%2F%57eather%3B/'))
    expect(readings && findRoute(routes, 'GET', readings)?.key).toBe('GET /weather')
  })
})

describe('segment matching', () => {
  it.each<[string, string, boolean]>([
    ['/a', '/a', true],
    ['/a', '/a/b', false],
    ['/a/*', '/a', true],
    ['/a/*', '/a/b/c', true],
    ['/a/*/c', '/a/b/c', true],
    ['/a/*/c', '/a/b/x/c', true],
    ['/a/*/c', '/a/c', false],
    ['/a/*/c/*/e', '/a/b/c/d/c/e', true],
    ['/a/*/c/*/e', '/a/b/c/e', false],
    ['/*', '/', true],
    ['/', '/', true],
    ['/', '/a', false],
  ])('%s against %s → %s', (key, path, expected) => {
    const [route] = compileRoutes({ [key]: { price: '$1' } }, { payTo, network, schemes: [exactEvmServer()] })
    expect(findRoute([route!], 'GET', [path]) !== undefined).toBe(expected)
  })

  it('compiles `*` to one segment then any more', () => {
    const [route] = compileRoutes({ '/a/*/b/*': { price: '$1' } }, { payTo, network, schemes: [exactEvmServer()] })
    expect(route?.pattern).toEqual(['a', one, any, 'b', any])
  })

  it('stays fast on a path built to make a wildcard matcher backtrack', () => {
    const pattern: Segment[] = ['a', one, any, 'b', one, any, 'c', one, any, 'd']
    const path = ['a', ...Array.from({ length: 4000 }, (_, i) => ['b', 'c'][i % 2] as string), 'x']
    const started = performance.now()
    expect(matchSegments(pattern, path)).toBe(false)
    expect(performance.now() - started).toBeLessThan(250)
  })
})

describe('route config', () => {
  const compile = (config: RoutesConfig, defaults: { payTo?: string; network?: string } = { payTo, network }) =>
    compileRoutes(config, { ...defaults, schemes: [exactEvmServer()] })

  it('builds fixed offers once, and probes dynamic ones', () => {
    const [route] = compile({ 'GET /a': { price: '$0.001', description: 'A' }, 'GET /b': { price: () => '$1' } })
    expect(route?.offers[0]?.fixed).toMatchInlineSnapshot(`
      {
        "amount": "1000",
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "extra": {
          "name": "USDC",
          "version": "2",
        },
        "maxTimeoutSeconds": 300,
        "network": "eip155:84532",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "scheme": "exact",
      }
    `)
    expect(compile({ 'GET /b': { price: () => '$1' } })[0]?.offers[0]?.fixed).toBeUndefined()
  })

  it.each<[string, RoutesConfig, RegExp]>([
    ['an unknown network', { 'GET /a': { price: '$1', network: 'eip155:nope' } }, /Route "GET \/a": Unknown network "eip155:nope"/],
    ['a network without a default asset', { 'GET /a': { price: '$1', network: 'eip155:11155111' } }, /Route "GET \/a": No default asset/],
    ['a price that is not money', { 'GET /a': { price: 'one dollar' } }, /Route "GET \/a": Invalid amount "one dollar"/],
    ['a price finer than the asset', { 'GET /a': { price: '$0.0000001' } }, /has 7 decimals; the asset has 6/],
    ['a negative price', { 'GET /a': { price: -1 } }, /Invalid amount -1/],
    ['a bad payTo', { 'GET /a': { price: '$1', payTo: '0x1234' } }, /Route "GET \/a": Address "0x1234" is invalid/],
    ['a bad timeout', { 'GET /a': { price: '$1', maxTimeoutSeconds: -5 } }, /maxTimeoutSeconds/],
    [
      'an unknown scheme',
      { 'GET /a': { price: '$1', scheme: 'upto' } },
      /uses the scheme "upto", which the paywall has no server part for/,
    ],
    ['no price', { 'GET /a': { description: 'free?' } }, /Route "GET \/a" has no price/],
    ['no leading slash', { 'GET weather': { price: '$1' } }, /is not "METHOD \/path" or "\/path"/],
    ['an unknown method', { 'FETCH /a': { price: '$1' } }, /unknown method "FETCH"/],
    ['a :param segment', { 'GET /users/:id': { price: '$1' } }, /A variable part is a whole segment written "\*"/],
    ['a partial wildcard', { 'GET /files/*.json': { price: '$1' } }, /A variable part is a whole segment/],
    ['a dot segment', { 'GET /a/../b': { price: '$1' } }, /never has once normalised/],
    ['an encoded segment', { 'GET /a%2Fb': { price: '$1' } }, /never has once normalised/],
    ['a matrix parameter', { 'GET /a;b': { price: '$1' } }, /never has once normalised/],
    [
      'two keys for one route',
      { 'GET /Weather': { price: '$1' }, 'get /weather/': { price: '$2' } },
      /Routes "GET \/Weather" and "get \/weather\/" are the same route/,
    ],
    ['no routes', {}, /The paywall has no routes/],
  ])('refuses %s', (_, config, message) => {
    expect(() => compile(config)).toThrow(message)
  })

  it('refuses an offer without a network or payTo', () => {
    expect(() => compile({ 'GET /a': { price: '$1' } }, { payTo })).toThrow(/Route "GET \/a" has no network/)
    expect(() => compile({ 'GET /a': { price: '$1' } }, { network })).toThrow(/Route "GET \/a" has no payTo/)
  })

  it('lets accepts entries inherit from the route, then the paywall', () => {
    const [route] = compile({
      '/a': { price: '$0.01', maxTimeoutSeconds: 60, accepts: [{ price: '$0.02', network: 'base' }, { price: { atomic: '5' } }] },
    })
    expect(route?.method).toBeUndefined()
    expect(route?.offers.map((offer) => [offer.fixed?.network, offer.fixed?.amount, offer.fixed?.maxTimeoutSeconds])).toEqual([
      ['eip155:84532', '10000', 60],
      ['eip155:8453', '20000', 60],
      ['eip155:84532', '5', 60],
    ])
  })
})
