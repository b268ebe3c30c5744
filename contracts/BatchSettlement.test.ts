import { toEventSelector, toEventSignature, toFunctionSelector, toFunctionSignature } from 'viem'
import { expect, it } from 'vitest'
import { batchSettlementAbi, erc3009DepositCollectorAbi } from './artifacts/index.ts'

const config = '(address,address,address,address,address,uint40,bytes32)'
const voucherClaims = `((${config},uint128),bytes,uint128)[]`

// The interface of the reference x402BatchSettlement: what @x402/evm's batch-settlement ABI calls and
// reads, and the events and constants of the published contract (see BatchSettlement.md).
const reference = {
  functions: [
    'multicall(bytes[])',
    `deposit(${config},uint128,address,bytes)`,
    `claim(${voucherClaims})`,
    `claimWithSignature(${voucherClaims},bytes)`,
    'settle(address,address)',
    `initiateWithdraw(${config},uint128)`,
    `finalizeWithdraw(${config})`,
    `refund(${config},uint128)`,
    `refundWithSignature(${config},uint128,uint256,bytes)`,
    `getChannelId(${config})`,
    'getVoucherDigest(bytes32,uint128)',
    'getRefundDigest(bytes32,uint256,uint128)',
    `getClaimBatchDigest(${voucherClaims})`,
    'channels(bytes32)',
    'pendingWithdrawals(bytes32)',
    'receivers(address,address)',
    'refundNonce(bytes32)',
    'CHANNEL_CONFIG_TYPEHASH()',
    'VOUCHER_TYPEHASH()',
    'REFUND_TYPEHASH()',
    'CLAIM_ENTRY_TYPEHASH()',
    'CLAIM_BATCH_TYPEHASH()',
    'MIN_WITHDRAW_DELAY()',
    'MAX_WITHDRAW_DELAY()',
    'eip712Domain()',
  ],
  events: [
    `ChannelCreated(bytes32,${config})`,
    `ChannelClosed(bytes32,${config})`,
    'Deposited(bytes32,address,uint128,uint128)',
    'Claimed(bytes32,address,uint128,uint128)',
    'Settled(address,address,address,uint128)',
    'Refunded(bytes32,address,uint128)',
    'WithdrawInitiated(bytes32,uint128,uint40)',
    'WithdrawFinalized(bytes32,address,uint128)',
  ],
}

it('BatchSettlement has every function and event of the reference interface, selector for selector', () => {
  const functions = batchSettlementAbi.flatMap((item) => (item.type === 'function' ? [toFunctionSignature(item)] : []))
  const events = batchSettlementAbi.flatMap((item) => (item.type === 'event' ? [toEventSignature(item)] : []))
  expect(functions).toEqual(expect.arrayContaining(reference.functions))
  expect(events).toEqual(expect.arrayContaining(reference.events))
  expect(
    Object.fromEntries(reference.functions.map((signature) => [signature.slice(0, signature.indexOf('(')), toFunctionSelector(signature)])),
  ).toMatchInlineSnapshot(`
      {
        "CHANNEL_CONFIG_TYPEHASH": "0x8e4a68ac",
        "CLAIM_BATCH_TYPEHASH": "0x53ab0fae",
        "CLAIM_ENTRY_TYPEHASH": "0xba94ec0d",
        "MAX_WITHDRAW_DELAY": "0x1fc3277d",
        "MIN_WITHDRAW_DELAY": "0xae159439",
        "REFUND_TYPEHASH": "0x1e69ef40",
        "VOUCHER_TYPEHASH": "0x94739e87",
        "channels": "0x7a7ebd7b",
        "claim": "0x29237b0c",
        "claimWithSignature": "0xe43ce1f2",
        "deposit": "0x140f1e75",
        "eip712Domain": "0x84b0196e",
        "finalizeWithdraw": "0xe88377b1",
        "getChannelId": "0x5e5e0b87",
        "getClaimBatchDigest": "0x488ccc3b",
        "getRefundDigest": "0xe25cf189",
        "getVoucherDigest": "0x862bb199",
        "initiateWithdraw": "0xcf5cf3dc",
        "multicall": "0xac9650d8",
        "pendingWithdrawals": "0xb7f06ebe",
        "receivers": "0x21ff6389",
        "refund": "0xdce4bfae",
        "refundNonce": "0xf0dc792e",
        "refundWithSignature": "0xb77433e9",
        "settle": "0x9db32a8f",
      }
    `)
  expect(
    Object.fromEntries(reference.events.map((signature) => [signature.slice(0, signature.indexOf('(')), toEventSelector(signature)])),
  ).toMatchInlineSnapshot(`
      {
        "ChannelClosed": "0x8d5942f197f362dfd44dfdc1b0b7a9721c9151b67f55817c83349271d3c08d37",
        "ChannelCreated": "0x69d8248d5566bdb2ebc4d218970710d8378a2ff9b709a999e052b71970f808fa",
        "Claimed": "0x36bd546bb573e8921fdbfd934bbed62d872796b01792cd240cce27f79dd3eddd",
        "Deposited": "0x6c2a09353b5e75e70d0b9778b80a413809bb235d46c211811c474b3346791d89",
        "Refunded": "0xa84286cf8ebc7903a663c77c8d99aa92b600d4c2fcca872a5d4a663db4eb394b",
        "Settled": "0x7337b4386b690fdb8ba66905b92b9d45d33bc6626ee2620c905fb150ec0cc47d",
        "WithdrawFinalized": "0x546ce1e2242cd930c196bd08b894443562d709b4fffe4f028a75a6d233efc6e3",
        "WithdrawInitiated": "0xe4280d0d903c7f258f62b07c62f262377cbaa23f7791d78126e6446e0f0e3c23",
      }
    `)
})

it('Erc3009DepositCollector has the reference collector entry point', () => {
  const functions = erc3009DepositCollectorAbi.flatMap((item) => (item.type === 'function' ? [toFunctionSignature(item)] : []))
  expect(functions).toContain('collect(address,address,uint256,bytes32,bytes)')
  expect(toFunctionSelector('collect(address,address,uint256,bytes32,bytes)')).toMatchInlineSnapshot(`"0xe416d8d3"`)
})
