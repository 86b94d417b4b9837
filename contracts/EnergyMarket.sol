// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {MarketSignatures} from "./MarketSignatures.sol";
import {PackedCalldata} from "./PackedCalldata.sol";
import {Settlement} from "./Settlement.sol";

/// @notice The part of MeterRegistry the market reads.
interface IMeterRegistry {
    function lookup(bytes32 meterId) external view returns (uint256 record, bool callerIsMarket);
    function ownerOf(bytes32 meterId) external view returns (address);
    function revokeForEquivocation(bytes32 meterId) external;
}

/// @title EnergyMarket
/// @notice Verifies the operator's batches of matched trades against the meters' signed orders,
///         locks what each trade may cost, and settles each interval's delivery from the meters'
///         signed readings by rules no party or coalition can game (see Settlement).
/// @dev Gas design (DESIGN.md §5.1):
///      - An order is signed for this market (EIP-712 verifyingContract) and one interval; that
///        binding replaces per-order storage. Orders in a batch are sorted strictly by
///        (meterId, nonce), so none is counted twice; the check runs in memory.
///      - Each order's signature is verified once, however many trades it is in, and each meter
///        is looked up in the registry once per batch (one SLOAD there).
///      - One storage slot per meter holds the last settled interval, both cumulative registers
///        at its end and the meter's internal balance (four uint64).
///      - Money is netted per participant: a batch writes each trading meter's slot once, a
///        delivery each settled meter's slot once, and the grid, the escrow and the interval one
///        slot each.
///      - A batch stores only a hash of its positions and tariffs (and its time); the delivery
///        and the refund re-submit them and the contract checks them against it.
///
///      Liveness (DESIGN.md §5.2): a batch locks every buyer's cost and every seller's worst
///      case when it settles, and withdrawals take effect only after a delay, so no withdrawal
///      can void an accepted trade. A reading that cannot be used (unknown or revoked meter,
///      another market's meter, bad signature, no baseline, stale, registers going backwards,
///      implausible energy) counts as absent, with a `ReadingRejected` event, instead of
///      reverting the interval. If the delivery never comes, anyone can refund the interval's
///      locked credit after `refundDelay`.
contract EnergyMarket is AccessControl, EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Role that posts batches and settles deliveries (the market agent).
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// @notice Role of the grid (the utility): tariffs, baselines, the grid account.
    bytes32 public constant GRID_ROLE = keccak256("GRID_ROLE");

    /// @notice EIP-712 type of a meter's limit order.
    bytes32 public constant ORDER_TYPEHASH = MarketSignatures.ORDER_TYPEHASH;
    /// @notice EIP-712 type of a meter's cumulative registers at both ends of one interval.
    bytes32 public constant READING_TYPEHASH = MarketSignatures.READING_TYPEHASH;

    /// @notice Side of an order: BUY = 0, SELL = 1.
    uint8 public constant BUY = 0;
    uint8 public constant SELL = 1;
    /// @notice Packed sizes (see PackedCalldata).
    uint256 public constant ORDER_BYTES = PackedCalldata.ORDER_BYTES;
    uint256 public constant TRADE_BYTES = PackedCalldata.TRADE_BYTES;

    /// @notice Why a reading was not used (ReadingRejected.reason).
    uint8 public constant REJECT_UNKNOWN_METER = 1;
    uint8 public constant REJECT_REVOKED = 2;
    uint8 public constant REJECT_OTHER_MARKET = 3;
    uint8 public constant REJECT_BAD_SIGNATURE = 4;
    uint8 public constant REJECT_NO_BASELINE = 5;
    uint8 public constant REJECT_STALE = 6;
    uint8 public constant REJECT_BACKWARDS = 7;
    uint8 public constant REJECT_IMPLAUSIBLE = 8;

    uint256 private constant _MILLI = 1000;
    uint256 private constant _METER_WORDS = 3; // per trading meter in settleBatch: id, buy sums, sell sums
    // Bit offsets in a meter's slot (the last settled interval at 0).
    uint256 private constant _IMPORT = 64;
    uint256 private constant _EXPORT = 128;
    uint256 private constant _BALANCE = 192;
    // Bit offsets in a verified order's word while a batch is checked (quantityWh at 0).
    uint256 private constant _LIMIT = 64;
    uint256 private constant _FILLED = 128;
    uint256 private constant _PARTICIPANT = 192;
    uint256 private constant _SIDE = 208;
    uint256 private constant _U64 = 0xffffffffffffffff;
    // Fields of a registry record (MeterRegistry.lookup).
    uint256 private constant _REC_KIND = 160;
    uint256 private constant _REC_REVOKED = 168;
    uint256 private constant _REC_MAX_POWER = 176;
    uint256 private constant _KIND_PROSUMER = 1;
    uint256 private constant _KIND_GENERATOR = 2;
    // Interval states; any other value is a batch commitment (hash top 224 bits | uint32 time).
    bytes32 private constant _DELIVERED = bytes32(uint256(1));
    bytes32 private constant _REFUNDED = bytes32(uint256(2));

    /// @notice The registry of meters and their signing keys.
    IMeterRegistry public immutable registry;
    /// @notice The payment token.
    IERC20 public immutable credit;
    /// @notice Length of a market interval; interval numbers are multiples of it (Unix seconds).
    uint256 public immutable intervalSeconds;
    /// @notice Upper bound the grid's role may set the retail tariff to (smallest units per kWh).
    uint256 public immutable maxRetailPrice;
    /// @notice Seconds between a withdrawal request and the moment it may be paid.
    uint256 public immutable withdrawalDelay;
    /// @notice Seconds after a batch after which anyone may refund it if it was not delivered.
    uint256 public immutable refundDelay;

    /// @dev Constructor settings (a struct keeps the constructor's stack small).
    struct Settings {
        IMeterRegistry registry;
        IERC20 credit;
        address admin;
        address operator;
        address grid;
        uint128 retailPrice;
        uint128 feedInPrice;
        uint128 maxRetailPrice;
        uint64 intervalSeconds;
        uint64 withdrawalDelay;
        uint64 refundDelay;
    }

    /// @dev One slot: both tariffs in credit smallest units per kWh.
    struct Tariffs {
        uint128 retailPrice;
        uint128 feedInPrice;
    }

    /// @dev Running sums of a delivery.
    struct DeliveryTotals {
        bytes positions; // re-submitted positions, packed as in BatchSettled
        uint256 positionCount;
        bytes settlements; // packed as in DeliverySettled
        uint256 meters;
        uint256 released;
        uint256 gridIncome;
        uint256 gridExpense;
    }

    /// @dev One slot per meter, four uint64: the interval of the last settled reading (or
    ///      baseline; 0: none yet), the cumulative import and export registers at its end, and
    ///      the meter's internal balance in credit smallest units.
    mapping(bytes32 meterId => uint256) private _meters;
    /// @dev 0: open; _DELIVERED; _REFUNDED; otherwise the batch's commitment.
    mapping(uint64 interval => bytes32) private _intervals;
    /// @dev keccak256(settlements ‖ positions) of each delivered interval: its DeliverySettled
    ///      `settlements` and its batch's packed positions (empty without a batch). Contracts
    ///      built on the market (certificates, prepaid metering) check re-submitted blobs
    ///      against it.
    mapping(uint64 interval => bytes32) private _deliveries;
    /// @dev A pending withdrawal: amount (low 128 bits) | time it may be paid (next 64 bits).
    mapping(bytes32 meterId => uint256) private _withdrawals;
    Tariffs private _tariffs;
    /// @notice Internal balance of the grid account (buyer and seller of last resort).
    uint256 public gridBalance;
    /// @notice Credit locked by batches whose delivery is not settled yet.
    uint256 public escrowTotal;

    /// @notice Credit moved from `from` into a meter's internal balance.
    event Deposited(bytes32 indexed meterId, address indexed from, uint256 amount);
    /// @notice A meter's owner asked to withdraw `amount` (0: cancelled), payable from `availableAt`.
    event WithdrawalRequested(bytes32 indexed meterId, uint256 amount, uint256 availableAt);
    /// @notice Credit moved out of a meter's internal balance to `to`.
    event Withdrawn(bytes32 indexed meterId, address indexed to, uint256 amount);
    /// @notice Credit moved into the grid account.
    event GridDeposited(address indexed from, uint256 amount);
    /// @notice Credit moved out of the grid account.
    event GridWithdrawn(address indexed to, uint256 amount);
    /// @notice New tariffs, in credit smallest units per kWh, for batches and deliveries from now on.
    event TariffsSet(uint256 retailPrice, uint256 feedInPrice);
    /// @notice The grid's role set a meter's registers at the end of `interval` (a new meter, a
    ///         replaced meter, a corrected fault); settlement resumes from there.
    event BaselineSet(
        bytes32 indexed meterId,
        uint64 interval,
        uint64 importWh,
        uint64 exportWh,
        bytes32 reason,
        uint64 previousInterval,
        uint64 previousImportWh,
        uint64 previousExportWh
    );
    /// @notice An interval's batch was verified and what it may cost locked. `positions` packs
    ///         each trading meter's net trades (PackedCalldata); tariffs are fixed for its delivery.
    event BatchSettled(
        uint64 indexed interval,
        uint256 orders,
        uint256 trades,
        uint256 locked,
        uint256 retailPrice,
        uint256 feedInPrice,
        bytes positions
    );
    /// @notice An interval's delivery was settled (once and for all). `settlements` packs, per
    ///         settled meter in meter-id order: meterId 32 | importedWh 8 | exportedWh 8 |
    ///         balanceChange int128 16 (energy in the interval; the change includes released locks).
    event DeliverySettled(uint64 indexed interval, int256 gridBalanceChange, bytes settlements);
    /// @notice A reading was not used (see the REJECT_* reasons); it counts as absent.
    event ReadingRejected(uint64 indexed interval, bytes32 indexed meterId, uint8 reason);
    /// @notice A meter could not pay `amount`; the grid account absorbed it.
    event Shortfall(uint64 indexed interval, bytes32 indexed meterId, uint256 amount);
    /// @notice An undelivered interval's locked credit went back to its meters; it is void.
    event IntervalRefunded(uint64 indexed interval, uint256 refunded, address indexed by);
    /// @notice A meter's key signed two different messages for one slot; the key is revoked.
    event Equivocation(bytes32 indexed meterId, uint64 indexed interval, bytes32 firstDigest, bytes32 secondDigest);

    error ZeroInterval();
    error MisalignedInterval(uint64 interval, uint256 intervalSeconds);
    error ZeroAmount();
    error EmptyBatch(uint64 interval);
    error MalformedOrders(uint256 length);
    error MalformedTrades(uint256 length);
    error TooManyOrders(uint256 count, uint256 maximum);
    error BatchAlreadySettled(uint64 interval);
    error IntervalAlreadySettled(uint64 interval);
    error IntervalRefundedAlready(uint64 interval);
    error NoBatch(uint64 interval);
    error RefundTooEarly(uint64 interval, uint256 availableAt);
    error UnknownMeter(bytes32 meterId);
    error MeterIsRevoked(bytes32 meterId);
    error MeterNotInMarket(bytes32 meterId);
    error MeterCannotSell(bytes32 meterId, uint256 kind);
    error OrdersNotSorted(uint256 index, bytes32 meterId, uint64 nonce);
    error OrderCountedTwice(bytes32 meterId, uint64 nonce);
    error InvalidSide(bytes32 meterId, uint64 nonce, uint256 side);
    error InvalidOrderSignature(bytes32 meterId, uint64 nonce, address recovered);
    error TradeOrderOutOfRange(uint256 tradeIndex, uint256 orderIndex, uint256 orders);
    error NotABuyOrder(uint256 tradeIndex, bytes32 meterId, uint64 nonce);
    error NotASellOrder(uint256 tradeIndex, bytes32 meterId, uint64 nonce);
    error ZeroQuantityTrade(uint256 tradeIndex);
    error SelfTrade(uint256 tradeIndex, bytes32 meterId);
    error PriceOutsideTariffs(uint256 tradeIndex, uint256 price, uint256 feedInPrice, uint256 retailPrice);
    error PriceAboveBuyLimit(bytes32 meterId, uint64 nonce, uint256 price, uint256 limitPrice);
    error PriceBelowSellLimit(bytes32 meterId, uint64 nonce, uint256 price, uint256 limitPrice);
    error OrderOverfilled(bytes32 meterId, uint64 nonce, uint256 filledWh, uint256 quantityWh);
    error InsufficientBalance(bytes32 meterId, uint256 required, uint256 available);
    error InsufficientGridBalance(uint256 required, uint256 available);
    error BalanceOverflow(bytes32 meterId, uint256 balance);
    error EntriesNotSorted(bytes32 meterId, bytes32 previousMeterId);
    error MeterCountedTwice(bytes32 meterId);
    error PositionsMismatch(uint64 interval, bytes32 expected, bytes32 provided);
    error TariffsMismatch(uint256 retailPrice, uint256 feedInPrice, uint256 expectedRetail, uint256 expectedFeedIn);
    error TariffsOutOfBounds(uint256 retailPrice, uint256 feedInPrice, uint256 maxRetailPrice);
    error NotMeterOwner(bytes32 meterId, address caller);
    error NoWithdrawalRequested(bytes32 meterId);
    error WithdrawalNotYetAvailable(bytes32 meterId, uint256 availableAt);
    error BaselineBeforeLastSettled(bytes32 meterId, uint64 interval, uint64 lastInterval);
    error NotEquivocation(bytes32 meterId, uint64 interval);
    error InvalidEvidenceSignature(bytes32 meterId, address recovered);

    /// @param settings Registry, token, first role holders, tariffs and their bound, the interval
    ///        length, the withdrawal delay and the refund delay.
    constructor(Settings memory settings) EIP712("meterchain EnergyMarket", "1") {
        if (settings.intervalSeconds == 0) revert MisalignedInterval(0, 0);
        registry = settings.registry;
        credit = settings.credit;
        intervalSeconds = settings.intervalSeconds;
        maxRetailPrice = settings.maxRetailPrice;
        withdrawalDelay = settings.withdrawalDelay;
        refundDelay = settings.refundDelay;
        _grantRole(DEFAULT_ADMIN_ROLE, settings.admin);
        _grantRole(OPERATOR_ROLE, settings.operator);
        _grantRole(GRID_ROLE, settings.grid);
        _setTariffs(settings.retailPrice, settings.feedInPrice);
    }

    // ---------------------------------------------------------------- money in and out

    /// @notice Move credit from the caller into a meter's internal balance (approve first).
    /// @param meterId A registered, unrevoked meter.
    /// @param amount Credit smallest units.
    function deposit(bytes32 meterId, uint256 amount) external nonReentrant {
        _deposit(meterId, amount);
    }

    /// @notice Deposit with an EIP-2612 permit signed by the caller instead of an approval.
    /// @param meterId A registered, unrevoked meter.
    /// @param amount Credit smallest units.
    /// @param deadline Permit deadline (Unix seconds).
    function depositWithPermit(bytes32 meterId, uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        nonReentrant
    {
        // A front-run permit is not an error: the allowance it set is what the deposit needs.
        try IERC20Permit(address(credit)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _deposit(meterId, amount);
    }

    /// @notice Ask to withdraw `amount` from a meter's balance; it may be paid `withdrawalDelay`
    ///         seconds from now, so credit a batch may still need stays in place. A new request
    ///         replaces the previous one; amount 0 cancels. Only the meter's owner may.
    /// @param meterId The meter whose balance pays.
    /// @param amount Credit smallest units (0: cancel).
    function requestWithdrawal(bytes32 meterId, uint256 amount) external {
        _onlyOwner(meterId);
        if (amount > type(uint128).max) revert BalanceOverflow(meterId, amount);
        uint256 availableAt = block.timestamp + withdrawalDelay;
        _withdrawals[meterId] = amount == 0 ? 0 : amount | (availableAt << 128);
        emit WithdrawalRequested(meterId, amount, amount == 0 ? 0 : availableAt);
    }

    /// @notice Pay a requested withdrawal once its delay has passed; only the meter's owner may.
    /// @param meterId The meter whose balance pays.
    /// @param to Receiver of the credit.
    function withdraw(bytes32 meterId, address to) external nonReentrant {
        _onlyOwner(meterId);
        uint256 pending = _withdrawals[meterId];
        if (pending == 0) revert NoWithdrawalRequested(meterId);
        uint256 amount = pending & type(uint128).max;
        uint256 availableAt = pending >> 128;
        if (block.timestamp < availableAt) revert WithdrawalNotYetAvailable(meterId, availableAt);
        uint256 slot = _meters[meterId];
        uint256 balance = slot >> _BALANCE;
        if (balance < amount) revert InsufficientBalance(meterId, amount, balance);
        _meters[meterId] = slot - (amount << _BALANCE);
        delete _withdrawals[meterId];
        emit Withdrawn(meterId, to, amount);
        credit.safeTransfer(to, amount);
    }

    /// @notice Move credit from the caller into the grid account (approve first).
    /// @param amount Credit smallest units.
    function depositGrid(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        gridBalance += amount;
        emit GridDeposited(msg.sender, amount);
        credit.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Withdraw from the grid account.
    /// @param amount Credit smallest units.
    /// @param to Receiver of the credit.
    function withdrawGrid(uint256 amount, address to) external onlyRole(GRID_ROLE) nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 balance = gridBalance;
        if (balance < amount) revert InsufficientGridBalance(amount, balance);
        gridBalance = balance - amount;
        emit GridWithdrawn(to, amount);
        credit.safeTransfer(to, amount);
    }

    // ---------------------------------------------------------------- the grid's settings

    /// @notice Set the grid's tariffs for batches settled from now on (a batch keeps the tariffs
    ///         it was settled with), within 0 <= feed-in <= retail <= maxRetailPrice.
    /// @param retailPrice Grid selling price, credit smallest units per kWh.
    /// @param feedInPrice Grid buying price, credit smallest units per kWh.
    function setTariffs(uint128 retailPrice, uint128 feedInPrice) external onlyRole(GRID_ROLE) {
        _setTariffs(retailPrice, feedInPrice);
    }

    /// @notice Record a meter's registers at the end of `interval`: when it joins this market,
    ///         when it is replaced (a new meter's registers start near zero) or after a fault.
    ///         Readings after `interval` are counted from it; nothing settled before is touched,
    ///         so `interval` may not precede the meter's last settled interval.
    /// @param meterId A registered, unrevoked meter of this market.
    /// @param interval The interval at whose end the registers were read.
    /// @param importWh Cumulative import register, Wh.
    /// @param exportWh Cumulative export register, Wh.
    /// @param reason A short reason, e.g. "enrolled", "meter replaced" (UTF-8, zero-padded).
    function setBaseline(bytes32 meterId, uint64 interval, uint64 importWh, uint64 exportWh, bytes32 reason)
        external
        onlyRole(GRID_ROLE)
    {
        _checkInterval(interval);
        _activeRecord(meterId);
        uint256 slot = _meters[meterId];
        uint64 lastInterval = uint64(slot);
        if (interval < lastInterval) revert BaselineBeforeLastSettled(meterId, interval, lastInterval);
        _meters[meterId] = (slot & (_U64 << _BALANCE)) | (uint256(exportWh) << _EXPORT)
            | (uint256(importWh) << _IMPORT) | interval;
        emit BaselineSet(
            meterId,
            interval,
            importWh,
            exportWh,
            reason,
            lastInterval,
            uint64(slot >> _IMPORT),
            uint64(slot >> _EXPORT)
        );
    }

    // ---------------------------------------------------------------- trades

    /// @notice Verify an interval's matched trades against the signed orders they came from and
    ///         lock what each may cost: each buyer's payment, and each seller's worst case
    ///         beyond what its sale pays. One batch per interval, at the tariffs in force.
    /// @param interval The interval the orders were signed for (its start, Unix seconds).
    /// @param orders Packed orders (ORDER_BYTES each), sorted strictly by (meterId, nonce).
    /// @param trades Packed trades (TRADE_BYTES each) referring to orders by index.
    function settleBatch(uint64 interval, bytes calldata orders, bytes calldata trades)
        external
        onlyRole(OPERATOR_ROLE)
        nonReentrant
    {
        _checkInterval(interval);
        _requireOpen(interval);
        if (orders.length % ORDER_BYTES != 0) revert MalformedOrders(orders.length);
        if (trades.length % TRADE_BYTES != 0) revert MalformedTrades(trades.length);
        if (trades.length == 0) revert EmptyBatch(interval);
        uint256 orderCount = orders.length / ORDER_BYTES;
        if (orderCount > type(uint16).max) revert TooManyOrders(orderCount, type(uint16).max);
        if (trades.length / TRADE_BYTES > type(uint32).max) revert MalformedTrades(trades.length);
        Tariffs memory rates = _tariffs;

        // Working memory, one allocation each, no structs: a word per order (see _bookEntry)
        // and three words per meter (meterId, buy sums, sell sums; see _applyTrades).
        uint256[] memory book = new uint256[](orderCount);
        uint256[] memory meters = new uint256[](orderCount * _METER_WORDS);
        uint256 participants = _verifyOrders(interval, orders, book, meters);
        _applyTrades(orders, trades, book, meters, rates);
        (uint256 locked, bytes memory packedPositions) = _lock(meters, participants, rates.retailPrice);

        _intervals[interval] = _commitment(packedPositions, rates.retailPrice, rates.feedInPrice, block.timestamp);
        escrowTotal += locked;
        emit BatchSettled(
            interval,
            orderCount,
            trades.length / TRADE_BYTES,
            locked,
            rates.retailPrice,
            rates.feedInPrice,
            packedPositions
        );
    }

    /// @dev Checks every order's place in the sort order, its meter (known, unrevoked, of this
    ///      market, allowed to sell if it sells), side and signature, looking each meter up once;
    ///      fills `book` with one word per order and the first word of each meter's three in
    ///      `meters` with its id; returns the number of distinct meters.
    function _verifyOrders(uint64 interval, bytes calldata orders, uint256[] memory book, uint256[] memory meters)
        private
        view
        returns (uint256 participants)
    {
        bytes32 domain = _domainSeparatorV4(); // once per batch, not once per order
        bytes32 previousMeter;
        uint256 previousNonce;
        uint256 record; // the current meter's registry record (signer in the low 160 bits)
        for (uint256 i; i < book.length; ++i) {
            uint256 at = PackedCalldata.orderAt(orders, i);
            uint256 entry;
            {
                (bytes32 meterId, uint256 terms) = PackedCalldata.orderHead(at);
                uint256 nonce = PackedCalldata.orderNonce(terms);
                if (i == 0 || meterId != previousMeter) {
                    if (meterId < previousMeter) revert OrdersNotSorted(i, meterId, uint64(nonce));
                    record = _activeRecord(meterId);
                    assembly ("memory-safe") {
                        // meters[participants * 3] = meterId (in bounds: participants <= i < orders)
                        mstore(add(add(meters, 0x20), mul(participants, 0x60)), meterId)
                    }
                    unchecked {
                        ++participants;
                    }
                    previousMeter = meterId;
                } else if (nonce <= previousNonce) {
                    if (nonce == previousNonce) revert OrderCountedTwice(meterId, uint64(previousNonce));
                    revert OrdersNotSorted(i, meterId, uint64(nonce));
                }
                previousNonce = nonce;
                entry = _bookEntry(meterId, terms, participants - 1);
                if (entry >> _SIDE == SELL) _requireCanSell(meterId, record);
            }
            assembly ("memory-safe") {
                mstore(add(add(book, 0x20), shl(5, i)), entry) // book[i] (i < book.length)
            }
            address signer = MarketSignatures.orderSigner(domain, interval, at);
            if (signer != address(uint160(record))) _revertOrderSignature(at, signer);
        }
    }

    /// @dev Only prosumers and generators may sell: a consumer has nothing to deliver.
    function _requireCanSell(bytes32 meterId, uint256 record) private pure {
        uint256 kind = (record >> _REC_KIND) & 0xff;
        if (kind != _KIND_PROSUMER && kind != _KIND_GENERATOR) revert MeterCannotSell(meterId, kind);
    }

    /// @dev quantityWh | limitPrice << _LIMIT | participant << _PARTICIPANT | side << _SIDE,
    ///      from an order's terms word (PackedCalldata.orderHead).
    function _bookEntry(bytes32 meterId, uint256 terms, uint256 participant) private pure returns (uint256) {
        (uint256 side, uint256 quantityWh, uint256 limitPrice) = PackedCalldata.orderTerms(terms);
        if (side > SELL) revert InvalidSide(meterId, uint64(PackedCalldata.orderNonce(terms)), side);
        return quantityWh | (limitPrice << _LIMIT) | (participant << _PARTICIPANT) | (side << _SIDE);
    }

    /// @dev The order at calldata position `at` is not signed by its meter's key: names it and
    ///      what its signature recovers.
    function _revertOrderSignature(uint256 at, address recovered) private pure {
        (bytes32 meterId, uint256 terms) = PackedCalldata.orderHead(at);
        revert InvalidOrderSignature(meterId, uint64(PackedCalldata.orderNonce(terms)), recovered);
    }

    /// @dev Checks every trade against its two orders and the batch's tariffs, and adds it to
    ///      their fills and to the two meters' sums. A meter's sums are two words in `meters`
    ///      after its id: boughtWh << 128 | costMilli, and soldWh << 128 | valueMilli. They
    ///      cannot carry across the 128-bit boundary: there are fewer than 2^32 trades (checked),
    ///      each adds under 2^32 Wh and under 2^96 milli-units (uint32 Wh × uint64 price).
    function _applyTrades(
        bytes calldata orders,
        bytes calldata trades,
        uint256[] memory book,
        uint256[] memory meters,
        Tariffs memory rates
    ) private pure {
        uint256 count = trades.length / TRADE_BYTES;
        uint256 feedIn = rates.feedInPrice;
        uint256 retail = rates.retailPrice;
        for (uint256 t; t < count; ++t) {
            uint256 fields = PackedCalldata.trade(trades, t);
            if (PackedCalldata.tradeBuyOrder(fields) >= book.length) {
                revert TradeOrderOutOfRange(t, PackedCalldata.tradeBuyOrder(fields), book.length);
            }
            if (PackedCalldata.tradeSellOrder(fields) >= book.length) {
                revert TradeOrderOutOfRange(t, PackedCalldata.tradeSellOrder(fields), book.length);
            }
            if (PackedCalldata.tradeQuantityWh(fields) == 0) revert ZeroQuantityTrade(t);
            uint256 price = PackedCalldata.tradePrice(fields);
            if (price < feedIn || price > retail) revert PriceOutsideTariffs(t, price, feedIn, retail);
            uint256 buyer = _fill(orders, book, PackedCalldata.tradeBuyOrder(fields), t, BUY, fields);
            uint256 seller = _fill(orders, book, PackedCalldata.tradeSellOrder(fields), t, SELL, fields);
            if (buyer == seller) revert SelfTrade(t, bytes32(meters[buyer * _METER_WORDS]));
            uint256 quantityWh = PackedCalldata.tradeQuantityWh(fields);
            uint256 sums = (quantityWh << 128) | (quantityWh * price);
            assembly ("memory-safe") {
                // Participants are < orders <= meters.length / 3: in bounds.
                let b := add(add(meters, 0x40), mul(buyer, 0x60)) // meters[buyer * 3 + 1]
                mstore(b, add(mload(b), sums))
                let s := add(add(meters, 0x60), mul(seller, 0x60)) // meters[seller * 3 + 2]
                mstore(s, add(mload(s), sums))
            }
        }
    }

    /// @dev Checks trade `t` (its packed `fields`) against order `index` on `side`: the
    ///      order's side, its limit and its remaining quantity (`index` is in range); adds the
    ///      trade to the order's fill and returns the order's participant (meter) number.
    function _fill(
        bytes calldata orders,
        uint256[] memory book,
        uint256 index,
        uint256 t,
        uint256 side,
        uint256 fields
    ) private pure returns (uint256) {
        uint256 entry;
        assembly ("memory-safe") {
            entry := mload(add(add(book, 0x20), shl(5, index)))
        }
        (uint256 quantityWh, uint256 price) = PackedCalldata.tradeTerms(fields);
        uint256 limitPrice = (entry >> _LIMIT) & _U64;
        // filled <= quantity always holds (checked below), so quantity - filled cannot underflow.
        unchecked {
            if (entry >> _SIDE != side || (side == BUY ? price > limitPrice : price < limitPrice)
                    || quantityWh > (entry & _U64) - ((entry >> _FILLED) & _U64)) {
                _revertFill(orders, entry, index, t, side, fields);
            }
        }
        assembly ("memory-safe") {
            // The fill stays <= the quantity (< 2^64): it never carries into the next field.
            mstore(add(add(book, 0x20), shl(5, index)), add(entry, shl(_FILLED, quantityWh)))
        }
        return (entry >> _PARTICIPANT) & 0xffff;
    }

    /// @dev Names why trade `t` cannot fill order `index` (its side, limit or remaining quantity).
    function _revertFill(
        bytes calldata orders,
        uint256 entry,
        uint256 index,
        uint256 t,
        uint256 side,
        uint256 fields
    ) private pure {
        uint256 quantityWh = PackedCalldata.tradeQuantityWh(fields);
        uint256 price = PackedCalldata.tradePrice(fields);
        uint256 limitPrice = (entry >> _LIMIT) & _U64;
        (bytes32 meterId, uint256 terms) = PackedCalldata.orderHead(PackedCalldata.orderAt(orders, index));
        uint64 nonce = uint64(PackedCalldata.orderNonce(terms));
        if (entry >> _SIDE != side) {
            if (side == BUY) revert NotABuyOrder(t, meterId, nonce);
            revert NotASellOrder(t, meterId, nonce);
        }
        if (side == BUY && price > limitPrice) revert PriceAboveBuyLimit(meterId, nonce, price, limitPrice);
        if (side == SELL && price < limitPrice) revert PriceBelowSellLimit(meterId, nonce, price, limitPrice);
        revert OrderOverfilled(meterId, nonce, ((entry >> _FILLED) & _U64) + quantityWh, entry & _U64);
    }

    /// @dev Locks what each trading meter's position may cost from its balance (one slot write
    ///      per meter) and packs every position as BatchSettled carries it.
    function _lock(uint256[] memory meters, uint256 participants, uint256 retailPrice)
        private
        returns (uint256 locked, bytes memory packed)
    {
        packed = PackedCalldata.newPositions(participants);
        uint256 count;
        Settlement.Position memory position;
        for (uint256 p; p < participants; ++p) {
            uint256 bought;
            uint256 sold;
            {
                bytes32 meterId;
                assembly ("memory-safe") {
                    let at := add(add(meters, 0x20), mul(p, 0x60)) // p < participants <= orders
                    meterId := mload(at)
                    bought := mload(add(at, 0x20))
                    sold := mload(add(at, 0x40))
                }
                if (bought | sold == 0) continue;
                position.meterId = meterId;
            }
            position.boughtWh = bought >> 128;
            position.costMilli = bought & type(uint128).max;
            position.soldWh = sold >> 128;
            position.valueMilli = sold & type(uint128).max;
            uint256 amount = Settlement.lockedUnits(position, retailPrice);
            if (amount != 0) _take(position.meterId, amount);
            locked += amount;
            PackedCalldata.packPosition(packed, count, position);
            unchecked {
                ++count;
            }
        }
        PackedCalldata.setLength(packed, count * PackedCalldata.PACKED_POSITION_BYTES);
    }

    /// @dev Takes `amount` from a meter's balance (the slot's key computed once for both the
    ///      read and the write); reverts naming the meter if it cannot pay.
    function _take(bytes32 meterId, uint256 amount) private {
        bytes32 key;
        uint256 slot;
        assembly ("memory-safe") {
            mstore(0x00, meterId)
            mstore(0x20, _meters.slot)
            key := keccak256(0x00, 0x40)
            slot := sload(key)
        }
        uint256 balance = slot >> _BALANCE;
        if (balance < amount) revert InsufficientBalance(meterId, amount, balance);
        assembly ("memory-safe") {
            sstore(key, sub(slot, shl(_BALANCE, amount))) // amount <= balance: no borrow
        }
    }

    // ---------------------------------------------------------------- delivery

    /// @notice Settle an interval's delivery, once, by the rules of Settlement: each meter's
    ///         trades against the energy its signed reading shows in the interval, and the
    ///         energy metered in the gap before it (if any) at the tariffs.
    /// @dev Entries are sorted strictly by meterId (PackedCalldata's entry layout). Every
    ///      position of the interval's batch must be present (their hash is checked); a meter
    ///      without a usable reading counts as having imported and exported nothing in the
    ///      interval, and its energy is billed with its next usable reading, at the tariffs.
    /// @param interval The interval (its start, Unix seconds).
    /// @param retailPrice The batch's retail tariff (the one in force if there was no batch).
    /// @param feedInPrice The batch's feed-in tariff (the one in force if there was no batch).
    /// @param entries Packed entries.
    function settleDelivery(uint64 interval, uint128 retailPrice, uint128 feedInPrice, bytes calldata entries)
        external
        onlyRole(OPERATOR_ROLE)
        nonReentrant
    {
        _checkInterval(interval);
        bytes32 committed = _intervals[interval];
        if (committed == _DELIVERED) revert IntervalAlreadySettled(interval);
        if (committed == _REFUNDED) revert IntervalRefundedAlready(interval);
        if (committed == bytes32(0)) {
            Tariffs memory current = _tariffs;
            if (retailPrice != current.retailPrice || feedInPrice != current.feedInPrice) {
                revert TariffsMismatch(retailPrice, feedInPrice, current.retailPrice, current.feedInPrice);
            }
        }

        Tariffs memory rates = Tariffs(retailPrice, feedInPrice);
        DeliveryTotals memory totals = _settleEntries(interval, entries, rates);
        PackedCalldata.setLength(totals.positions, totals.positionCount * PackedCalldata.PACKED_POSITION_BYTES);
        PackedCalldata.setLength(totals.settlements, totals.meters * PackedCalldata.SETTLEMENT_BYTES);
        if (committed != bytes32(0)) {
            bytes32 provided = _commitment(totals.positions, retailPrice, feedInPrice, uint32(uint256(committed)));
            if (provided != committed) revert PositionsMismatch(interval, committed, provided);
        } else if (totals.positionCount != 0) {
            revert PositionsMismatch(interval, bytes32(0), keccak256(totals.positions));
        }

        uint256 grid = gridBalance + totals.gridIncome;
        if (grid < totals.gridExpense) revert InsufficientGridBalance(totals.gridExpense, grid);
        gridBalance = grid - totals.gridExpense;
        escrowTotal -= totals.released;
        _intervals[interval] = _DELIVERED;
        _deliveries[interval] = keccak256(abi.encodePacked(totals.settlements, totals.positions));
        emit DeliverySettled(interval, int256(totals.gridIncome) - int256(totals.gridExpense), totals.settlements);
    }

    /// @dev Walks the entries in meter-id order and settles each.
    function _settleEntries(uint64 interval, bytes calldata entries, Tariffs memory rates)
        private
        returns (DeliveryTotals memory totals)
    {
        uint256 maxEntries = entries.length / PackedCalldata.ENTRY_HEADER_BYTES;
        totals.positions = PackedCalldata.newPositions(maxEntries);
        totals.settlements = PackedCalldata.newSettlements(maxEntries);
        bytes32 previous;
        uint256 offset;
        while (offset < entries.length) {
            (Settlement.Position memory position, uint256 readingAt, uint256 next) =
                PackedCalldata.entry(entries, offset);
            if (offset != 0 && position.meterId <= previous) {
                if (position.meterId == previous) revert MeterCountedTwice(position.meterId);
                revert EntriesNotSorted(position.meterId, previous);
            }
            previous = position.meterId;
            _settleEntry(interval, entries, position, readingAt, rates, totals);
            offset = next;
        }
    }

    /// @dev Settles one meter: its reading (if usable) and its position (if any).
    function _settleEntry(
        uint64 interval,
        bytes calldata entries,
        Settlement.Position memory position,
        uint256 readingAt,
        Tariffs memory rates,
        DeliveryTotals memory totals
    ) private {
        bool hasPosition = position.boughtWh | position.soldWh != 0;
        if (hasPosition) PackedCalldata.packPosition(totals.positions, totals.positionCount++, position);
        uint256 slot = _meters[position.meterId];
        Settlement.Metered memory metered;
        bool measured;
        if (readingAt != 0) {
            uint8 reason;
            (reason, slot) = _useReading(interval, position.meterId, entries, readingAt, slot, metered);
            if (reason != 0) emit ReadingRejected(interval, position.meterId, reason);
            measured = reason == 0;
        }
        if (!hasPosition && !measured) return;
        int256 change = _settleMoney(interval, position, metered, slot, rates, totals);
        PackedCalldata.packSettlement(
            totals.settlements, totals.meters++, position.meterId, metered.importWh, metered.exportWh, change
        );
    }

    /// @dev Applies one meter's amounts to its balance (writing its slot) and to the totals;
    ///      returns the change of its balance, released locks included.
    function _settleMoney(
        uint64 interval,
        Settlement.Position memory position,
        Settlement.Metered memory metered,
        uint256 slot,
        Tariffs memory rates,
        DeliveryTotals memory totals
    ) private returns (int256) {
        (uint256 released, uint256 credits, uint256 debit) =
            Settlement.amounts(position, metered, rates.retailPrice, rates.feedInPrice);
        uint256 funds = (slot >> _BALANCE) + credits;
        uint256 paid = debit;
        if (funds < debit) {
            paid = funds;
            emit Shortfall(interval, position.meterId, debit - funds);
        }
        uint256 balance = funds - paid;
        if (balance > _U64) revert BalanceOverflow(position.meterId, balance);
        _meters[position.meterId] = (slot & ~(_U64 << _BALANCE)) | (balance << _BALANCE);
        totals.released += released;
        totals.gridIncome += paid;
        totals.gridExpense += credits - released;
        return int256(credits) - int256(paid);
    }

    /// @dev Checks a reading (meter, signature, baseline, interval, registers, plausibility);
    ///      if usable, fills `metered` and returns the slot with the new registers and interval,
    ///      otherwise the reason (and the slot unchanged).
    function _useReading(
        uint64 interval,
        bytes32 meterId,
        bytes calldata entries,
        uint256 at,
        uint256 slot,
        Settlement.Metered memory metered
    ) private view returns (uint8, uint256) {
        (uint8 reason, uint256 maxPowerW) = _checkReadingSigner(interval, meterId, entries, at);
        if (reason != 0) return (reason, slot);
        PackedCalldata.Registers memory r = PackedCalldata.registers(PackedCalldata.readingRegisters(entries, at));
        return _measure(interval, r, maxPowerW, slot, metered);
    }

    /// @dev 0 and the meter's connection limit if the reading at `at` is signed by the current
    ///      key of a meter of this market; otherwise the reason.
    function _checkReadingSigner(uint64 interval, bytes32 meterId, bytes calldata entries, uint256 at)
        private
        view
        returns (uint8 reason, uint256 maxPowerW)
    {
        (uint256 record, bool member) = registry.lookup(meterId);
        if (address(uint160(record)) == address(0)) return (REJECT_UNKNOWN_METER, 0);
        if ((record >> _REC_REVOKED) & 0xff != 0) return (REJECT_REVOKED, 0);
        if (!member) return (REJECT_OTHER_MARKET, 0);
        if (MarketSignatures.readingSigner(_domainSeparatorV4(), meterId, interval, entries, at) != address(uint160(record))) {
            return (REJECT_BAD_SIGNATURE, 0);
        }
        return (0, (record >> _REC_MAX_POWER) & 0xffffffff);
    }

    /// @dev The energy of the interval and of the gap before it, against the meter's slot.
    function _measure(
        uint64 interval,
        PackedCalldata.Registers memory r,
        uint256 maxPowerW,
        uint256 slot,
        Settlement.Metered memory metered
    ) private view returns (uint8, uint256) {
        uint256 lastInterval = uint64(slot);
        if (lastInterval == 0) return (REJECT_NO_BASELINE, slot);
        if (lastInterval >= interval) return (REJECT_STALE, slot);
        uint256 lastImportWh = (slot >> _IMPORT) & _U64;
        uint256 lastExportWh = (slot >> _EXPORT) & _U64;
        if (
            r.startImportWh < lastImportWh || r.startExportWh < lastExportWh || r.endImportWh < r.startImportWh
                || r.endExportWh < r.startExportWh
        ) return (REJECT_BACKWARDS, slot);
        uint256 gapSeconds = interval - lastInterval - intervalSeconds; // both aligned, interval > last
        if (
            (r.endImportWh - r.startImportWh) + (r.endExportWh - r.startExportWh)
                > Settlement.maxEnergyWh(maxPowerW, intervalSeconds)
                || (r.startImportWh - lastImportWh) + (r.startExportWh - lastExportWh)
                    > Settlement.maxEnergyWh(maxPowerW, gapSeconds)
        ) return (REJECT_IMPLAUSIBLE, slot);
        metered.importWh = r.endImportWh - r.startImportWh;
        metered.exportWh = r.endExportWh - r.startExportWh;
        metered.gapImportWh = r.startImportWh - lastImportWh;
        metered.gapExportWh = r.startExportWh - lastExportWh;
        slot = (slot & (_U64 << _BALANCE)) | (r.endExportWh << _EXPORT) | (r.endImportWh << _IMPORT) | interval;
        return (0, slot);
    }

    // ---------------------------------------------------------------- liveness

    /// @notice Void an interval whose delivery was not settled: every meter's locked credit goes
    ///         back to its balance, and the interval's energy is billed with each meter's next
    ///         reading, at the tariffs. Anyone may call it `refundDelay` after the batch; the
    ///         operator at any time (when it knows the delivery cannot be settled).
    /// @param interval The interval.
    /// @param retailPrice The batch's retail tariff (BatchSettled).
    /// @param feedInPrice The batch's feed-in tariff (BatchSettled).
    /// @param positions The batch's packed positions (BatchSettled).
    function refundInterval(uint64 interval, uint128 retailPrice, uint128 feedInPrice, bytes calldata positions)
        external
        nonReentrant
    {
        bytes32 committed = _intervals[interval];
        if (committed == _DELIVERED) revert IntervalAlreadySettled(interval);
        if (committed == _REFUNDED) revert IntervalRefundedAlready(interval);
        if (committed == bytes32(0)) revert NoBatch(interval);
        uint256 availableAt = uint256(uint32(uint256(committed))) + refundDelay;
        if (block.timestamp < availableAt && !hasRole(OPERATOR_ROLE, msg.sender)) {
            revert RefundTooEarly(interval, availableAt);
        }
        if (positions.length % PackedCalldata.PACKED_POSITION_BYTES != 0) revert MalformedTrades(positions.length);
        bytes32 provided = _commitment(positions, retailPrice, feedInPrice, uint32(uint256(committed)));
        if (provided != committed) revert PositionsMismatch(interval, committed, provided);
        uint256 refunded;
        for (uint256 offset; offset < positions.length; offset += PackedCalldata.PACKED_POSITION_BYTES) {
            Settlement.Position memory position = PackedCalldata.packedPosition(positions, offset);
            uint256 amount = Settlement.lockedUnits(position, retailPrice);
            uint256 slot = _meters[position.meterId];
            uint256 balance = (slot >> _BALANCE) + amount;
            if (balance > _U64) revert BalanceOverflow(position.meterId, balance);
            _meters[position.meterId] = slot + (amount << _BALANCE);
            refunded += amount;
        }
        escrowTotal -= refunded;
        _intervals[interval] = _REFUNDED;
        emit IntervalRefunded(interval, refunded, msg.sender);
    }

    /// @notice Prove that a meter's key signed two different readings for one interval: the
    ///         key is revoked (through the registry) and the evidence is in the event. Anyone
    ///         may call it. The contract itself only ever uses the first reading it settled.
    /// @param meterId The meter.
    /// @param interval The interval both readings name.
    /// @param registersA First reading's registers (startImport | startExport | endImport | endExport, 8 B each).
    /// @param signatureA Its 65-byte signature.
    /// @param registersB Second reading's registers.
    /// @param signatureB Its 65-byte signature.
    function proveReadingEquivocation(
        bytes32 meterId,
        uint64 interval,
        uint256 registersA,
        bytes calldata signatureA,
        uint256 registersB,
        bytes calldata signatureB
    ) external {
        if (registersA == registersB) revert NotEquivocation(meterId, interval);
        bytes32 domain = _domainSeparatorV4();
        bytes32 first = MarketSignatures.readingDigest(domain, meterId, interval, registersA);
        bytes32 second = MarketSignatures.readingDigest(domain, meterId, interval, registersB);
        _revokeForEquivocation(meterId, interval, first, signatureA, second, signatureB);
    }

    /// @notice Prove that a meter's key signed two different orders with the same nonce for one
    ///         interval (see proveReadingEquivocation). `termsA`/`termsB` pack side << 128 |
    ///         quantityWh << 64 | limitPrice.
    function proveOrderEquivocation(
        bytes32 meterId,
        uint64 interval,
        uint64 nonce,
        uint256 termsA,
        bytes calldata signatureA,
        uint256 termsB,
        bytes calldata signatureB
    ) external {
        if (termsA == termsB) revert NotEquivocation(meterId, interval);
        bytes32 first = _orderDigest(meterId, interval, termsA, nonce);
        bytes32 second = _orderDigest(meterId, interval, termsB, nonce);
        _revokeForEquivocation(meterId, interval, first, signatureA, second, signatureB);
    }

    function _revokeForEquivocation(
        bytes32 meterId,
        uint64 interval,
        bytes32 first,
        bytes calldata signatureA,
        bytes32 second,
        bytes calldata signatureB
    ) private {
        address signer = address(uint160(_activeRecordAnyMarket(meterId)));
        address recovered = MarketSignatures.recover(first, signatureA);
        if (recovered != signer) revert InvalidEvidenceSignature(meterId, recovered);
        recovered = MarketSignatures.recover(second, signatureB);
        if (recovered != signer) revert InvalidEvidenceSignature(meterId, recovered);
        emit Equivocation(meterId, interval, first, second);
        registry.revokeForEquivocation(meterId);
    }

    // ---------------------------------------------------------------- views

    /// @notice A meter's internal balance in credit smallest units.
    /// @param meterId The meter.
    function balanceOf(bytes32 meterId) external view returns (uint256) {
        return _meters[meterId] >> _BALANCE;
    }

    /// @notice A meter's slot: last settled interval, its cumulative registers and its balance.
    /// @param meterId The meter.
    function meterAccount(bytes32 meterId)
        external
        view
        returns (uint64 lastInterval, uint64 importWh, uint64 exportWh, uint64 balance)
    {
        uint256 slot = _meters[meterId];
        return (uint64(slot), uint64(slot >> _IMPORT), uint64(slot >> _EXPORT), uint64(slot >> _BALANCE));
    }

    /// @notice A meter's pending withdrawal (amount 0: none) and when it may be paid.
    /// @param meterId The meter.
    function pendingWithdrawal(bytes32 meterId) external view returns (uint256 amount, uint256 availableAt) {
        uint256 pending = _withdrawals[meterId];
        return (pending & type(uint128).max, pending >> 128);
    }

    /// @notice 0: open, 1: batch settled (delivery pending), 2: delivered, 3: refunded (void);
    ///         and, while a delivery is pending, the batch's time and its commitment.
    /// @param interval The interval.
    function intervalStatus(uint64 interval)
        external
        view
        returns (uint8 status, uint256 batchTime, bytes32 commitment)
    {
        bytes32 state = _intervals[interval];
        if (state == bytes32(0)) return (0, 0, bytes32(0));
        if (state == _DELIVERED) return (2, 0, bytes32(0));
        if (state == _REFUNDED) return (3, 0, bytes32(0));
        return (1, uint32(uint256(state)), state);
    }

    /// @notice keccak256(settlements ‖ positions) of a delivered interval (zero before): its
    ///         DeliverySettled `settlements` and its batch's packed positions (BatchSettled;
    ///         empty without a batch), what contracts built on the market check per-meter
    ///         energy and trades against.
    /// @param interval The interval.
    function deliveryHash(uint64 interval) external view returns (bytes32) {
        return _deliveries[interval];
    }

    /// @notice Retail and feed-in tariffs in credit smallest units per kWh.
    function tariffs() external view returns (uint256 retailPrice, uint256 feedInPrice) {
        return (_tariffs.retailPrice, _tariffs.feedInPrice);
    }

    /// @notice The EIP-712 domain separator orders and readings are signed under.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice The EIP-712 digest a meter signs for an order.
    function hashOrder(
        bytes32 meterId,
        uint64 interval,
        uint8 side,
        uint64 quantityWh,
        uint64 limitPrice,
        uint64 nonce
    ) external view returns (bytes32) {
        return MarketSignatures.orderDigest(_domainSeparatorV4(), meterId, interval, side, quantityWh, limitPrice, nonce);
    }

    /// @notice The EIP-712 digest a meter signs for a reading.
    function hashReading(
        bytes32 meterId,
        uint64 interval,
        uint64 startImportWh,
        uint64 startExportWh,
        uint64 endImportWh,
        uint64 endExportWh
    ) external view returns (bytes32) {
        uint256 packed = (uint256(startImportWh) << 192) | (uint256(startExportWh) << 128)
            | (uint256(endImportWh) << 64) | endExportWh;
        return MarketSignatures.readingDigest(_domainSeparatorV4(), meterId, interval, packed);
    }

    // ---------------------------------------------------------------- helpers

    function _setTariffs(uint128 retailPrice, uint128 feedInPrice) private {
        if (retailPrice == 0 || feedInPrice > retailPrice || retailPrice > maxRetailPrice) {
            revert TariffsOutOfBounds(retailPrice, feedInPrice, maxRetailPrice);
        }
        _tariffs = Tariffs(retailPrice, feedInPrice);
        emit TariffsSet(retailPrice, feedInPrice);
    }

    function _checkInterval(uint64 interval) private view {
        if (interval == 0) revert ZeroInterval();
        if (interval % intervalSeconds != 0) revert MisalignedInterval(interval, intervalSeconds);
    }

    function _requireOpen(uint64 interval) private view {
        bytes32 state = _intervals[interval];
        if (state == _DELIVERED) revert IntervalAlreadySettled(interval);
        if (state == _REFUNDED) revert IntervalRefundedAlready(interval);
        if (state != bytes32(0)) revert BatchAlreadySettled(interval);
    }

    /// @dev hash(positions ‖ retail ‖ feed-in) in the top 224 bits, the batch time in the low 32.
    function _commitment(bytes memory positions, uint256 retailPrice, uint256 feedInPrice, uint256 time)
        private
        pure
        returns (bytes32)
    {
        bytes32 hash = keccak256(abi.encodePacked(positions, uint128(retailPrice), uint128(feedInPrice)));
        return (hash & ~bytes32(uint256(type(uint32).max))) | bytes32(uint256(uint32(time)));
    }

    function _onlyOwner(bytes32 meterId) private view {
        if (registry.ownerOf(meterId) != msg.sender) revert NotMeterOwner(meterId, msg.sender);
    }

    function _deposit(bytes32 meterId, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        _activeRecordAnyMarket(meterId);
        uint256 slot = _meters[meterId];
        uint256 balance = (slot >> _BALANCE) + amount;
        if (balance > _U64) revert BalanceOverflow(meterId, balance);
        _meters[meterId] = slot + (amount << _BALANCE);
        emit Deposited(meterId, msg.sender, amount);
        credit.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @dev The registry record of a known, unrevoked meter of this market (reverts otherwise).
    function _activeRecord(bytes32 meterId) private view returns (uint256 record) {
        bool member;
        (record, member) = _lookup(meterId);
        if (!member) revert MeterNotInMarket(meterId);
    }

    /// @dev The registry record of a known, unrevoked meter, whatever its market.
    function _activeRecordAnyMarket(bytes32 meterId) private view returns (uint256 record) {
        (record,) = _lookup(meterId);
    }

    /// @dev registry.lookup(meterId) through the scratch space (this runs once per meter per
    ///      batch, and the high-level call's memory encoding costs ~20% of the lookup); reverts
    ///      for unknown and revoked meters.
    function _lookup(bytes32 meterId) private view returns (uint256 record, bool member) {
        address target = address(registry);
        bytes4 selector = IMeterRegistry.lookup.selector;
        assembly ("memory-safe") {
            mstore(0x00, selector)
            mstore(0x04, meterId)
            let ok := staticcall(gas(), target, 0x00, 0x24, 0x00, 0x40)
            if iszero(and(ok, gt(returndatasize(), 0x3f))) {
                returndatacopy(0x00, 0x00, returndatasize())
                revert(0x00, returndatasize())
            }
            record := mload(0x00)
            member := iszero(iszero(mload(0x20)))
        }
        if (address(uint160(record)) == address(0)) revert UnknownMeter(meterId);
        if ((record >> _REC_REVOKED) & 0xff != 0) revert MeterIsRevoked(meterId);
    }

    /// @dev EIP-712 digest of an Order whose `terms` pack side << 128 | quantityWh << 64 | limitPrice.
    function _orderDigest(bytes32 meterId, uint256 interval, uint256 terms, uint256 nonce)
        private
        view
        returns (bytes32)
    {
        return MarketSignatures.orderDigest(
            _domainSeparatorV4(), meterId, interval, terms >> 128, (terms >> 64) & _U64, terms & _U64, nonce
        );
    }
}
