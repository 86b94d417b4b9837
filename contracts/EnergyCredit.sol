// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title EnergyCredit
/// @notice The payment token: credit in the local currency, minted by the treasury when a
///         participant tops up and burnt when they redeem it.
/// @dev `decimals` is fixed at deployment; the default suite uses 2 (one token = one currency
///      unit, the smallest unit = one cent). Prices on the market are in smallest units per kWh
///      and energy in Wh, so a trade's value is Wh × price / 1000 smallest units; the market keeps
///      those thousandths exact and rounds once per participant (see EnergyMarket).
contract EnergyCredit is ERC20, ERC20Permit, AccessControl {
    /// @notice Role that mints on top-up and burns on redemption.
    bytes32 public constant TREASURY_ROLE = keccak256("TREASURY_ROLE");

    uint8 private immutable _decimals;

    /// @notice Credit was issued against a payment received off chain.
    event ToppedUp(address indexed account, uint256 amount);
    /// @notice Credit was burnt against a payment made off chain.
    event Redeemed(address indexed account, uint256 amount);

    error ZeroAmount();

    /// @param name_ Token name, e.g. "meterchain credit (BRL)".
    /// @param symbol_ Token symbol, e.g. "cBRL".
    /// @param decimals_ Decimals of the token (2: the smallest unit is a cent).
    /// @param admin Holder of DEFAULT_ADMIN_ROLE.
    /// @param treasury First holder of TREASURY_ROLE.
    constructor(string memory name_, string memory symbol_, uint8 decimals_, address admin, address treasury)
        ERC20(name_, symbol_)
        ERC20Permit(name_)
    {
        _decimals = decimals_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(TREASURY_ROLE, treasury);
    }

    /// @notice Decimals of the token, fixed at deployment.
    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    /// @notice Issue credit to `account` after it paid the treasury off chain (a top-up).
    /// @param account Receiver of the credit.
    /// @param amount Amount in smallest units.
    function mint(address account, uint256 amount) external onlyRole(TREASURY_ROLE) {
        if (amount == 0) revert ZeroAmount();
        _mint(account, amount);
        emit ToppedUp(account, amount);
    }

    /// @notice Redeem credit that `account` approved (or permitted) the treasury to take; the
    ///         treasury pays the holder off chain.
    /// @param account Holder whose credit is burnt.
    /// @param amount Amount in smallest units.
    function redeemFrom(address account, uint256 amount) external onlyRole(TREASURY_ROLE) {
        if (amount == 0) revert ZeroAmount();
        _spendAllowance(account, msg.sender, amount);
        _burn(account, amount);
        emit Redeemed(account, amount);
    }

    /// @notice Burn credit the treasury holds itself (holders who sent credit to the treasury).
    /// @param amount Amount in smallest units.
    function redeem(uint256 amount) external onlyRole(TREASURY_ROLE) {
        if (amount == 0) revert ZeroAmount();
        _burn(msg.sender, amount);
        emit Redeemed(msg.sender, amount);
    }
}
