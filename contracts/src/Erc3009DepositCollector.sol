// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IDepositCollector} from "./interfaces/IDepositCollector.sol";
import {IERC3009} from "./interfaces/IERC3009.sol";

/// @title Erc3009DepositCollector
/// @notice Pulls a `batch-settlement` deposit with EIP-3009 `receiveWithAuthorization`, so the payer
///         signs once and pays no gas. Call-compatible with the reference collector at
///         0x4020806089470a89826cB9fB1f4059150b550004.
/// @dev The payer authorizes a transfer to this collector (EIP-3009 makes the payee the caller) with
///      nonce `keccak256(abi.encode(channelId, salt))`: the signature funds one channel only, whoever
///      relays it. The tokens are passed on to the escrow within the same call.
contract Erc3009DepositCollector is IDepositCollector {
    using SafeERC20 for IERC20;

    /// @notice The only escrow this collector serves. Set at construction: deploy with the escrow's
    ///         final address before placing the runtime code anywhere.
    address public immutable batchSettlement;

    error InvalidBatchSettlement();
    error OnlyBatchSettlement();

    constructor(address batchSettlement_) {
        if (batchSettlement_ == address(0)) revert InvalidBatchSettlement();
        batchSettlement = batchSettlement_;
    }

    /// @param collectorData `abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature)`.
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
    {
        // Anyone else could spend an authorization seen in the mempool into a channel of their choosing.
        if (msg.sender != batchSettlement) revert OnlyBatchSettlement();
        (uint256 validAfter, uint256 validBefore, uint256 salt, bytes memory signature) =
            abi.decode(collectorData, (uint256, uint256, uint256, bytes));
        bytes32 nonce = keccak256(abi.encode(channelId, salt));
        IERC3009(token).receiveWithAuthorization(payer, address(this), amount, validAfter, validBefore, nonce, signature);
        IERC20(token).safeTransfer(msg.sender, amount);
    }
}
