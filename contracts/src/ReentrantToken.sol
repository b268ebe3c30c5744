// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IDepositCollector} from "./interfaces/IDepositCollector.sol";

/// @notice Test only: a hostile ERC-20 that calls back into a target while tokens move, to prove the
///         escrow pays nothing twice. It is also its own deposit collector (minting the deposit), so it
///         can call back in the middle of `deposit` too. Anyone may mint and arm it.
contract ReentrantToken is ERC20, IDepositCollector {
    address public target;
    bytes public callback;
    /// @notice Calls made back into `target`, and how the last one ended.
    uint256 public reentries;
    bool public lastSucceeded;
    bytes public lastResult;

    constructor() ERC20("Reentrant Dollar", "RUSD") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Calls `target` with `data` once, on the next transfer out of `target` or the next `collect`.
    function arm(address target_, bytes calldata data) external {
        target = target_;
        callback = data;
    }

    function collect(address, address, uint256 amount, bytes32, bytes calldata) external {
        _mint(msg.sender, amount);
        _callBack();
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (from != address(0) && from == target) _callBack();
    }

    function _callBack() private {
        if (callback.length == 0) return;
        bytes memory data = callback;
        delete callback;
        ++reentries;
        (lastSucceeded, lastResult) = target.call(data);
    }
}
