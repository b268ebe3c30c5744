import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Base64Json from './Base64Json.ts'
import { type BaseError, ParseError } from './Errors.ts'
import * as Facilitator from './Facilitator.ts'
import * as PaymentPayload from './PaymentPayload.ts'
import * as PaymentRequired from './PaymentRequired.ts'
import type * as PaymentRequirements from './PaymentRequirements.ts'

const offer: PaymentRequirements.PaymentRequirements = {
  scheme: 'exact',
  network: 'eip155:8453',
  amount: '1000',
  asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913',
  payTo: '0x209693Bc6afc0C5328bA36FaF03C514EF312287C',
  maxTimeoutSeconds: 60,
  extra: { name: 'USD Coin', version: '2' },
}

const required: PaymentRequired.PaymentRequired = {
  x402Version: 2,
  error: 'Payment required',
  resource: { url: 'https://api.example.com/weather', description: 'Weather', mimeType: 'application/json' },
  accepts: [offer],
}

const payload: PaymentPayload.PaymentPayload = {
  x402Version: 2,
  resource: required.resource,
  accepted: offer,
  payload: { signature: '0xabc', authorization: { from: '0x1', nonce: '0x2' } },
}

describe('PaymentRequired', () => {
  it('encodes as base64 of UTF-8 JSON', () => {
    const header = PaymentRequired.encode(required)
    expect(JSON.parse(Buffer.from(header, 'base64').toString('utf8'))).toEqual(required)
    expect(PaymentRequired.decode(header)).toEqual(required)
  })

  it('has a version 1 form with network names and maxAmountRequired', () => {
    expect(PaymentRequired.toV1(required)).toMatchInlineSnapshot(`
      {
        "accepts": [
          {
            "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            "description": "Weather",
            "extra": {
              "name": "USD Coin",
              "version": "2",
            },
            "maxAmountRequired": "1000",
            "maxTimeoutSeconds": 60,
            "mimeType": "application/json",
            "network": "base",
            "outputSchema": null,
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "resource": "https://api.example.com/weather",
            "scheme": "exact",
          },
        ],
        "error": "Payment required",
        "x402Version": 1,
      }
    `)
  })

  it('round-trips through the version 1 form', () => {
    const back = PaymentRequired.fromV1(PaymentRequired.toV1(required))
    expect(back.accepts).toEqual([offer])
    expect(back.resource.url).toBe(required.resource.url)
  })

  it('leaves out offers on networks version 1 cannot name', () => {
    const v1 = PaymentRequired.toV1({ ...required, accepts: [offer, { ...offer, network: 'eip155:42161' }] })
    expect(v1.accepts).toHaveLength(1)
  })
})

describe('PaymentPayload', () => {
  it('decodes both versions', () => {
    expect(PaymentPayload.decode(PaymentPayload.encode(payload))).toEqual(payload)
    const v1 = { x402Version: 1 as const, scheme: 'exact', network: 'base', payload: { signature: '0x' } }
    expect(PaymentPayload.decode(PaymentPayload.encode(v1))).toEqual(v1)
  })

  it('finds the offer a version 1 payload pays', () => {
    const v1 = { x402Version: 1 as const, scheme: 'exact', network: 'base', payload: { signature: '0x' } }
    expect(PaymentPayload.toV2(v1, [offer])?.accepted).toEqual(offer)
    expect(PaymentPayload.toV2({ ...v1, network: 'polygon' }, [offer])).toBeUndefined()
  })

  it.each([
    ['not base64', '!!!!', /not base64/],
    ['base64 of non-JSON', Buffer.from('hello').toString('base64'), /not base64 of JSON/],
    ['JSON of the wrong shape', Base64Json.encode({ x402Version: 2 }), /does not match the schema at accepted/],
    ['an unknown version', Base64Json.encode({ ...payload, x402Version: 3 }), /does not match the schema/],
    ['an amount with decimals', Base64Json.encode({ ...payload, accepted: { ...offer, amount: '1.5' } }), /accepted.amount/],
    ['a negative timeout', Base64Json.encode({ ...payload, accepted: { ...offer, maxTimeoutSeconds: -1 } }), /maxTimeoutSeconds/],
    ['an empty string', '', /not base64/],
  ])('refuses %s with a clear error', (_, header, message) => {
    expect(() => PaymentPayload.decode(header)).toThrow(message)
    expect(() => PaymentPayload.decode(header)).toThrow(ParseError)
  })

  it('refuses an oversized header before decoding it', () => {
    const huge = 'A'.repeat(Base64Json.defaultMaxLength + 4)
    try {
      PaymentPayload.decode(huge)
      expect.unreachable()
    } catch (error) {
      expect((error as BaseError).code).toBe('payment_header_too_large')
    }
  })
})

describe('codec properties', () => {
  const offerArbitrary = fc.record({
    scheme: fc.stringMatching(/^[a-z-]{1,16}$/),
    network: fc.integer({ min: 1, max: 2 ** 31 }).map((id) => `eip155:${id}`),
    amount: fc.bigInt({ min: 0n, max: 2n ** 256n - 1n }).map(String),
    asset: fc.stringMatching(/^0x[0-9a-f]{40}$/),
    payTo: fc.stringMatching(/^0x[0-9a-f]{40}$/),
    maxTimeoutSeconds: fc.integer({ min: 1, max: 86400 }),
    extra: fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string(), fc.integer(), fc.boolean()), { maxKeys: 3 }),
  })

  it('any valid payment required round-trips through its header', () => {
    fc.assert(
      fc.property(
        fc.array(offerArbitrary, { minLength: 1, maxLength: 4 }),
        fc.webUrl(),
        fc.string({ maxLength: 64 }),
        (accepts, url, description) => {
          const value: PaymentRequired.PaymentRequired = { x402Version: 2, resource: { url, description }, accepts }
          expect(PaymentRequired.decode(PaymentRequired.encode(value))).toEqual(value)
        },
      ),
    )
  })

  it('any payload round-trips through its header', () => {
    fc.assert(
      fc.property(
        offerArbitrary,
        fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
        (accepted, inner) => {
          const value = { x402Version: 2 as const, accepted, payload: inner }
          expect(PaymentPayload.decode(PaymentPayload.encode(value))).toEqual(JSON.parse(JSON.stringify(value)))
        },
      ),
    )
  })

  it('garbage headers give a ParseError, never a crash', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.base64String(),
          fc.jsonValue().map((v) => Base64Json.encode(v)),
        ),
        (header) => {
          try {
            PaymentPayload.decode(header)
          } catch (error) {
            expect(error).toBeInstanceOf(ParseError)
          }
          try {
            PaymentRequired.decode(header)
          } catch (error) {
            expect(error).toBeInstanceOf(ParseError)
          }
        },
      ),
      { numRuns: 3000 },
    )
  })
})

describe('Facilitator.toPayment', () => {
  it('normalises a version 1 request to the version 2 form', () => {
    const v1Offer = PaymentRequired.toV1(required).accepts[0]!
    const request = Facilitator.verifyRequest.parse({
      x402Version: 1,
      paymentPayload: { x402Version: 1, scheme: 'exact', network: 'base', payload: { signature: '0x' } },
      paymentRequirements: v1Offer,
    })
    const payment = Facilitator.toPayment(request)
    expect(payment?.requirements.network).toBe('eip155:8453')
    expect(payment?.requirements.amount).toBe('1000')
    expect(payment?.payload.accepted).toEqual(payment?.requirements)
  })
})
