/** The HTTP header names of the x402 transport (specs/transports-v2/http.md). */
export const HttpHeader = {
  paymentRequired: 'PAYMENT-REQUIRED',
  paymentSignature: 'PAYMENT-SIGNATURE',
  paymentResponse: 'PAYMENT-RESPONSE',
  /** Version 1's payment header. */
  xPayment: 'X-PAYMENT',
  /** Version 1's settlement header. */
  xPaymentResponse: 'X-PAYMENT-RESPONSE',
  /** An access credential (a JWT): handed out with a paid answer on a route that grants one, sent back to be served on it. */
  paymentCredential: 'PAYMENT-CREDENTIAL',
} as const
