// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Settlement} from "./Settlement.sol";

/// @title PackedCalldata
/// @notice The packed layouts of EnergyMarket's calldata and events, and their codec: the
///         orders and trades of settleBatch, the entries of settleDelivery, and the positions
///         and settlements its events carry.
/// @dev Big-endian, no padding (meterchain.chain.batch packs and decodes the same layouts):
///      order    (122 B): meterId 32 | nonce 8 | side 1 | quantityWh 8 | limitPrice 8 | r 32 | s 32 | v 1
///      trade     (16 B): buyOrderIndex 2 | sellOrderIndex 2 | quantityWh 4 | price 8
///      entry   (33+ B):  meterId 32 | flags 1 (1: position follows, 2: reading follows)
///                        | position (48 B): boughtWh 8 | costMilli 16 | soldWh 8 | valueMilli 16
///                        | reading  (97 B): startImportWh 8 | startExportWh 8 | endImportWh 8
///                                           | endExportWh 8 | r 32 | s 32 | v 1
///      packed position (80 B): meterId 32 | position 48 (BatchSettled, refundInterval)
///      packed settlement (64 B): meterId 32 | importedWh 8 | exportedWh 8 | balanceChange int128 16
library PackedCalldata {
    uint256 internal constant ORDER_BYTES = 122;
    uint256 internal constant TRADE_BYTES = 16;
    uint256 internal constant ENTRY_HEADER_BYTES = 33;
    uint256 internal constant POSITION_BYTES = 48;
    uint256 internal constant READING_BYTES = 97;
    uint256 internal constant PACKED_POSITION_BYTES = 80;
    uint256 internal constant SETTLEMENT_BYTES = 64;
    uint256 internal constant HAS_POSITION = 1;
    uint256 internal constant HAS_READING = 2;
    uint256 private constant _U64 = 0xffffffffffffffff;

    error MalformedEntries(uint256 offset);
    error PositionTooLarge(bytes32 meterId);

    /// @dev A reading's four registers, in Wh.
    struct Registers {
        uint256 startImportWh;
        uint256 startExportWh;
        uint256 endImportWh;
        uint256 endExportWh;
    }

    /// @notice The 32 bytes of `data` at `offset`. Bytes past the slice's end belong to the rest
    ///         of the calldata: callers check bounds and use only the bytes inside the slice.
    function word(bytes calldata data, uint256 offset) internal pure returns (bytes32 value) {
        assembly ("memory-safe") {
            value := calldataload(add(data.offset, offset))
        }
    }

    /// @notice Where order `index` of `orders` starts in calldata (an absolute position, read
    ///         with orderHead and orderSignature: one stack slot instead of a slice and an index
    ///         keeps the per-order loop cheap). The caller checks `index` is below
    ///         orders.length / ORDER_BYTES.
    function orderAt(bytes calldata orders, uint256 index) internal pure returns (uint256 at) {
        assembly ("memory-safe") {
            at := add(orders.offset, mul(index, ORDER_BYTES))
        }
    }

    /// @notice The order at calldata position `at` (see orderAt): its meter and its terms word,
    ///         nonce 8 | side 1 | quantityWh 8 | limitPrice 8 | the first 7 bytes of r (read its
    ///         fields with orderNonce and orderTerms).
    function orderHead(uint256 at) internal pure returns (bytes32 meterId, uint256 terms) {
        assembly ("memory-safe") {
            meterId := calldataload(at)
            terms := calldataload(add(at, 32))
        }
    }

    /// @notice The nonce in an order's terms word.
    function orderNonce(uint256 terms) internal pure returns (uint256) {
        return terms >> 192;
    }

    /// @notice An order's side (BUY = 0, SELL = 1; not checked here), quantity (Wh) and limit
    ///         price (smallest units per kWh) from its terms word.
    function orderTerms(uint256 terms)
        internal
        pure
        returns (uint256 side, uint256 quantityWh, uint256 limitPrice)
    {
        side = (terms >> 184) & 0xff;
        quantityWh = (terms >> 120) & _U64;
        limitPrice = (terms >> 56) & _U64;
    }

    /// @notice The signature (r, s, v) of the order at calldata position `at`: the last 65 of
    ///         its 122 bytes.
    function orderSignature(uint256 at) internal pure returns (bytes32 r, bytes32 s, uint8 v) {
        assembly ("memory-safe") {
            r := calldataload(add(at, 57))
            s := calldataload(add(at, 89))
            v := byte(0, calldataload(add(at, 121)))
        }
    }

    /// @notice Trade `index`'s word: buyOrderIndex 2 | sellOrderIndex 2 | quantityWh 4 |
    ///         price 8 | 16 bytes past it (read its fields with the trade* helpers). The caller
    ///         checks `index` is below trades.length / TRADE_BYTES.
    function trade(bytes calldata trades, uint256 index) internal pure returns (uint256 fields) {
        assembly ("memory-safe") {
            fields := calldataload(add(trades.offset, shl(4, index))) // TRADE_BYTES = 16
        }
    }

    /// @notice The index of a trade's buy order, from its word.
    function tradeBuyOrder(uint256 fields) internal pure returns (uint256) {
        return fields >> 240;
    }

    /// @notice The index of a trade's sell order, from its word.
    function tradeSellOrder(uint256 fields) internal pure returns (uint256) {
        return (fields >> 224) & 0xffff;
    }

    /// @notice A trade's quantity (Wh), from its word.
    function tradeQuantityWh(uint256 fields) internal pure returns (uint256) {
        return (fields >> 192) & 0xffffffff;
    }

    /// @notice A trade's price (smallest units per kWh), from its word.
    function tradePrice(uint256 fields) internal pure returns (uint256) {
        return (fields >> 128) & _U64;
    }

    /// @notice A trade's quantity (Wh) and price (smallest units per kWh), from its word.
    function tradeTerms(uint256 fields) internal pure returns (uint256 quantityWh, uint256 price) {
        quantityWh = (fields >> 192) & 0xffffffff;
        price = (fields >> 128) & _U64;
    }

    /// @notice Decodes the entry at `offset`: its meter, flags, position (zero if absent) and
    ///         the offset of its reading (0 if absent); returns the next entry's offset.
    function entry(bytes calldata entries, uint256 offset)
        internal
        pure
        returns (Settlement.Position memory position, uint256 readingAt, uint256 next)
    {
        if (offset + ENTRY_HEADER_BYTES > entries.length) revert MalformedEntries(offset);
        position.meterId = word(entries, offset);
        uint256 flags = uint256(word(entries, offset + 32)) >> 248;
        if (flags == 0 || flags > (HAS_POSITION | HAS_READING)) revert MalformedEntries(offset);
        next = offset + ENTRY_HEADER_BYTES;
        if (flags & HAS_POSITION != 0) {
            if (next + POSITION_BYTES > entries.length) revert MalformedEntries(offset);
            _decodePosition(entries, next, position);
            next += POSITION_BYTES;
        }
        if (flags & HAS_READING != 0) {
            if (next + READING_BYTES > entries.length) revert MalformedEntries(offset);
            readingAt = next;
            next += READING_BYTES;
        }
    }

    /// @notice The packed position at `offset` (80 bytes: meterId, then the 48-byte position).
    function packedPosition(bytes calldata packed, uint256 offset)
        internal
        pure
        returns (Settlement.Position memory position)
    {
        position.meterId = word(packed, offset);
        _decodePosition(packed, offset + 32, position);
    }

    /// @notice The registers of the reading at `offset`, packed in one word (startImportWh in
    ///         the top 8 bytes, then startExportWh, endImportWh, endExportWh), as signed.
    function readingRegisters(bytes calldata entries, uint256 offset) internal pure returns (uint256) {
        return uint256(word(entries, offset));
    }

    /// @notice A packed registers word split into its four fields.
    function registers(uint256 packed) internal pure returns (Registers memory r) {
        r.startImportWh = packed >> 192;
        r.startExportWh = (packed >> 128) & _U64;
        r.endImportWh = (packed >> 64) & _U64;
        r.endExportWh = packed & _U64;
    }

    /// @notice The 65-byte signature r ‖ s ‖ v that follows a reading's registers.
    function readingSignature(bytes calldata entries, uint256 offset) internal pure returns (bytes calldata) {
        return entries[offset + 32:offset + READING_BYTES];
    }

    /// @notice A bytes buffer for `count` packed positions (16 bytes of slack: each is written
    ///         as three full words).
    function newPositions(uint256 count) internal pure returns (bytes memory) {
        return new bytes(count * PACKED_POSITION_BYTES + 16);
    }

    /// @notice A bytes buffer for `count` packed settlements.
    function newSettlements(uint256 count) internal pure returns (bytes memory) {
        return new bytes(count * SETTLEMENT_BYTES + 16);
    }

    /// @notice Writes position `index` into `packed` (meterId 32 | boughtWh 8 | costMilli 16 |
    ///         soldWh 8 | valueMilli 16).
    function packPosition(bytes memory packed, uint256 index, Settlement.Position memory position) internal pure {
        if (
            position.boughtWh > _U64 || position.soldWh > _U64 || position.costMilli > type(uint128).max
                || position.valueMilli > type(uint128).max
        ) revert PositionTooLarge(position.meterId);
        bytes32 meterId = position.meterId;
        uint256 middle = (position.boughtWh << 192) | (position.costMilli << 64) | position.soldWh;
        uint256 last = position.valueMilli << 128;
        assembly ("memory-safe") {
            let at := add(add(packed, 32), mul(index, 80))
            mstore(at, meterId)
            mstore(add(at, 32), middle)
            mstore(add(at, 64), last)
        }
    }

    /// @notice Writes settlement `index`: meterId 32 | importedWh 8 | exportedWh 8 | change int128 16.
    function packSettlement(
        bytes memory packed,
        uint256 index,
        bytes32 meterId,
        uint256 importedWh,
        uint256 exportedWh,
        int256 change
    ) internal pure {
        uint256 value = (importedWh << 192) | (exportedWh << 128) | uint256(uint128(int128(change)));
        assembly ("memory-safe") {
            let at := add(add(packed, 32), mul(index, 64))
            mstore(at, meterId)
            mstore(add(at, 32), value)
        }
    }

    /// @notice Shortens a bytes buffer to its used length (never longer than allocated).
    function setLength(bytes memory data, uint256 length) internal pure {
        assembly ("memory-safe") {
            mstore(data, length)
        }
    }

    function _decodePosition(bytes calldata data, uint256 offset, Settlement.Position memory position)
        private
        pure
    {
        uint256 a = uint256(word(data, offset));
        position.boughtWh = a >> 192;
        position.costMilli = (a >> 64) & type(uint128).max;
        position.soldWh = a & _U64;
        position.valueMilli = uint256(word(data, offset + 32)) >> 128;
    }
}
