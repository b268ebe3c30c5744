// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @notice A test dollar that has EIP-2612 `permit` and no EIP-3009: what `exact` with a permit pays in.
/// @dev EIP-712 domain: name "Permit Dollar", version "1" (ERC20Permit's).
contract PermitToken is ERC20, ERC20Permit, Ownable {
    constructor() ERC20("Permit Dollar", "PUSD") ERC20Permit("Permit Dollar") Ownable(msg.sender) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
