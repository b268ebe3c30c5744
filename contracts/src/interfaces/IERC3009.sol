// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice The EIP-3009 entry point a deposit needs: USDC (FiatTokenV2_2) accepts a packed 65-byte
///         ECDSA signature or an ERC-1271 signature from a contract payer.
interface IERC3009 {
    /// @dev Reverts unless `msg.sender == to`, which keeps a relayer from redirecting the transfer.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external;
}
