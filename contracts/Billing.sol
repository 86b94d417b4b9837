// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice The part of EnergyMarket billing pays into.
interface IGridAccount {
    function depositGrid(uint256 amount) external;
}

/// @title Billing
/// @notice Monthly statements of each meter: the hash of the statement the utility issued, what
///         it says is owed, and what was paid against it, in EnergyCredit.
/// @dev A statement (JSON, meterchain.ledger.statements) is issued off chain from the market's
///      events; its keccak256 is recorded here once per meter and period, so the household and
///      the utility can both prove which statement was issued (a record is never rewritten).
///      Energy is paid from the meter's market balance as each interval settles; what the
///      balance could not pay (the market's `Shortfall`, absorbed by the grid account) is owed.
///      Anyone may pay it, from their wallet (approval or EIP-2612 permit); the payment goes
///      into the market's grid account, which absorbed the shortfall.
contract Billing is AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Role that records statements (the utility).
    bytes32 public constant BILLER_ROLE = keccak256("BILLER_ROLE");

    /// @notice The payment token.
    IERC20 public immutable credit;
    /// @notice The market whose grid account payments go to.
    IGridAccount public immutable market;

    /// @dev One slot: owed and paid, credit smallest units.
    struct Amounts {
        uint128 owed;
        uint128 paid;
    }

    mapping(bytes32 meterId => mapping(uint32 period => bytes32)) private _hashes;
    mapping(bytes32 meterId => mapping(uint32 period => Amounts)) private _amounts;

    /// @notice A statement was issued for a meter and period (YYYYMM).
    event StatementRecorded(bytes32 indexed meterId, uint32 indexed period, bytes32 hash, uint256 owed);
    /// @notice `payer` paid `amount` against a statement; `outstanding` is left.
    event StatementPaid(
        bytes32 indexed meterId, uint32 indexed period, address indexed payer, uint256 amount, uint256 outstanding
    );

    error InvalidPeriod(uint32 period);
    error ZeroHash(bytes32 meterId, uint32 period);
    error StatementAlreadyRecorded(bytes32 meterId, uint32 period, bytes32 hash);
    error UnknownStatement(bytes32 meterId, uint32 period);
    error ZeroAmount();
    error Overpayment(bytes32 meterId, uint32 period, uint256 amount, uint256 outstanding);
    error AmountTooLarge(uint256 amount);

    /// @param credit_ The payment token.
    /// @param market_ The market whose grid account receives payments.
    /// @param admin Holder of DEFAULT_ADMIN_ROLE.
    /// @param biller First holder of BILLER_ROLE.
    constructor(IERC20 credit_, IGridAccount market_, address admin, address biller) {
        credit = credit_;
        market = market_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(BILLER_ROLE, biller);
    }

    /// @notice Record the statement issued for a meter and period, once.
    /// @param meterId The meter.
    /// @param period The billing period as YYYYMM (e.g. 202611).
    /// @param hash keccak256 of the statement's canonical JSON.
    /// @param owed What the statement says is owed, credit smallest units.
    function record(bytes32 meterId, uint32 period, bytes32 hash, uint256 owed) external onlyRole(BILLER_ROLE) {
        uint256 month = period % 100;
        if (month == 0 || month > 12 || period < 190001 || period > 999912) revert InvalidPeriod(period);
        if (hash == bytes32(0)) revert ZeroHash(meterId, period);
        bytes32 existing = _hashes[meterId][period];
        if (existing != bytes32(0)) revert StatementAlreadyRecorded(meterId, period, existing);
        if (owed > type(uint128).max) revert AmountTooLarge(owed);
        _hashes[meterId][period] = hash;
        _amounts[meterId][period] = Amounts(uint128(owed), 0);
        emit StatementRecorded(meterId, period, hash, owed);
    }

    /// @notice Pay `amount` of a statement from the caller's wallet (approve first).
    function pay(bytes32 meterId, uint32 period, uint256 amount) external nonReentrant {
        _pay(meterId, period, amount);
    }

    /// @notice Pay with an EIP-2612 permit signed by the caller instead of an approval.
    function payWithPermit(
        bytes32 meterId,
        uint32 period,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant {
        // A front-run permit is not an error: the allowance it set is what the payment needs.
        try IERC20Permit(address(credit)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _pay(meterId, period, amount);
    }

    function _pay(bytes32 meterId, uint32 period, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        if (_hashes[meterId][period] == bytes32(0)) revert UnknownStatement(meterId, period);
        Amounts memory amounts = _amounts[meterId][period];
        uint256 outstanding = amounts.owed - amounts.paid;
        if (amount > outstanding) revert Overpayment(meterId, period, amount, outstanding);
        _amounts[meterId][period].paid = amounts.paid + uint128(amount);
        emit StatementPaid(meterId, period, msg.sender, amount, outstanding - amount);
        credit.safeTransferFrom(msg.sender, address(this), amount);
        credit.forceApprove(address(market), amount);
        market.depositGrid(amount);
    }

    /// @notice A statement's hash (zero: none), what it says is owed and what was paid.
    function statement(bytes32 meterId, uint32 period) external view returns (bytes32 hash, uint256 owed, uint256 paid) {
        Amounts memory amounts = _amounts[meterId][period];
        return (_hashes[meterId][period], amounts.owed, amounts.paid);
    }
}
