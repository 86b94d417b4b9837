// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

import {PackedCalldata} from "./PackedCalldata.sol";

/// @title MarketSignatures
/// @notice EIP-712 hashing of EnergyMarket's orders and readings and the recovery of their
///         signers (meterchain.chain.signing computes the same digests in Python).
/// @dev The caller passes its domain separator (EIP712._domainSeparatorV4): the market reads
///      it once per batch, not once per order. Structs are hashed in scratch memory past the
///      free memory pointer (never allocated). Recovery never reverts: a malformed or invalid
///      signature recovers the zero address, so the caller decides what a mismatch means
///      (a revert for an order, a rejected reading for a reading).
library MarketSignatures {
    /// @notice EIP-712 type of a meter's limit order.
    bytes32 internal constant ORDER_TYPEHASH = keccak256(
        "Order(bytes32 meterId,uint64 interval,uint8 side,uint64 quantityWh,uint64 limitPrice,uint64 nonce)"
    );
    /// @notice EIP-712 type of a meter's cumulative registers at both ends of one interval.
    bytes32 internal constant READING_TYPEHASH = keccak256(
        "Reading(bytes32 meterId,uint64 interval,uint64 startImportWh,uint64 startExportWh,uint64 endImportWh,uint64 endExportWh)"
    );

    /// @notice EIP-712 digest of an Order under `domain`.
    function orderDigest(
        bytes32 domain,
        bytes32 meterId,
        uint256 interval,
        uint256 side,
        uint256 quantityWh,
        uint256 limitPrice,
        uint256 nonce
    ) internal pure returns (bytes32) {
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
        return MessageHashUtils.toTypedDataHash(domain, structHash);
    }

    /// @notice EIP-712 digest of a Reading under `domain`, from its registers packed in one
    ///         word as signed (see PackedCalldata.readingRegisters).
    function readingDigest(bytes32 domain, bytes32 meterId, uint256 interval, uint256 packedRegisters)
        internal
        pure
        returns (bytes32)
    {
        bytes32 typeHash = READING_TYPEHASH;
        bytes32 structHash;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typeHash)
            mstore(add(m, 0x20), meterId)
            mstore(add(m, 0x40), interval)
            mstore(add(m, 0x60), shr(192, packedRegisters))
            mstore(add(m, 0x80), and(shr(128, packedRegisters), 0xffffffffffffffff))
            mstore(add(m, 0xa0), and(shr(64, packedRegisters), 0xffffffffffffffff))
            mstore(add(m, 0xc0), and(packedRegisters, 0xffffffffffffffff))
            structHash := keccak256(m, 0xe0)
        }
        return MessageHashUtils.toTypedDataHash(domain, structHash);
    }

    /// @notice The signer of the packed order at calldata position `orderAt` (see
    ///         PackedCalldata.orderAt) for `interval` under `domain` (zero if its signature is
    ///         invalid). The order's side is hashed as packed: the caller checks it is BUY or SELL.
    function orderSigner(bytes32 domain, uint256 interval, uint256 orderAt) internal pure returns (address recovered) {
        bytes32 typeHash = ORDER_TYPEHASH;
        bytes32 structHash;
        // The packed order's fields are read here in assembly (layout: PackedCalldata): through
        // PackedCalldata's accessors the legacy optimizer left calls uninlined, ~110 gas more
        // per order (measured with bench/bench_gas.py).
        assembly ("memory-safe") {
            let terms := calldataload(add(orderAt, 32)) // nonce 8 | side 1 | quantityWh 8 | limitPrice 8
            let m := mload(0x40)
            mstore(m, typeHash)
            mstore(add(m, 0x20), calldataload(orderAt)) // meterId
            mstore(add(m, 0x40), interval)
            mstore(add(m, 0x60), and(shr(184, terms), 0xff)) // side
            mstore(add(m, 0x80), and(shr(120, terms), 0xffffffffffffffff)) // quantityWh
            mstore(add(m, 0xa0), and(shr(56, terms), 0xffffffffffffffff)) // limitPrice
            mstore(add(m, 0xc0), shr(192, terms)) // nonce
            structHash := keccak256(m, 0xe0)
        }
        bytes32 digest = MessageHashUtils.toTypedDataHash(domain, structHash);
        (bytes32 r, bytes32 s, uint8 v) = PackedCalldata.orderSignature(orderAt);
        (recovered,,) = ECDSA.tryRecover(digest, v, r, s);
    }

    /// @notice The signer of the reading at `offset` of a delivery's `entries`, for `meterId`
    ///         and `interval` under `domain` (zero if its signature is invalid).
    function readingSigner(bytes32 domain, bytes32 meterId, uint256 interval, bytes calldata entries, uint256 offset)
        internal
        pure
        returns (address)
    {
        bytes32 digest = readingDigest(domain, meterId, interval, PackedCalldata.readingRegisters(entries, offset));
        return recover(digest, PackedCalldata.readingSignature(entries, offset));
    }

    /// @notice The signer of `digest` from a 65-byte r ‖ s ‖ v signature in calldata (zero if
    ///         the signature is not 65 bytes or is invalid).
    function recover(bytes32 digest, bytes calldata signature) internal pure returns (address recovered) {
        if (signature.length != 65) return address(0);
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
}
