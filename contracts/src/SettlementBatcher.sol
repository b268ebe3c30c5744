// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @notice Settles many EIP-3009 `transferWithAuthorization` payments in one transaction, each in
///         isolation: an authorization the token refuses emits `Failed` and the others go on.
/// @dev No storage, no owner, holds no funds. Anyone may call it, as anyone may submit an EIP-3009
///      authorization: the token checks the payer's signature and `msg.sender` plays no part.
///
///      Each item's call gets exactly `ITEM_GAS`, so one item cannot eat the batch's gas, and at most
///      `MAX_REASON` bytes of its revert data are copied, so a return-data bomb costs nothing.
///      Before each item the whole call reverts with `InsufficientGas(index)` unless `gasleft()`
///      covers `ITEM_GAS` under the 63/64 rule plus the item's own overhead (call, copy, `Failed`
///      log): a too-low gas limit never makes items fail (or get skipped) silently, it sinks the
///      batch with nothing moved. Estimate gas for the whole batch before sending it.
contract SettlementBatcher {
    /// @dev The arguments of `transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)`, in order.
    struct Authorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice Item `index` reverted; `reason` is the first 256 bytes of its revert data.
    event Failed(uint256 indexed index, bytes reason);

    /// @notice `token` has no code: a call to it would "succeed" without moving anything.
    error TokenHasNoCode(address token);

    /// @notice Too little gas was left to run item `index` with its full `ITEM_GAS`.
    error InsufficientGas(uint256 index);

    /// @dev Gas forwarded to each item; FiatTokenV2_2 uses about 60,000 (more for an ERC-1271 payer).
    uint256 internal constant ITEM_GAS = 200_000;
    /// @dev ITEM_GAS * 64 / 63 (so the 63/64 rule leaves the call its whole bound) + 10,000 for the
    ///      call itself, the revert copy, the `Failed` log and the loop.
    uint256 internal constant GAS_PER_ITEM_NEEDED = 213_175;
    uint256 internal constant MAX_REASON = 256;
    /// @dev 9 static words: the items are contiguous in calldata and are copied as they are.
    uint256 internal constant ITEM_SIZE = 288;
    /// @dev `transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)`.
    uint256 internal constant TRANSFER_WITH_AUTHORIZATION = 0xe3ee160e;

    /// @notice Calls `token.transferWithAuthorization(from, to, value, validAfter, validBefore, nonce, v, r, s)`
    ///         for each item. A failing item emits `Failed(index, reason)` and the others go on.
    /// @return settled How many items succeeded.
    function settle(address token, Authorization[] calldata items) external returns (uint256 settled) {
        if (token.code.length == 0) revert TokenHasNoCode(token);
        bytes32 failed = Failed.selector;
        bytes4 insufficientGas = InsufficientGas.selector;
        assembly ("memory-safe") {
            // Scratch space past the free memory pointer, reused by every item: the call's input,
            // then the `Failed` data (offset, length, reason).
            let buffer := mload(0x40)
            let item := items.offset
            let end := add(item, mul(items.length, ITEM_SIZE))
            for { let index := 0 } lt(item, end) {
                item := add(item, ITEM_SIZE)
                index := add(index, 1)
            } {
                if lt(gas(), GAS_PER_ITEM_NEEDED) {
                    mstore(0, insufficientGas)
                    mstore(4, index)
                    revert(0, 0x24)
                }
                mstore(buffer, shl(224, TRANSFER_WITH_AUTHORIZATION))
                calldatacopy(add(buffer, 4), item, ITEM_SIZE)
                switch call(ITEM_GAS, token, 0, buffer, add(4, ITEM_SIZE), 0, 0)
                case 1 { settled := add(settled, 1) }
                default {
                    let size := returndatasize()
                    if gt(size, MAX_REASON) { size := MAX_REASON }
                    mstore(buffer, 0x20)
                    mstore(add(buffer, 0x20), size)
                    // Zero the last word first: the ABI pads `reason` with zeros, and the buffer holds
                    // the call's input.
                    mstore(add(add(buffer, 0x40), and(size, not(31))), 0)
                    returndatacopy(add(buffer, 0x40), 0, size)
                    log2(buffer, add(0x40, and(add(size, 31), not(31))), failed, index)
                }
            }
        }
    }
}
