// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice The part of EnergyMarket prepaid metering uses.
interface IPrepaidMarket {
    function credit() external view returns (IERC20);
    function registry() external view returns (IPrepaidRegistry);
    function deposit(bytes32 meterId, uint256 amount) external;
    function balanceOf(bytes32 meterId) external view returns (uint256);
    function requestWithdrawal(bytes32 meterId, uint256 amount) external;
    function withdraw(bytes32 meterId, address to) external;
    function pendingWithdrawal(bytes32 meterId) external view returns (uint256 amount, uint256 availableAt);
    function tariffs() external view returns (uint256 retailPrice, uint256 feedInPrice);
    function intervalSeconds() external view returns (uint256);
}

/// @notice The part of MeterRegistry prepaid metering uses.
interface IPrepaidRegistry {
    function lookup(bytes32 meterId) external view returns (uint256 record, bool callerIsMarket);
    function ownerOf(bytes32 meterId) external view returns (address);
}

/// @title PrepaidMeter
/// @notice Prepaid supply on top of EnergyMarket: a meter's credit is its market balance (in
///         EnergyCredit) less what the utility lent it; consumption is debited by the market's
///         delivery settlement from the signed readings (imports at the tariff in force, local
///         purchases at their price). Top-ups come from a wallet (approve or EIP-2612 permit)
///         or from a voucher the utility's vending key signed (one use, bound to one meter).
///         When the credit falls past the emergency credit, `assess` cuts the meter off (an
///         event the operator's agent turns into a relay command), but never at night, on a
///         day the rules exclude (weekends, Fridays), on a public holiday or the day before
///         one, and never for a meter on the never-cut list (medical equipment); a top-up that
///         brings the credit above zero reconnects it.
/// @dev The market balance can never go below zero: a delivery that finds it empty writes the
///      rest off to the grid. So that no prepaid consumption is ever written off, the utility's
///      float lends each supplied meter enough to keep in its market balance what one interval
///      at its connection's limit costs at retail (or `advanceBuffer` if more), recorded as the
///      meter's debt: the market refuses readings beyond the connection's limit, so a meter
///      assessed after every delivery never owes more than its balance. A top-up repays the
///      debt first, as STS prepaid meters recover emergency credit. The credit the household sees is balance − debt, which goes
///      negative while it uses emergency credit or a grace period the rules impose. Prepaid
///      meters are registered with this contract as their owner, so only it can withdraw from
///      their market balance (the household withdraws its own credit through it).
contract PrepaidMeter is AccessControl, EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Role of the utility: enrolment, rules, never-cut list, vending key, float.
    bytes32 public constant GRID_ROLE = keccak256("GRID_ROLE");
    /// @notice EIP-712 type of a voucher the utility's vending key signs.
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(bytes32 meterId,uint64 amount,uint64 serial,uint64 expiry)");
    /// @notice A voucher's packed bytes: meterId 32 | amount 8 | serial 8 | expiry 8 | r 32 | s 32 | v 1.
    uint256 public constant VOUCHER_BYTES = 121;
    /// @notice At most this many low-credit thresholds.
    uint256 public constant MAX_THRESHOLDS = 8;

    /// @notice Supply states (0: not enrolled).
    uint8 public constant SUPPLIED = 1;
    uint8 public constant GRACE = 2;
    uint8 public constant CUT_OFF = 3;

    /// @notice Why a meter is in grace, or why a cut-off may not happen now.
    uint8 public constant REASON_EMERGENCY_CREDIT = 1; // credit in (-emergencyCredit, 0]
    uint8 public constant REASON_NIGHT = 2; // outside [cutFromHour, cutToHour) local time
    uint8 public constant REASON_DAY = 3; // a weekday the rules exclude (weekends, Fridays)
    uint8 public constant REASON_HOLIDAY = 4;
    uint8 public constant REASON_HOLIDAY_EVE = 5;
    uint8 public constant REASON_NEVER_CUT = 6;

    // Fields of a registry record (MeterRegistry.lookup).
    uint256 private constant _REC_REVOKED = 168;
    uint256 private constant _REC_MAX_POWER = 176;

    /// @notice Top-up sources (ToppedUp.source).
    uint8 public constant FROM_WALLET = 0;
    uint8 public constant FROM_VOUCHER = 1;

    /// @notice The market whose balances hold the credit.
    IPrepaidMarket public immutable market;
    /// @notice The market's registry of meters.
    IPrepaidRegistry public immutable registry;
    /// @notice The payment token.
    IERC20 public immutable credit;

    /// @dev A meter's prepaid account (one slot).
    struct Account {
        uint64 debt; // lent by the float, not repaid yet (smallest units)
        uint40 since; // when the current state began (Unix seconds)
        uint8 state; // 0 not enrolled, SUPPLIED, GRACE, CUT_OFF
        uint8 reason; // why in grace (REASON_*), 0 otherwise
        uint8 warned; // low-credit thresholds the credit is below (warned once each)
        bool neverCut; // on the never-cut list (life-sustaining equipment)
    }

    /// @dev When cut-offs may happen (one slot).
    struct Rules {
        int32 utcOffsetSeconds; // local time = UTC + offset (Fortaleza: -10800)
        uint8 cutFromHour; // first local hour a cut-off may happen
        uint8 cutToHour; // local hour from which it may not any more
        uint8 cutWeekdays; // bit d set: cut-offs allowed on weekday d (0 Sunday … 6 Saturday)
        bool noCutOnHolidayEve; // no cut-off the day before a holiday either
    }

    mapping(bytes32 meterId => Account) private _accounts;
    mapping(bytes32 meterId => address) private _holders;
    /// @dev Bit `serial % 256` of word `serial / 256`: the voucher was redeemed.
    mapping(uint256 word => uint256) private _usedVouchers;
    /// @dev Local day numbers (days since 1970-01-01 in local time) that are public holidays.
    mapping(uint256 day => bool) private _holidays;

    Rules private _rules;
    int64[] private _thresholds;
    /// @notice How far below zero a meter's credit may go before it is cut off (smallest units).
    uint64 public emergencyCredit;
    /// @notice The least the float keeps in a supplied meter's market balance, ahead of the
    ///         consumption the next delivery will debit (smallest units); a meter whose
    ///         connection can import more in one interval gets that interval's retail cost.
    uint64 public advanceBuffer;
    /// @notice The key that signs vouchers (zero: vouchers disabled).
    address public vendingKey;
    /// @notice The utility's credit held here to lend (advances) and to pay vouchers.
    uint256 public floatBalance;

    /// @dev Constructor settings.
    struct Settings {
        IPrepaidMarket market;
        address admin;
        address grid;
        address vendingKey;
        uint64 emergencyCredit;
        uint64 advanceBuffer;
        Rules rules;
    }

    /// @notice A meter now runs prepaid; `holder` may withdraw its credit.
    event Enrolled(bytes32 indexed meterId, address indexed holder, bool neverCut);
    /// @notice A meter joined (true) or left (false) the never-cut list.
    event NeverCutSet(bytes32 indexed meterId, bool neverCut);
    /// @notice Credit arrived for a meter: `repaid` of it paid its debt back, the rest went to
    ///         its market balance.
    event ToppedUp(bytes32 indexed meterId, address indexed payer, uint256 amount, uint256 repaid, uint8 source);
    /// @notice A voucher was redeemed (once and for all).
    event VoucherRedeemed(bytes32 indexed meterId, uint64 indexed serial, uint256 amount);
    /// @notice The float lent a meter `amount` (its market balance rose by it); `debt` is the total.
    event Advanced(bytes32 indexed meterId, uint256 amount, uint256 debt);
    /// @notice A meter's credit fell below a low-credit threshold (once per crossing).
    event LowCredit(bytes32 indexed meterId, int256 threshold, int256 credit);
    /// @notice A meter's supply state changed (SUPPLIED, GRACE, CUT_OFF) and why (REASON_*).
    event StateChanged(bytes32 indexed meterId, uint8 previous, uint8 state, uint8 reason, int256 credit);
    /// @notice Open the meter's relay: its credit is exhausted and the rules allow it now.
    event CutOff(bytes32 indexed meterId, int256 credit);
    /// @notice Close the meter's relay: its credit is above zero again.
    event Reconnect(bytes32 indexed meterId, int256 credit);
    /// @notice The cut-off rules changed.
    event RulesSet(int32 utcOffsetSeconds, uint8 cutFromHour, uint8 cutToHour, uint8 cutWeekdays, bool noCutOnHolidayEve);
    /// @notice A local day became (or stopped being) a public holiday.
    event HolidaySet(uint32 indexed day, bool holiday);
    /// @notice Emergency credit, advance buffer or thresholds changed.
    event CreditSettingsSet(uint64 emergencyCredit, uint64 advanceBuffer, int64[] thresholds);
    /// @notice The vending key changed (zero: vouchers disabled).
    event VendingKeySet(address indexed key);
    /// @notice Credit moved into (positive) or out of (negative) the float.
    event FloatChanged(address indexed account, int256 amount, uint256 floatBalance);
    /// @notice The holder asked to withdraw `amount` of the meter's credit (0: cancelled).
    event RefundRequested(bytes32 indexed meterId, uint256 amount);
    /// @notice The holder was paid `amount` of the meter's credit.
    event Refunded(bytes32 indexed meterId, address indexed to, uint256 amount);

    error ZeroAmount();
    error ZeroHolder(bytes32 meterId);
    error NotEnrolled(bytes32 meterId);
    error AlreadyEnrolled(bytes32 meterId);
    error UnknownMeter(bytes32 meterId);
    error MeterRevoked(bytes32 meterId);
    error NotOwnedByPrepaid(bytes32 meterId, address owner);
    error NotHolder(bytes32 meterId, address caller);
    error AmountTooLarge(uint256 amount);
    error InsufficientFloat(uint256 required, uint256 available);
    error MalformedVoucher(uint256 length);
    error VoucherForAnotherMeter(uint64 serial, bytes32 voucherMeterId, bytes32 meterId);
    error VoucherAlreadyUsed(uint64 serial);
    error VoucherExpired(uint64 serial, uint64 expiry);
    error InvalidVoucherSignature(uint64 serial, address recovered);
    error VouchersDisabled();
    error MeterNeverCut(bytes32 meterId);
    error AlreadyCutOff(bytes32 meterId);
    error CreditNotExhausted(bytes32 meterId, int256 credit, int256 limit);
    error CutOffNotAllowedNow(bytes32 meterId, uint256 time, uint8 reason);
    error InvalidRules(uint8 cutFromHour, uint8 cutToHour, int32 utcOffsetSeconds);
    error InvalidThresholds(uint256 index);
    error RefundExceedsCredit(bytes32 meterId, uint256 amount, int256 credit);

    /// @param settings The market, the first role holders, the vending key, emergency credit,
    ///        advance buffer and cut-off rules.
    constructor(Settings memory settings) EIP712("meterchain PrepaidMeter", "1") {
        market = settings.market;
        credit = settings.market.credit();
        registry = settings.market.registry();
        _grantRole(DEFAULT_ADMIN_ROLE, settings.admin);
        _grantRole(GRID_ROLE, settings.grid);
        _setRules(settings.rules);
        emergencyCredit = settings.emergencyCredit;
        advanceBuffer = settings.advanceBuffer;
        vendingKey = settings.vendingKey;
        emit VendingKeySet(settings.vendingKey);
        emit CreditSettingsSet(settings.emergencyCredit, settings.advanceBuffer, _thresholds);
        // The market pulls deposits from here: advances, top-ups, voucher credit.
        credit.forceApprove(address(settings.market), type(uint256).max);
    }

    // ---------------------------------------------------------------- enrolment

    /// @notice Run a meter prepaid. The registrar must have registered it with this contract
    ///         as its owner, so that only this contract can withdraw from its market balance.
    /// @param meterId A registered, unrevoked meter owned by this contract.
    /// @param holder The household: may withdraw the meter's remaining credit.
    /// @param neverCut Put it on the never-cut list (life-sustaining equipment).
    function enrol(bytes32 meterId, address holder, bool neverCut) external onlyRole(GRID_ROLE) {
        if (holder == address(0)) revert ZeroHolder(meterId);
        if (_accounts[meterId].state != 0) revert AlreadyEnrolled(meterId);
        _requireActive(meterId);
        address owner = registry.ownerOf(meterId);
        if (owner != address(this)) revert NotOwnedByPrepaid(meterId, owner);
        _accounts[meterId] = Account(0, uint40(block.timestamp), SUPPLIED, 0, 0, neverCut);
        _holders[meterId] = holder;
        emit Enrolled(meterId, holder, neverCut);
        emit StateChanged(meterId, 0, SUPPLIED, 0, _credit(meterId, 0));
        _assess(meterId);
    }

    /// @notice Put a meter on the never-cut list (life-sustaining equipment) or take it off.
    ///         A meter put on it while cut off is reconnected by the next assessment.
    /// @param meterId An enrolled meter.
    /// @param neverCut True: it is never cut off.
    function setNeverCut(bytes32 meterId, bool neverCut) external onlyRole(GRID_ROLE) {
        _enrolled(meterId).neverCut = neverCut;
        emit NeverCutSet(meterId, neverCut);
        _assessIfActive(meterId);
    }

    // ---------------------------------------------------------------- top-ups

    /// @notice Top a meter up from the caller's wallet (approve this contract first). The
    ///         meter's debt is repaid first; a meter whose credit rises above zero is reconnected.
    /// @param meterId An enrolled, unrevoked meter.
    /// @param amount Smallest units.
    function topUp(bytes32 meterId, uint256 amount) external nonReentrant {
        _topUpFromWallet(meterId, amount);
    }

    /// @notice Top up with an EIP-2612 permit the caller signed instead of an approval.
    /// @param meterId An enrolled, unrevoked meter.
    /// @param amount Smallest units.
    /// @param deadline Permit deadline (Unix seconds).
    function topUpWithPermit(bytes32 meterId, uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        nonReentrant
    {
        // A front-run permit is not an error: the allowance it set is what the top-up needs.
        try IERC20Permit(address(credit)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _topUpFromWallet(meterId, amount);
    }

    /// @notice Redeem a voucher the utility's vending key signed: its credit, paid from the
    ///         float (the utility was paid at the counter), goes to the meter it names. Anyone
    ///         may submit it (a web page, the meter's display); it works once, for that meter.
    /// @param meterId The meter to top up: must be the one the voucher names.
    /// @param voucher Packed voucher (VOUCHER_BYTES).
    function redeemVoucher(bytes32 meterId, bytes calldata voucher) external nonReentrant {
        if (voucher.length != VOUCHER_BYTES) revert MalformedVoucher(voucher.length);
        bytes32 voucherMeter = bytes32(voucher[0:32]);
        uint64 amount = uint64(bytes8(voucher[32:40]));
        uint64 serial = uint64(bytes8(voucher[40:48]));
        uint64 expiry = uint64(bytes8(voucher[48:56]));
        if (voucherMeter != meterId) revert VoucherForAnotherMeter(serial, voucherMeter, meterId);
        address key = vendingKey;
        if (key == address(0)) revert VouchersDisabled();
        bytes32 digest =
            _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, voucherMeter, amount, serial, expiry)));
        (address recovered,,) =
            ECDSA.tryRecover(digest, uint8(voucher[120]), bytes32(voucher[56:88]), bytes32(voucher[88:120]));
        if (recovered != key) revert InvalidVoucherSignature(serial, recovered);
        uint256 word = _usedVouchers[serial >> 8];
        uint256 bit = uint256(1) << (serial & 0xff);
        if (word & bit != 0) revert VoucherAlreadyUsed(serial);
        if (expiry != 0 && block.timestamp > expiry) revert VoucherExpired(serial, expiry);
        if (amount == 0) revert ZeroAmount();
        uint256 available = floatBalance;
        if (available < amount) revert InsufficientFloat(amount, available);
        _usedVouchers[serial >> 8] = word | bit;
        floatBalance = available - amount;
        emit VoucherRedeemed(meterId, serial, amount);
        _addCredit(meterId, amount, msg.sender, FROM_VOUCHER);
    }

    /// @notice Whether a voucher serial has been redeemed.
    /// @param serial The voucher's serial.
    function voucherUsed(uint64 serial) external view returns (bool) {
        return _usedVouchers[serial >> 8] & (uint256(1) << (serial & 0xff)) != 0;
    }

    // ---------------------------------------------------------------- assessment

    /// @notice Apply the rules to a meter's credit now: lend it what keeps its market balance
    ///         at the advance buffer, warn at low-credit thresholds, cut it off if its credit
    ///         is exhausted and the rules allow a cut-off now (grace otherwise), reconnect it
    ///         when its credit is above zero. Anyone may call it (the operator's agent does
    ///         after each delivery).
    /// @param meterId An enrolled, unrevoked meter.
    function assess(bytes32 meterId) external nonReentrant {
        _enrolled(meterId);
        _requireActive(meterId);
        _assess(meterId);
    }

    /// @notice `assess` for several meters; meters not enrolled or revoked are skipped, so one
    ///         meter can never stop the others' assessment.
    /// @param meterIds The meters.
    function assessMany(bytes32[] calldata meterIds) external nonReentrant {
        for (uint256 i; i < meterIds.length; ++i) {
            if (_accounts[meterIds[i]].state != 0) _assessIfActive(meterIds[i]);
        }
    }

    /// @notice Ask for a meter's cut-off now; reverts naming why it may not happen (never-cut
    ///         list, credit not exhausted, the hour or day, already cut off).
    /// @param meterId An enrolled, unrevoked meter.
    function cutOff(bytes32 meterId) external nonReentrant {
        Account storage account = _enrolled(meterId);
        _requireActive(meterId);
        if (account.neverCut) revert MeterNeverCut(meterId);
        if (account.state == CUT_OFF) revert AlreadyCutOff(meterId);
        int256 available = _credit(meterId, account.debt);
        int256 limit = -int256(uint256(emergencyCredit));
        if (available > limit) revert CreditNotExhausted(meterId, available, limit);
        (bool allowed, uint8 reason) = cutOffAllowedAt(block.timestamp);
        if (!allowed) revert CutOffNotAllowedNow(meterId, block.timestamp, reason);
        _assess(meterId);
    }

    // ---------------------------------------------------------------- the holder's credit

    /// @notice The holder asks to withdraw `amount` of the meter's credit (0 cancels); it may
    ///         be paid after the market's withdrawal delay, if the credit still covers it.
    /// @param meterId An enrolled meter whose holder is the caller.
    /// @param amount Smallest units, at most the meter's credit.
    function requestRefund(bytes32 meterId, uint256 amount) external nonReentrant {
        Account storage account = _enrolled(meterId);
        if (_holders[meterId] != msg.sender) revert NotHolder(meterId, msg.sender);
        int256 available = _credit(meterId, account.debt);
        if (amount != 0 && int256(amount) > available) revert RefundExceedsCredit(meterId, amount, available);
        emit RefundRequested(meterId, amount);
        market.requestWithdrawal(meterId, amount);
    }

    /// @notice Pay the holder's requested refund once the market's delay has passed.
    /// @param meterId An enrolled meter whose holder is the caller.
    /// @param to Receiver of the credit.
    function refund(bytes32 meterId, address to) external nonReentrant {
        Account storage account = _enrolled(meterId);
        if (_holders[meterId] != msg.sender) revert NotHolder(meterId, msg.sender);
        (uint256 amount,) = market.pendingWithdrawal(meterId);
        int256 available = _credit(meterId, account.debt);
        if (int256(amount) > available) revert RefundExceedsCredit(meterId, amount, available);
        emit Refunded(meterId, to, amount);
        market.withdraw(meterId, to);
        _assessIfActive(meterId);
    }

    // ---------------------------------------------------------------- the grid's settings

    /// @notice Set when cut-offs may happen.
    /// @param newRules Local time offset, allowed hours [from, to), allowed weekdays, holiday eves.
    function setRules(Rules calldata newRules) external onlyRole(GRID_ROLE) {
        _setRules(newRules);
    }

    /// @notice Mark local days (days since 1970-01-01, local time) as public holidays or not.
    /// @param daysList The local day numbers.
    /// @param holiday True: no cut-off on them (nor, with the eve rule, the day before).
    function setHolidays(uint32[] calldata daysList, bool holiday) external onlyRole(GRID_ROLE) {
        for (uint256 i; i < daysList.length; ++i) {
            _holidays[daysList[i]] = holiday;
            emit HolidaySet(daysList[i], holiday);
        }
    }

    /// @notice Set the emergency credit, the advance buffer and the low-credit thresholds.
    /// @param emergency How far below zero credit may go before a cut-off (smallest units).
    /// @param buffer What the float keeps in a supplied meter's market balance.
    /// @param levels Low-credit warning levels, strictly decreasing (at most MAX_THRESHOLDS).
    function setCreditSettings(uint64 emergency, uint64 buffer, int64[] calldata levels)
        external
        onlyRole(GRID_ROLE)
    {
        if (levels.length > MAX_THRESHOLDS) revert InvalidThresholds(MAX_THRESHOLDS);
        for (uint256 i = 1; i < levels.length; ++i) {
            if (levels[i] >= levels[i - 1]) revert InvalidThresholds(i);
        }
        emergencyCredit = emergency;
        advanceBuffer = buffer;
        _thresholds = levels;
        emit CreditSettingsSet(emergency, buffer, levels);
    }

    /// @notice Replace the vending key (zero disables vouchers). Vouchers signed by the old key
    ///         stop working; their serials stay spent.
    /// @param key The new vending key.
    function setVendingKey(address key) external onlyRole(GRID_ROLE) {
        vendingKey = key;
        emit VendingKeySet(key);
    }

    /// @notice Move credit from the caller into the float (approve first).
    /// @param amount Smallest units.
    function fundFloat(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        floatBalance += amount;
        emit FloatChanged(msg.sender, int256(amount), floatBalance);
        credit.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Take credit out of the float.
    /// @param amount Smallest units.
    /// @param to Receiver.
    function withdrawFloat(uint256 amount, address to) external onlyRole(GRID_ROLE) nonReentrant {
        uint256 available = floatBalance;
        if (available < amount) revert InsufficientFloat(amount, available);
        floatBalance = available - amount;
        emit FloatChanged(to, -int256(amount), floatBalance);
        credit.safeTransfer(to, amount);
    }

    // ---------------------------------------------------------------- views

    /// @notice A meter's credit (market balance less debt; negative in emergency or grace),
    ///         state, when it began, why (in grace), its debt and whether it is never cut.
    /// @param meterId The meter (state 0: not enrolled).
    function status(bytes32 meterId)
        external
        view
        returns (int256 creditUnits, uint8 state, uint256 since, uint8 reason, uint256 debt, bool neverCut)
    {
        Account memory account = _accounts[meterId];
        return (
            account.state == 0 ? int256(0) : _credit(meterId, account.debt),
            account.state,
            account.since,
            account.reason,
            account.debt,
            account.neverCut
        );
    }

    /// @notice The household that may withdraw the meter's credit.
    function holderOf(bytes32 meterId) external view returns (address) {
        return _holders[meterId];
    }

    /// @notice The cut-off rules.
    function rules() external view returns (Rules memory) {
        return _rules;
    }

    /// @notice The low-credit thresholds, strictly decreasing.
    function thresholds() external view returns (int64[] memory) {
        return _thresholds;
    }

    /// @notice Whether a local day is a public holiday.
    function isHoliday(uint32 day) external view returns (bool) {
        return _holidays[day];
    }

    /// @notice Whether the rules allow a cut-off at Unix time `time`, and if not, why.
    /// @param time Unix seconds.
    function cutOffAllowedAt(uint256 time) public view returns (bool allowed, uint8 reason) {
        Rules memory r = _rules;
        int256 local = int256(time) + r.utcOffsetSeconds;
        if (local < 0) return (false, REASON_NIGHT);
        uint256 day = uint256(local) / 1 days;
        uint256 hour = (uint256(local) % 1 days) / 1 hours;
        if (hour < r.cutFromHour || hour >= r.cutToHour) return (false, REASON_NIGHT);
        if ((r.cutWeekdays >> ((day + 4) % 7)) & 1 == 0) return (false, REASON_DAY); // 1970-01-01: Thursday
        if (_holidays[day]) return (false, REASON_HOLIDAY);
        if (r.noCutOnHolidayEve && _holidays[day + 1]) return (false, REASON_HOLIDAY_EVE);
        return (true, 0);
    }

    /// @notice The EIP-712 digest the vending key signs for a voucher.
    function hashVoucher(bytes32 meterId, uint64 amount, uint64 serial, uint64 expiry) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, meterId, amount, serial, expiry)));
    }

    /// @notice The EIP-712 domain separator vouchers are signed under.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- internals

    function _topUpFromWallet(bytes32 meterId, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint64).max) revert AmountTooLarge(amount);
        credit.safeTransferFrom(msg.sender, address(this), amount);
        _addCredit(meterId, amount, msg.sender, FROM_WALLET);
    }

    /// @dev `amount` is held here: repay the meter's debt first (to the float), deposit the rest
    ///      into its market balance, then assess (a reconnect if its credit is above zero).
    function _addCredit(bytes32 meterId, uint256 amount, address payer, uint8 source) private {
        Account storage account = _enrolled(meterId);
        _requireActive(meterId);
        uint256 debt = account.debt;
        uint256 repaid = amount < debt ? amount : debt;
        if (repaid != 0) {
            account.debt = uint64(debt - repaid);
            floatBalance += repaid;
        }
        emit ToppedUp(meterId, payer, amount, repaid, source);
        if (amount > repaid) market.deposit(meterId, amount - repaid);
        _assess(meterId);
    }

    /// @dev The rules, applied to an enrolled, unrevoked meter (see `assess`).
    function _assess(bytes32 meterId) private {
        Account memory account = _accounts[meterId];
        uint256 balance = market.balanceOf(meterId);
        int256 available = int256(balance) - int256(uint256(account.debt));
        (uint8 state, uint8 reason) = _nextState(account, available);
        uint256 buffer = state == CUT_OFF ? 0 : _bufferFor(meterId);
        if (balance < buffer) {
            uint256 amount = buffer - balance;
            uint256 floatFunds = floatBalance;
            if (amount > floatFunds) amount = floatFunds;
            if (amount != 0) {
                floatBalance = floatFunds - amount;
                account.debt += uint64(amount);
                emit Advanced(meterId, amount, account.debt);
                market.deposit(meterId, amount);
            }
        }
        uint8 below = _thresholdsCrossed(available);
        if (below > account.warned) emit LowCredit(meterId, _thresholds[below - 1], available);
        account.warned = below;
        if (state != account.state || reason != account.reason) {
            emit StateChanged(meterId, account.state, state, reason, available);
            if (state == CUT_OFF) emit CutOff(meterId, available);
            else if (account.state == CUT_OFF) emit Reconnect(meterId, available);
            if (state != account.state) account.since = uint40(block.timestamp);
            account.state = state;
            account.reason = reason;
        }
        _accounts[meterId] = account;
    }

    function _assessIfActive(bytes32 meterId) private {
        (uint256 record,) = registry.lookup(meterId);
        if (address(uint160(record)) != address(0) && (record >> _REC_REVOKED) & 0xff == 0) _assess(meterId);
    }

    /// @dev What the float keeps in the meter's balance: one interval at its connection's limit
    ///      at retail (the most one delivery can debit it), or `advanceBuffer` if more.
    function _bufferFor(bytes32 meterId) private view returns (uint256) {
        (uint256 record,) = registry.lookup(meterId);
        (uint256 retail,) = market.tariffs();
        uint256 energyWh = _ceilDiv(((record >> _REC_MAX_POWER) & 0xffffffff) * market.intervalSeconds(), 1 hours);
        uint256 cost = _ceilDiv(energyWh * retail, 1000);
        uint256 least = advanceBuffer;
        return cost > least ? cost : least;
    }

    function _ceilDiv(uint256 a, uint256 b) private pure returns (uint256) {
        return a == 0 ? 0 : (a - 1) / b + 1;
    }

    /// @dev The state the rules give a meter with credit `available` now.
    function _nextState(Account memory account, int256 available) private view returns (uint8, uint8) {
        if (available > 0) return (SUPPLIED, 0);
        bool exhausted = available <= -int256(uint256(emergencyCredit));
        if (account.neverCut) return (GRACE, exhausted ? REASON_NEVER_CUT : REASON_EMERGENCY_CREDIT);
        if (account.state == CUT_OFF) return (CUT_OFF, 0); // reconnected only above zero
        if (!exhausted) return (GRACE, REASON_EMERGENCY_CREDIT);
        (bool allowed, uint8 reason) = cutOffAllowedAt(block.timestamp);
        return allowed ? (CUT_OFF, 0) : (GRACE, reason);
    }

    /// @dev How many thresholds the credit is below (they decrease, so the first ones).
    function _thresholdsCrossed(int256 available) private view returns (uint8 count) {
        uint256 n = _thresholds.length;
        while (count < n && available < _thresholds[count]) ++count;
    }

    function _credit(bytes32 meterId, uint256 debt) private view returns (int256) {
        return int256(market.balanceOf(meterId)) - int256(debt);
    }

    function _enrolled(bytes32 meterId) private view returns (Account storage account) {
        account = _accounts[meterId];
        if (account.state == 0) revert NotEnrolled(meterId);
    }

    function _requireActive(bytes32 meterId) private view {
        (uint256 record,) = registry.lookup(meterId);
        if (address(uint160(record)) == address(0)) revert UnknownMeter(meterId);
        if ((record >> _REC_REVOKED) & 0xff != 0) revert MeterRevoked(meterId);
    }

    function _setRules(Rules memory r) private {
        if (r.cutFromHour >= r.cutToHour || r.cutToHour > 24 || r.utcOffsetSeconds % 60 != 0
            || r.utcOffsetSeconds < -14 hours || r.utcOffsetSeconds > 14 hours) {
            revert InvalidRules(r.cutFromHour, r.cutToHour, r.utcOffsetSeconds);
        }
        _rules = r;
        emit RulesSet(r.utcOffsetSeconds, r.cutFromHour, r.cutToHour, r.cutWeekdays, r.noCutOnHolidayEve);
    }
}
