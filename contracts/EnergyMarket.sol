// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice The part of MeterRegistry the market reads.
interface IMeterRegistry {
    function signerOf(bytes32 meterId) external view returns (address signer, bool revoked);
    function ownerOf(bytes32 meterId) external view returns (address);
}

/// @title EnergyMarket
/// @notice Verifies the operator's batches of matched trades against the meters' signed orders,
///         escrows the buyers' money, and settles delivery from the meters' signed readings.
/// @dev Gas design (DESIGN.md §5.1):
///      - An order is signed for this market (EIP-712 verifyingContract) and one interval; that
///        binding replaces per-order storage. Orders in a batch are sorted strictly by
///        (meterId, nonce), so none is counted twice; the check runs in memory.
///      - Each order's signature is verified once, however many trades it is in, and each meter
///        is looked up in the registry once per batch.
///      - A batch works in flat memory: one word per order and three per trading meter, no
///        structs; the domain separator is read once per batch.
///      - One storage slot per meter holds the last settled interval, both cumulative counters
///        and the meter's internal balance (four uint64): one write per meter per batch/interval.
///      - Money is netted per participant: a batch writes each buyer's slot once, a delivery
///        writes each meter's slot once, and the grid, the escrow and the interval one slot each.
///      - A batch stores only a hash of the per-meter positions; the delivery re-submits the
///        positions and the contract checks them against that hash.
///      - Calldata is packed (see ORDER_BYTES, TRADE_BYTES and settleDelivery's entry layout).
///
///      Units: energy in Wh; prices in credit smallest units per kWh. Wh × price is exact in
///      thousandths of a smallest unit ("milli-units"); positions are kept in milli-units and
///      rounded once per meter, always in favour of the grid account, which receives every
///      residue, so credit is conserved exactly.
contract EnergyMarket is AccessControl, EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Role that posts batches, settles deliveries and sets tariffs.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// @notice Role that may withdraw the grid account's balance.
    bytes32 public constant GRID_ROLE = keccak256("GRID_ROLE");

    /// @notice EIP-712 type of a meter's limit order.
    bytes32 public constant ORDER_TYPEHASH = keccak256(
        "Order(bytes32 meterId,uint64 interval,uint8 side,uint64 quantityWh,uint64 limitPrice,uint64 nonce)"
    );
    /// @notice EIP-712 type of a meter's cumulative register values at the end of an interval.
    bytes32 public constant READING_TYPEHASH =
        keccak256("Reading(bytes32 meterId,uint64 interval,uint64 importWh,uint64 exportWh)");

    /// @notice Side of an order: BUY = 0, SELL = 1.
    uint8 public constant BUY = 0;
    uint8 public constant SELL = 1;

    /// @notice Packed order: meterId 32 | nonce 8 | side 1 | quantityWh 8 | limitPrice 8 | r 32 | s 32 | v 1.
    uint256 public constant ORDER_BYTES = 122;
    /// @notice Packed trade: buyOrderIndex 2 | sellOrderIndex 2 | quantityWh 4 | price 8.
    uint256 public constant TRADE_BYTES = 16;

    uint256 private constant _HAS_POSITION = 1;
    uint256 private constant _HAS_READING = 2;
    uint256 private constant _POSITION_BYTES = 48; // boughtWh 8 | costMilli 16 | soldWh 8 | valueMilli 16
    uint256 private constant _PACKED_POSITION_BYTES = 80; // meterId 32 | position 48
    uint256 private constant _SETTLEMENT_BYTES = 64; // meterId 32 | importedWh 8 | exportedWh 8 | change 16
    uint256 private constant _MIN_ENTRY_BYTES = 81; // meterId 32 | flags 1 | position 48 or more
    uint256 private constant _READING_BYTES = 81; // importWh 8 | exportWh 8 | r 32 | s 32 | v 1
    uint256 private constant _MILLI = 1000;
    uint256 private constant _METER_WORDS = 3; // per trading meter in settleBatch: id, buy sums, sell sums
    // Bit offsets in a meter's slot.
    uint256 private constant _IMPORT = 64;
    uint256 private constant _EXPORT = 128;
    uint256 private constant _BALANCE = 192;
    // Bit offsets in a verified order's word while a batch is checked (quantityWh at 0).
    uint256 private constant _LIMIT = 64;
    uint256 private constant _FILLED = 128;
    uint256 private constant _PARTICIPANT = 192;
    uint256 private constant _SIDE = 208;
    uint256 private constant _U64 = 0xffffffffffffffff;
    bytes32 private constant _DELIVERED = bytes32(uint256(1));

    /// @notice The registry of meters and their signing keys.
    IMeterRegistry public immutable registry;
    /// @notice The payment token.
    IERC20 public immutable credit;

    /// @dev One slot: both tariffs in credit smallest units per kWh.
    struct Tariffs {
        uint128 retailPrice;
        uint128 feedInPrice;
    }

    /// @dev A meter's net trades in one batch (milli-units are thousandths of a smallest unit).
    struct Position {
        bytes32 meterId;
        uint256 boughtWh;
        uint256 costMilli;
        uint256 soldWh;
        uint256 valueMilli;
    }

    /// @dev Running sums of a delivery.
    struct DeliveryTotals {
        bytes positions; // re-submitted positions, packed as in BatchSettled
        uint256 positionCount;
        bytes settlements; // packed as in DeliverySettled
        uint256 meters;
        uint256 escrowReleased;
        uint256 gridIncome;
        uint256 gridExpense;
    }

    /// @dev One slot per meter, four uint64 (see _LAST_INTERVAL.._BALANCE): the interval of the
    ///      last settled reading (0: none yet), the cumulative import and export registers at
    ///      its end, and the meter's internal balance in credit smallest units.
    mapping(bytes32 meterId => uint256) private _meters;
    /// @dev 0: open; _DELIVERED: delivery settled; otherwise the hash of the batch's positions.
    mapping(uint64 interval => bytes32) private _intervals;
    Tariffs private _tariffs;
    /// @notice Internal balance of the grid account (buyer and seller of last resort).
    uint256 public gridBalance;
    /// @notice Credit held for batches whose delivery is not settled yet.
    uint256 public escrowTotal;

    /// @notice Credit moved from `from` into a meter's internal balance.
    event Deposited(bytes32 indexed meterId, address indexed from, uint256 amount);
    /// @notice Credit moved out of a meter's internal balance to `to`.
    event Withdrawn(bytes32 indexed meterId, address indexed to, uint256 amount);
    /// @notice Credit moved into the grid account.
    event GridDeposited(address indexed from, uint256 amount);
    /// @notice Credit moved out of the grid account.
    event GridWithdrawn(address indexed to, uint256 amount);
    /// @notice New tariffs, in credit smallest units per kWh.
    event TariffsSet(uint256 retailPrice, uint256 feedInPrice);
    /// @notice An interval's batch of matched trades was verified and the buyers' payments
    ///         escrowed. `positions` packs each trading meter's net trades, sorted by meter id:
    ///         meterId 32 | boughtWh 8 | costMilli 16 | soldWh 8 | valueMilli 16 (80 bytes each;
    ///         costMilli/valueMilli in thousandths of a smallest unit). A buyer's escrow is
    ///         ceil(costMilli / 1000). The delivery re-submits exactly these positions.
    event BatchSettled(uint64 indexed interval, uint256 orders, uint256 trades, uint256 escrowed, bytes positions);
    /// @notice An interval's delivery was settled (once and for all). `settlements` packs, per
    ///         meter in meter-id order: meterId 32 | importedWh 8 | exportedWh 8 |
    ///         balanceChange int128 16 (64 bytes each; the change includes released escrow).
    event DeliverySettled(uint64 indexed interval, int256 gridBalanceChange, bytes settlements);
    /// @notice A meter could not pay `amount`; the grid account absorbed it.
    event Shortfall(uint64 indexed interval, bytes32 indexed meterId, uint256 amount);

    error ZeroInterval();
    error ZeroAmount();
    error EmptyBatch(uint64 interval);
    error MalformedOrders(uint256 length);
    error MalformedTrades(uint256 length);
    error TooManyOrders(uint256 count, uint256 maximum);
    error MalformedEntries(uint256 offset);
    error BatchAlreadySettled(uint64 interval);
    error IntervalAlreadySettled(uint64 interval);
    error UnknownMeter(bytes32 meterId);
    error MeterIsRevoked(bytes32 meterId);
    error OrdersNotSorted(uint256 index, bytes32 meterId, uint64 nonce);
    error OrderCountedTwice(bytes32 meterId, uint64 nonce);
    error InvalidSide(bytes32 meterId, uint64 nonce, uint256 side);
    error InvalidOrderSignature(bytes32 meterId, uint64 nonce, address recovered);
    error TradeOrderOutOfRange(uint256 tradeIndex, uint256 orderIndex, uint256 orders);
    error NotABuyOrder(uint256 tradeIndex, bytes32 meterId, uint64 nonce);
    error NotASellOrder(uint256 tradeIndex, bytes32 meterId, uint64 nonce);
    error ZeroQuantityTrade(uint256 tradeIndex);
    error SelfTrade(uint256 tradeIndex, bytes32 meterId);
    error PriceAboveBuyLimit(bytes32 meterId, uint64 nonce, uint256 price, uint256 limitPrice);
    error PriceBelowSellLimit(bytes32 meterId, uint64 nonce, uint256 price, uint256 limitPrice);
    error OrderOverfilled(bytes32 meterId, uint64 nonce, uint256 filledWh, uint256 quantityWh);
    error InsufficientBalance(bytes32 meterId, uint256 required, uint256 available);
    error InsufficientGridBalance(uint256 required, uint256 available);
    error BalanceOverflow(bytes32 meterId, uint256 balance);
    error EntriesNotSorted(bytes32 meterId, bytes32 previousMeterId);
    error MeterCountedTwice(bytes32 meterId);
    error InvalidReadingSignature(bytes32 meterId, address recovered);
    error ReadingNotAfterLastSettled(bytes32 meterId, uint64 interval, uint64 lastInterval);
    error CounterWentBackwards(
        bytes32 meterId, uint64 lastImportWh, uint64 importWh, uint64 lastExportWh, uint64 exportWh
    );
    error PositionsMismatch(uint64 interval, bytes32 expected, bytes32 provided);
    error NotMeterOwner(bytes32 meterId, address caller);

    /// @param registry_ The meter registry.
    /// @param credit_ The payment token (EnergyCredit).
    /// @param admin Holder of DEFAULT_ADMIN_ROLE.
    /// @param operator First holder of OPERATOR_ROLE (the market agent).
    /// @param grid First holder of GRID_ROLE (the utility).
    /// @param retailPrice Grid selling price, credit smallest units per kWh.
    /// @param feedInPrice Grid buying price, credit smallest units per kWh.
    constructor(
        IMeterRegistry registry_,
        IERC20 credit_,
        address admin,
        address operator,
        address grid,
        uint128 retailPrice,
        uint128 feedInPrice
    ) EIP712("meterchain EnergyMarket", "1") {
        registry = registry_;
        credit = credit_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, operator);
        _grantRole(GRID_ROLE, grid);
        _tariffs = Tariffs(retailPrice, feedInPrice);
        emit TariffsSet(retailPrice, feedInPrice);
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

    /// @notice Withdraw from a meter's internal balance; only the meter's owner may.
    /// @param meterId The meter whose balance pays.
    /// @param amount Credit smallest units.
    /// @param to Receiver of the credit.
    function withdraw(bytes32 meterId, uint256 amount, address to) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (registry.ownerOf(meterId) != msg.sender) revert NotMeterOwner(meterId, msg.sender);
        uint256 slot = _meters[meterId];
        uint256 balance = slot >> _BALANCE;
        if (balance < amount) revert InsufficientBalance(meterId, amount, balance);
        _meters[meterId] = slot - (amount << _BALANCE);
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

    /// @notice Set the grid's tariffs for deliveries settled from now on.
    /// @param retailPrice Grid selling price, credit smallest units per kWh.
    /// @param feedInPrice Grid buying price, credit smallest units per kWh.
    function setTariffs(uint128 retailPrice, uint128 feedInPrice) external onlyRole(OPERATOR_ROLE) {
        _tariffs = Tariffs(retailPrice, feedInPrice);
        emit TariffsSet(retailPrice, feedInPrice);
    }

    // ---------------------------------------------------------------- trades

    /// @notice Verify an interval's matched trades against the signed orders they came from and
    ///         escrow each buyer's payment. One batch per interval.
    /// @param interval The interval the orders were signed for (its start, Unix seconds).
    /// @param orders Packed orders (ORDER_BYTES each), sorted strictly by (meterId, nonce).
    /// @param trades Packed trades (TRADE_BYTES each) referring to orders by index.
    function settleBatch(uint64 interval, bytes calldata orders, bytes calldata trades)
        external
        onlyRole(OPERATOR_ROLE)
        nonReentrant
    {
        if (interval == 0) revert ZeroInterval();
        bytes32 state = _intervals[interval];
        if (state == _DELIVERED) revert IntervalAlreadySettled(interval);
        if (state != bytes32(0)) revert BatchAlreadySettled(interval);
        if (orders.length % ORDER_BYTES != 0) revert MalformedOrders(orders.length);
        if (trades.length % TRADE_BYTES != 0) revert MalformedTrades(trades.length);
        if (trades.length == 0) revert EmptyBatch(interval);
        uint256 orderCount = orders.length / ORDER_BYTES;
        if (orderCount > type(uint16).max) revert TooManyOrders(orderCount, type(uint16).max);

        if (trades.length / TRADE_BYTES > type(uint32).max) revert MalformedTrades(trades.length);

        // Working memory, one allocation each, no structs: a word per order (see _bookEntry)
        // and three words per meter (meterId, buy sums, sell sums; see _applyTrades).
        uint256[] memory book = new uint256[](orderCount);
        uint256[] memory meters = new uint256[](orderCount * _METER_WORDS);
        uint256 participants = _verifyOrders(interval, orders, book, meters);
        _applyTrades(orders, trades, book, meters);
        (uint256 escrowed, bytes memory packedPositions) = _escrow(meters, participants);

        _intervals[interval] = keccak256(packedPositions);
        escrowTotal += escrowed;
        emit BatchSettled(interval, orderCount, trades.length / TRADE_BYTES, escrowed, packedPositions);
    }

    /// @dev Checks every order's place in the sort order, side and signature, looking each
    ///      meter up once; fills `book` with one word per order and the first word of each
    ///      meter's three in `meters` with its id; returns the number of distinct meters.
    function _verifyOrders(uint64 interval, bytes calldata orders, uint256[] memory book, uint256[] memory meters)
        private
        view
        returns (uint256 participants)
    {
        bytes32 domain = _domainSeparatorV4(); // once per batch, not once per order
        bytes32 previousMeter;
        uint256 previousNonce;
        address signer;
        for (uint256 i; i < book.length; ++i) {
            uint256 at; // calldata position of order i
            uint256 entry;
            {
                bytes32 meterId;
                uint256 fields; // nonce 8 | side 1 | quantityWh 8 | limitPrice 8 | (7 bytes of r)
                assembly ("memory-safe") {
                    at := add(orders.offset, mul(i, ORDER_BYTES))
                    meterId := calldataload(at)
                    fields := calldataload(add(at, 32))
                }
                if (i == 0 || meterId != previousMeter) {
                    if (meterId < previousMeter) revert OrdersNotSorted(i, meterId, uint64(fields >> 192));
                    signer = _activeSigner(meterId);
                    assembly ("memory-safe") {
                        // meters[participants * 3] = meterId (in bounds: participants <= i < orders)
                        mstore(add(add(meters, 0x20), mul(participants, 0x60)), meterId)
                    }
                    unchecked {
                        ++participants;
                    }
                    previousMeter = meterId;
                } else if (fields >> 192 <= previousNonce) {
                    if (fields >> 192 == previousNonce) revert OrderCountedTwice(meterId, uint64(previousNonce));
                    revert OrdersNotSorted(i, meterId, uint64(fields >> 192));
                }
                previousNonce = fields >> 192;
                entry = _bookEntry(meterId, fields, participants - 1);
            }
            assembly ("memory-safe") {
                mstore(add(add(book, 0x20), shl(5, i)), entry) // book[i] (i < book.length)
            }
            _checkOrderSignature(domain, interval, entry, at, signer);
        }
    }

    /// @dev quantityWh | limitPrice << _LIMIT | participant << _PARTICIPANT | side << _SIDE.
    function _bookEntry(bytes32 meterId, uint256 fields, uint256 participant) private pure returns (uint256) {
        uint256 side = (fields >> 184) & 0xff;
        if (side > SELL) revert InvalidSide(meterId, uint64(fields >> 192), side);
        return ((fields >> 120) & _U64) | (((fields >> 56) & _U64) << _LIMIT) | (participant << _PARTICIPANT)
            | (side << _SIDE);
    }

    /// @dev The order at calldata position `at` must be signed by `signer` for this market
    ///      (`domain`) and `interval`. Side, quantity and limit come from its (checked) `entry`.
    function _checkOrderSignature(bytes32 domain, uint64 interval, uint256 entry, uint256 at, address signer)
        private
        pure
    {
        bytes32 typeHash = ORDER_TYPEHASH;
        bytes32 structHash;
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            // hashStruct(Order) over scratch memory past the free pointer (not allocated).
            let m := mload(0x40)
            mstore(m, typeHash)
            mstore(add(m, 0x20), calldataload(at)) // meterId
            mstore(add(m, 0x40), interval)
            mstore(add(m, 0x60), shr(_SIDE, entry)) // side
            mstore(add(m, 0x80), and(entry, _U64)) // quantityWh
            mstore(add(m, 0xa0), and(shr(_LIMIT, entry), _U64)) // limitPrice
            mstore(add(m, 0xc0), shr(192, calldataload(add(at, 32)))) // nonce
            structHash := keccak256(m, 0xe0)
            r := calldataload(add(at, 57))
            s := calldataload(add(at, 89))
            v := byte(0, calldataload(add(at, 121)))
        }
        (address recovered,,) = ECDSA.tryRecover(MessageHashUtils.toTypedDataHash(domain, structHash), v, r, s);
        if (recovered != signer) {
            revert InvalidOrderSignature(_calldataWord(at), uint64(uint256(_calldataWord(at + 32)) >> 192), recovered);
        }
    }

    /// @dev The 32 bytes of calldata at absolute position `at`.
    function _calldataWord(uint256 at) private pure returns (bytes32 word) {
        assembly ("memory-safe") {
            word := calldataload(at)
        }
    }

    /// @dev Checks every trade against its two orders and adds it to their fills and to the
    ///      two meters' sums. A meter's sums are two words in `meters` after its id:
    ///      boughtWh << 128 | costMilli, and soldWh << 128 | valueMilli. They cannot carry
    ///      across the 128-bit boundary: there are fewer than 2^32 trades (checked), each adds
    ///      under 2^32 Wh and under 2^96 milli-units (uint32 Wh × uint64 price).
    function _applyTrades(
        bytes calldata orders,
        bytes calldata trades,
        uint256[] memory book,
        uint256[] memory meters
    ) private pure {
        uint256 count = trades.length / TRADE_BYTES;
        uint256 ordersAt;
        assembly ("memory-safe") {
            ordersAt := orders.offset
        }
        for (uint256 t; t < count; ++t) {
            uint256 fields; // buyOrderIndex 2 | sellOrderIndex 2 | quantityWh 4 | price 8 | (next trade)
            assembly ("memory-safe") {
                fields := calldataload(add(trades.offset, shl(4, t))) // TRADE_BYTES = 16
            }
            if (fields >> 240 >= book.length) revert TradeOrderOutOfRange(t, fields >> 240, book.length);
            if ((fields >> 224) & 0xffff >= book.length) {
                revert TradeOrderOutOfRange(t, (fields >> 224) & 0xffff, book.length);
            }
            if ((fields >> 192) & 0xffffffff == 0) revert ZeroQuantityTrade(t);
            uint256 buyer = _fill(ordersAt, book, fields >> 240, t, BUY, fields);
            uint256 seller = _fill(ordersAt, book, (fields >> 224) & 0xffff, t, SELL, fields);
            if (buyer == seller) revert SelfTrade(t, bytes32(meters[buyer * _METER_WORDS]));
            uint256 quantityWh = (fields >> 192) & 0xffffffff;
            uint256 sums = (quantityWh << 128) | (quantityWh * ((fields >> 128) & _U64));
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
    ///      order's side, its limit and its remaining quantity (`index` is in range); adds the trade to the
    ///      order's fill and returns the order's participant (meter) number.
    function _fill(
        uint256 ordersAt,
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
        uint256 quantityWh = (fields >> 192) & 0xffffffff;
        uint256 price = (fields >> 128) & _U64;
        uint256 limitPrice = (entry >> _LIMIT) & _U64;
        // filled <= quantity always holds (checked below), so quantity - filled cannot underflow.
        unchecked {
            if (entry >> _SIDE != side || (side == BUY ? price > limitPrice : price < limitPrice)
                    || quantityWh > (entry & _U64) - ((entry >> _FILLED) & _U64)) {
                _revertFill(ordersAt, entry, index, t, side, fields);
            }
        }
        assembly ("memory-safe") {
            // The fill stays <= the quantity (< 2^64): it never carries into the next field.
            mstore(add(add(book, 0x20), shl(5, index)), add(entry, shl(_FILLED, quantityWh)))
        }
        return (entry >> _PARTICIPANT) & 0xffff;
    }

    /// @dev Names why trade `t` cannot fill order `index` (its side, limit or remaining quantity).
    function _revertFill(uint256 ordersAt, uint256 entry, uint256 index, uint256 t, uint256 side, uint256 fields)
        private
        pure
    {
        uint256 quantityWh = (fields >> 192) & 0xffffffff;
        uint256 price = (fields >> 128) & _U64;
        uint256 limitPrice = (entry >> _LIMIT) & _U64;
        bytes32 meterId = _calldataWord(ordersAt + index * ORDER_BYTES);
        uint64 nonce = uint64(uint256(_calldataWord(ordersAt + index * ORDER_BYTES + 32)) >> 192);
        if (entry >> _SIDE != side) {
            if (side == BUY) revert NotABuyOrder(t, meterId, nonce);
            revert NotASellOrder(t, meterId, nonce);
        }
        if (side == BUY && price > limitPrice) revert PriceAboveBuyLimit(meterId, nonce, price, limitPrice);
        if (side == SELL && price < limitPrice) revert PriceBelowSellLimit(meterId, nonce, price, limitPrice);
        revert OrderOverfilled(meterId, nonce, ((entry >> _FILLED) & _U64) + quantityWh, entry & _U64);
    }

    /// @dev Takes each buyer's payment into escrow (one slot write per buyer) and packs every
    ///      trading meter's position as BatchSettled carries it.
    function _escrow(uint256[] memory meters, uint256 participants)
        private
        returns (uint256 escrowed, bytes memory packed)
    {
        packed = _newPackedPositions(participants);
        uint256 count;
        for (uint256 p; p < participants; ++p) {
            bytes32 meterId;
            uint256 bought;
            uint256 sold;
            assembly ("memory-safe") {
                let at := add(add(meters, 0x20), mul(p, 0x60)) // p < participants <= orders
                meterId := mload(at)
                bought := mload(add(at, 0x20))
                sold := mload(add(at, 0x40))
            }
            if (bought | sold == 0) continue;
            uint256 boughtWh = bought >> 128;
            uint256 costMilli = bought & type(uint128).max;
            uint256 soldWh = sold >> 128;
            if (boughtWh > _U64 || soldWh > _U64) revert MalformedTrades(p);
            uint256 amount;
            unchecked {
                amount = (costMilli + (_MILLI - 1)) / _MILLI; // ceil; costMilli < 2^128
            }
            if (amount != 0) {
                // _meters[meterId], its slot's key computed once for the read and the write.
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
                unchecked {
                    escrowed += amount; // each amount < 2^64 (a balance), fewer than 2^16 meters
                }
            }
            uint256 middle = (boughtWh << 192) | (costMilli << 64) | soldWh;
            uint256 last = sold << 128; // valueMilli in the top 16 bytes
            assembly ("memory-safe") {
                let at := add(add(packed, 0x20), mul(count, _PACKED_POSITION_BYTES))
                mstore(at, meterId)
                mstore(add(at, 0x20), middle)
                mstore(add(at, 0x40), last)
            }
            unchecked {
                ++count;
            }
        }
        _setLength(packed, count * _PACKED_POSITION_BYTES);
    }

    // ---------------------------------------------------------------- delivery

    /// @notice Settle an interval's delivery, once: pay sellers for what they delivered, refund
    ///         buyers for what they did not receive, and settle every difference with the grid
    ///         account at the retail and feed-in tariffs.
    /// @dev Entries are sorted strictly by meterId. Each entry is
    ///      meterId 32 | flags 1 [bit 0: position follows, bit 1: reading follows]
    ///      | position: boughtWh 8 | costMilli 16 | soldWh 8 | valueMilli 16
    ///      | reading: importWh 8 | exportWh 8 | r 32 | s 32 | v 1.
    ///      Every position of the interval's batch must be present (their hash is checked).
    ///      A reading holds the cumulative registers at the interval's end and is counted against
    ///      the meter's last settled reading; a meter's first reading only sets its baseline.
    ///      A meter with a position but no reading counts as having delivered and received
    ///      nothing; its energy is billed with its next reading.
    /// @param interval The interval (its start, Unix seconds).
    /// @param entries Packed entries as above.
    function settleDelivery(uint64 interval, bytes calldata entries) external onlyRole(OPERATOR_ROLE) nonReentrant {
        if (interval == 0) revert ZeroInterval();
        bytes32 committed = _intervals[interval];
        if (committed == _DELIVERED) revert IntervalAlreadySettled(interval);

        Tariffs memory rates = _tariffs;
        DeliveryTotals memory totals;
        uint256 maxEntries = entries.length / _MIN_ENTRY_BYTES;
        totals.positions = _newPackedPositions(maxEntries);
        totals.settlements = new bytes(maxEntries * _SETTLEMENT_BYTES + 16);
        bytes32 previous;
        uint256 offset;
        while (offset < entries.length) {
            if (offset + 33 > entries.length) revert MalformedEntries(offset);
            bytes32 meterId = _word(entries, offset);
            if (totals.meters != 0 && meterId <= previous) {
                if (meterId == previous) revert MeterCountedTwice(meterId);
                revert EntriesNotSorted(meterId, previous);
            }
            previous = meterId;
            offset = _settleEntry(interval, entries, offset, rates, totals);
        }
        _setLength(totals.positions, totals.positionCount * _PACKED_POSITION_BYTES);
        _setLength(totals.settlements, totals.meters * _SETTLEMENT_BYTES);
        bytes32 provided = totals.positionCount == 0 ? bytes32(0) : keccak256(totals.positions);
        if (provided != committed) revert PositionsMismatch(interval, committed, provided);

        uint256 grid = gridBalance + totals.gridIncome;
        if (grid < totals.gridExpense) revert InsufficientGridBalance(totals.gridExpense, grid);
        gridBalance = grid - totals.gridExpense;
        escrowTotal -= totals.escrowReleased;
        _intervals[interval] = _DELIVERED;
        emit DeliverySettled(
            interval, int256(totals.gridIncome) - int256(totals.gridExpense), totals.settlements
        );
    }

    function _settleEntry(
        uint64 interval,
        bytes calldata entries,
        uint256 offset,
        Tariffs memory rates,
        DeliveryTotals memory totals
    ) private returns (uint256 next) {
        bytes32 meterId = _word(entries, offset);
        uint256 flags = uint256(_word(entries, offset + 32)) >> 248;
        if (flags == 0 || flags > (_HAS_POSITION | _HAS_READING)) revert MalformedEntries(offset);
        next = offset + 33;
        Position memory position;
        position.meterId = meterId;
        if (flags & _HAS_POSITION != 0) {
            if (next + _POSITION_BYTES > entries.length) revert MalformedEntries(offset);
            uint256 a = uint256(_word(entries, next));
            position.boughtWh = a >> 192;
            position.costMilli = (a >> 64) & type(uint128).max;
            position.soldWh = a & _U64;
            position.valueMilli = uint256(_word(entries, next + 32)) >> 128;
            next += _POSITION_BYTES;
            _packPosition(totals.positions, totals.positionCount++, position);
        }
        uint256 slot = _meters[meterId];
        uint256 importedWh;
        uint256 exportedWh;
        if (flags & _HAS_READING != 0) {
            if (next + _READING_BYTES > entries.length) revert MalformedEntries(offset);
            (importedWh, exportedWh, slot) = _applyReading(interval, meterId, entries, next, slot);
            next += _READING_BYTES;
        }
        int256 change;
        (slot, change) = _settleMoney(interval, position, importedWh, exportedWh, rates, totals, slot);
        _meters[meterId] = slot;
        _packSettlement(totals.settlements, totals.meters++, meterId, importedWh, exportedWh, change);
    }

    /// @dev Checks a reading's signature and its registers against the meter's slot; returns
    ///      the energy since the last settled reading and the slot with the new registers.
    function _applyReading(uint64 interval, bytes32 meterId, bytes calldata entries, uint256 offset, uint256 slot)
        private
        view
        returns (uint256, uint256, uint256)
    {
        _checkReadingSignature(interval, meterId, entries, offset);
        return _advance(interval, meterId, uint256(_word(entries, offset)), slot);
    }

    /// @dev `counters` holds importWh in its top 8 bytes and exportWh in the next 8.
    function _advance(uint64 interval, bytes32 meterId, uint256 counters, uint256 slot)
        private
        pure
        returns (uint256 importedWh, uint256 exportedWh, uint256)
    {
        uint256 importWh = counters >> 192;
        uint256 exportWh = (counters >> 128) & _U64;
        uint64 lastInterval = uint64(slot);
        if (lastInterval >= interval) revert ReadingNotAfterLastSettled(meterId, interval, lastInterval);
        uint256 lastImportWh = (slot >> _IMPORT) & _U64;
        uint256 lastExportWh = (slot >> _EXPORT) & _U64;
        if (importWh < lastImportWh || exportWh < lastExportWh) {
            revert CounterWentBackwards(
                meterId, uint64(lastImportWh), uint64(importWh), uint64(lastExportWh), uint64(exportWh)
            );
        }
        if (lastInterval != 0) {
            importedWh = importWh - lastImportWh;
            exportedWh = exportWh - lastExportWh;
        }
        slot = (slot & (_U64 << _BALANCE)) | (exportWh << _EXPORT) | (importWh << _IMPORT) | interval;
        return (importedWh, exportedWh, slot);
    }

    function _checkReadingSignature(uint64 interval, bytes32 meterId, bytes calldata entries, uint256 offset)
        private
        view
    {
        address signer = _activeSigner(meterId);
        uint256 counters = uint256(_word(entries, offset));
        bytes32 digest = _readingDigest(meterId, interval, counters >> 192, (counters >> 128) & _U64);
        address recovered = _recover(digest, entries[offset + 16:offset + 81]);
        if (recovered != signer) revert InvalidReadingSignature(meterId, recovered);
    }

    /// @dev Applies one meter's settlement to its slot and the totals; returns the new slot and
    ///      the change of its balance, released escrow included.
    function _settleMoney(
        uint64 interval,
        Position memory position,
        uint256 importedWh,
        uint256 exportedWh,
        Tariffs memory rates,
        DeliveryTotals memory totals,
        uint256 slot
    ) private returns (uint256, int256) {
        (uint256 escrow, uint256 credits, uint256 debit) = _meterAmounts(position, importedWh, exportedWh, rates);
        uint256 funds = (slot >> _BALANCE) + credits;
        uint256 paid = debit;
        if (funds < debit) {
            paid = funds;
            emit Shortfall(interval, position.meterId, debit - funds);
        }
        uint256 balance = funds - paid;
        if (balance > _U64) revert BalanceOverflow(position.meterId, balance);
        totals.escrowReleased += escrow;
        totals.gridIncome += paid;
        totals.gridExpense += credits - escrow;
        return ((slot & ~(_U64 << _BALANCE)) | (balance << _BALANCE), int256(credits) - int256(paid));
    }

    /// @dev What a meter gets back (`credits`, including its released `escrow`) and owes
    ///      (`debit`) for an interval, in smallest units. Energy received from the market is what
    ///      was bought, up to what was imported; the rest of the import came from the grid at the
    ///      retail price. Energy delivered to the market is what was sold, up to what was
    ///      exported; the rest of the export went to the grid at the feed-in price. Credits round
    ///      down and debits up, once per meter; the grid account takes the residue.
    function _meterAmounts(Position memory position, uint256 importedWh, uint256 exportedWh, Tariffs memory rates)
        private
        pure
        returns (uint256 escrow, uint256 credits, uint256 debit)
    {
        uint256 receivedWh = Math.min(position.boughtWh, importedWh);
        uint256 deliveredWh = Math.min(position.soldWh, exportedWh);
        uint256 debitMilli = (importedWh - receivedWh) * rates.retailPrice;
        if (receivedWh != 0) {
            debitMilli += Math.mulDiv(position.costMilli, receivedWh, position.boughtWh, Math.Rounding.Ceil);
        }
        uint256 creditMilli = (exportedWh - deliveredWh) * rates.feedInPrice;
        if (deliveredWh != 0) creditMilli += Math.mulDiv(position.valueMilli, deliveredWh, position.soldWh);
        escrow = Math.ceilDiv(position.costMilli, _MILLI);
        credits = escrow + creditMilli / _MILLI;
        debit = Math.ceilDiv(debitMilli, _MILLI);
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

    /// @notice 0: open, 1: batch settled (delivery pending), 2: delivery settled; and the
    ///         positions hash of the batch while its delivery is pending.
    /// @param interval The interval.
    function intervalStatus(uint64 interval) external view returns (uint8 status, bytes32 positionsHash) {
        bytes32 state = _intervals[interval];
        if (state == bytes32(0)) return (0, bytes32(0));
        if (state == _DELIVERED) return (2, bytes32(0));
        return (1, state);
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
        return _orderDigest(meterId, interval, side, quantityWh, limitPrice, nonce);
    }

    /// @notice The EIP-712 digest a meter signs for a reading.
    function hashReading(bytes32 meterId, uint64 interval, uint64 importWh, uint64 exportWh)
        external
        view
        returns (bytes32)
    {
        return _readingDigest(meterId, interval, importWh, exportWh);
    }

    // ---------------------------------------------------------------- helpers

    function _deposit(bytes32 meterId, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        _activeSigner(meterId);
        uint256 slot = _meters[meterId];
        uint256 balance = (slot >> _BALANCE) + amount;
        if (balance > _U64) revert BalanceOverflow(meterId, balance);
        _meters[meterId] = slot + (amount << _BALANCE);
        emit Deposited(meterId, msg.sender, amount);
        credit.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @dev registry.signerOf(meterId), called through the scratch space: this runs once per
    ///      meter per batch, and the high-level call's memory encoding costs ~20% of the lookup.
    function _activeSigner(bytes32 meterId) private view returns (address signer) {
        bool revoked;
        address target = address(registry);
        bytes4 selector = IMeterRegistry.signerOf.selector;
        assembly ("memory-safe") {
            mstore(0x00, selector)
            mstore(0x04, meterId)
            let ok := staticcall(gas(), target, 0x00, 0x24, 0x00, 0x40)
            if iszero(and(ok, gt(returndatasize(), 0x3f))) {
                returndatacopy(0x00, 0x00, returndatasize())
                revert(0x00, returndatasize())
            }
            signer := and(mload(0x00), 0xffffffffffffffffffffffffffffffffffffffff)
            revoked := iszero(iszero(mload(0x20)))
        }
        if (signer == address(0)) revert UnknownMeter(meterId);
        if (revoked) revert MeterIsRevoked(meterId);
    }

    /// @dev EIP-712 digest of an Order; the struct is hashed in scratch memory (no allocation
    ///      per order). Every argument is already within its declared uint type's range.
    function _orderDigest(
        bytes32 meterId,
        uint256 interval,
        uint256 side,
        uint256 quantityWh,
        uint256 limitPrice,
        uint256 nonce
    ) private view returns (bytes32) {
        bytes32 typeHash = ORDER_TYPEHASH;
        bytes32 structHash;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typeHash)
            mstore(add(m, 0x20), meterId)
            mstore(add(m, 0x40), interval)
            mstore(add(m, 0x60), side)
            mstore(add(m, 0x80), quantityWh)
            mstore(add(m, 0xa0), limitPrice)
            mstore(add(m, 0xc0), nonce)
            structHash := keccak256(m, 0xe0)
        }
        return _hashTypedDataV4(structHash);
    }

    /// @dev EIP-712 digest of a Reading, hashed like _orderDigest.
    function _readingDigest(bytes32 meterId, uint256 interval, uint256 importWh, uint256 exportWh)
        private
        view
        returns (bytes32)
    {
        bytes32 typeHash = READING_TYPEHASH;
        bytes32 structHash;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typeHash)
            mstore(add(m, 0x20), meterId)
            mstore(add(m, 0x40), interval)
            mstore(add(m, 0x60), importWh)
            mstore(add(m, 0x80), exportWh)
            structHash := keccak256(m, 0xa0)
        }
        return _hashTypedDataV4(structHash);
    }

    /// @dev The signer of `digest` from a 65-byte r ‖ s ‖ v signature in calldata (zero if invalid).
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address recovered) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := calldataload(signature.offset)
            s := calldataload(add(signature.offset, 0x20))
            v := byte(0, calldataload(add(signature.offset, 0x40)))
        }
        (recovered,,) = ECDSA.tryRecover(digest, v, r, s);
    }

    /// @dev A bytes buffer for `count` packed positions, with 16 bytes of slack because each
    ///      position is written as three full words.
    function _newPackedPositions(uint256 count) private pure returns (bytes memory) {
        return new bytes(count * _PACKED_POSITION_BYTES + 16);
    }

    /// @dev Writes position `index` into `packed`:
    ///      meterId 32 | boughtWh 8 | costMilli 16 | soldWh 8 | valueMilli 16.
    function _packPosition(bytes memory packed, uint256 index, Position memory position) private pure {
        bytes32 meterId = position.meterId;
        uint256 middle = (position.boughtWh << 192) | (position.costMilli << 64) | position.soldWh;
        uint256 last = position.valueMilli << 128;
        if (position.costMilli > type(uint128).max || position.valueMilli > type(uint128).max) {
            revert MalformedTrades(index);
        }
        assembly ("memory-safe") {
            let at := add(add(packed, 32), mul(index, 80))
            mstore(at, meterId)
            mstore(add(at, 32), middle)
            mstore(add(at, 64), last)
        }
    }

    /// @dev Writes settlement `index`: meterId 32 | importedWh 8 | exportedWh 8 | change int128 16.
    function _packSettlement(
        bytes memory packed,
        uint256 index,
        bytes32 meterId,
        uint256 importedWh,
        uint256 exportedWh,
        int256 change
    ) private pure {
        uint256 word = (importedWh << 192) | (exportedWh << 128) | uint256(uint128(int128(change)));
        assembly ("memory-safe") {
            let at := add(add(packed, 32), mul(index, 64))
            mstore(at, meterId)
            mstore(add(at, 32), word)
        }
    }

    /// @dev Shortens a bytes buffer to its used length (never longer than allocated).
    function _setLength(bytes memory data, uint256 length) private pure {
        assembly ("memory-safe") {
            mstore(data, length)
        }
    }

    /// @dev The 32 bytes of `data` starting at `offset`. Bytes past the slice's end belong to the
    ///      rest of the calldata: callers check bounds and use only the bytes inside the slice.
    function _word(bytes calldata data, uint256 offset) private pure returns (bytes32 word) {
        assembly ("memory-safe") {
            word := calldataload(add(data.offset, offset))
        }
    }
}
