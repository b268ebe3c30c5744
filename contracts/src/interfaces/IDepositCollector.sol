// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice A pluggable way of pulling a deposit into `BatchSettlement`.
/// @dev The escrow calls `collect` and then checks its own token balance grew by exactly `amount`,
///      so a collector is trusted with nothing but moving the payer's tokens.
interface IDepositCollector {
    /// @notice Moves `amount` of `token` from `payer` to the calling escrow for channel `channelId`.
    /// @param collectorData Whatever the collector needs (signatures, deadlines, nonces), ABI-encoded.
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external;
}
