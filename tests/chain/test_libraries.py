"""The contracts' internal libraries on their own, against their Python mirror.

Settlement (the money rules), PackedCalldata (the calldata codec) and MarketSignatures (EIP-712
hashing and signer recovery) are compiled into a small harness contract that exposes them;
hypothesis compares every result with meterchain.chain.batch and meterchain.chain.signing, the
code the market agent, the boards, the simulation and the verifiers use, and with signatures
made by eth-account's own EIP-712 encoder.
"""

from __future__ import annotations

from typing import Any

import pytest
from contract_suite import board_key
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_signature_to_4byte_selector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.exceptions import ContractCustomError

from conftest import compile_solidity
from meterchain.chain.batch import (
    Metered,
    Position,
    locked_units,
    max_energy_wh,
    pack_delivery,
    pack_order,
    pack_trade,
    settle_meter,
)
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import (
    ORDER_TYPE,
    READING_TYPE,
    MarketDomain,
    OrderMessage,
    OrderSide,
    ReadingMessage,
    SignedOrder,
    SignedReading,
    meter_id_to_bytes32,
    order_digest,
    reading_digest,
    sign_reading,
)

HARNESS = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {MarketSignatures} from "MarketSignatures.sol";
import {PackedCalldata} from "PackedCalldata.sol";
import {Settlement} from "Settlement.sol";

contract LibraryHarness {
    function lockedUnits(uint256[4] calldata p, uint256 retail) external pure returns (uint256) {
        return Settlement.lockedUnits(_position(p), retail);
    }

    function amounts(uint256[4] calldata p, uint256[4] calldata m, uint256 retail, uint256 feedIn)
        external
        pure
        returns (uint256 locked, uint256 credits, uint256 debit)
    {
        Settlement.Metered memory metered = Settlement.Metered(m[0], m[1], m[2], m[3]);
        return Settlement.amounts(_position(p), metered, retail, feedIn);
    }

    function maxEnergyWh(uint256 maxPowerW, uint256 seconds_) external pure returns (uint256) {
        return Settlement.maxEnergyWh(maxPowerW, seconds_);
    }

    function entry(bytes calldata entries, uint256 offset)
        external
        pure
        returns (bytes32 meterId, uint256[4] memory position, uint256 readingAt, uint256 next)
    {
        Settlement.Position memory p;
        (p, readingAt, next) = PackedCalldata.entry(entries, offset);
        return (p.meterId, [p.boughtWh, p.costMilli, p.soldWh, p.valueMilli], readingAt, next);
    }

    function registers(bytes calldata entries, uint256 at)
        external
        pure
        returns (uint256[4] memory)
    {
        PackedCalldata.Registers memory r =
            PackedCalldata.registers(PackedCalldata.readingRegisters(entries, at));
        return [r.startImportWh, r.startExportWh, r.endImportWh, r.endExportWh];
    }

    /// meterId, then nonce, side, quantityWh, limitPrice.
    function order(bytes calldata orders, uint256 index)
        external
        pure
        returns (bytes32 meterId, uint256[4] memory fields)
    {
        uint256 terms;
        (meterId, terms) = PackedCalldata.orderHead(PackedCalldata.orderAt(orders, index));
        (uint256 side, uint256 quantityWh, uint256 limitPrice) = PackedCalldata.orderTerms(terms);
        fields = [PackedCalldata.orderNonce(terms), side, quantityWh, limitPrice];
    }

    function orderSignature(bytes calldata orders, uint256 index)
        external
        pure
        returns (bytes32 r, bytes32 s, uint8 v)
    {
        return PackedCalldata.orderSignature(PackedCalldata.orderAt(orders, index));
    }

    /// buyOrder, sellOrder, quantityWh, price (twice: one accessor each, then tradeTerms).
    function trade(bytes calldata trades, uint256 index) external pure returns (uint256[6] memory) {
        uint256 fields = PackedCalldata.trade(trades, index);
        (uint256 quantityWh, uint256 price) = PackedCalldata.tradeTerms(fields);
        return [
            PackedCalldata.tradeBuyOrder(fields),
            PackedCalldata.tradeSellOrder(fields),
            PackedCalldata.tradeQuantityWh(fields),
            PackedCalldata.tradePrice(fields),
            quantityWh,
            price
        ];
    }

    function orderDigest(bytes32 domain, bytes32 meterId, uint256 interval, uint256[4] calldata f)
        external
        pure
        returns (bytes32)
    {
        // f: side, quantityWh, limitPrice, nonce
        return MarketSignatures.orderDigest(domain, meterId, interval, f[0], f[1], f[2], f[3]);
    }

    function readingDigest(bytes32 domain, bytes32 meterId, uint256 interval, uint256 packed)
        external
        pure
        returns (bytes32)
    {
        return MarketSignatures.readingDigest(domain, meterId, interval, packed);
    }

    function orderSigner(bytes32 domain, uint256 interval, bytes calldata orders, uint256 index)
        external
        pure
        returns (address)
    {
        uint256 at = PackedCalldata.orderAt(orders, index);
        return MarketSignatures.orderSigner(domain, interval, at);
    }

    function readingSigner(
        bytes32 domain,
        bytes32 meterId,
        uint256 interval,
        bytes calldata entries,
        uint256 offset
    ) external pure returns (address) {
        return MarketSignatures.readingSigner(domain, meterId, interval, entries, offset);
    }

    function recover(bytes32 digest, bytes calldata signature) external pure returns (address) {
        return MarketSignatures.recover(digest, signature);
    }

    function _position(uint256[4] calldata p) private pure returns (Settlement.Position memory) {
        return Settlement.Position(bytes32(0), p[0], p[1], p[2], p[3]);
    }
}
"""

wh = st.integers(0, 10**7)
prices = st.integers(0, 5_000)


@pytest.fixture(scope="module")
def harness(w3: Web3, deployer: LocalAccount) -> Any:
    artifact = compile_solidity(
        HARNESS,
        "LibraryHarness",
        imports=("MarketSignatures.sol", "PackedCalldata.sol", "Settlement.sol"),
    )
    sender = TransactionSender(w3, deployer)
    address, _ = sender.deploy(artifact.abi, artifact.bytecode)
    return w3.eth.contract(address=address, abi=artifact.abi)


def position(bought: int, sold: int, buy_price: int, sell_price: int) -> Position:
    return Position(b"", bought, bought * buy_price, sold, sold * sell_price)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bought=wh, sold=wh, buy_price=prices, sell_price=prices, retail=prices, feed_in=prices,
    metered=st.tuples(wh, wh, wh, wh),
)  # fmt: skip
def test_settlement_arithmetic_equals_the_python_mirror(
    harness: Any,
    bought: int,
    sold: int,
    buy_price: int,
    sell_price: int,
    retail: int,
    feed_in: int,
    metered: tuple[int, int, int, int],
) -> None:
    p = position(bought, sold, buy_price, sell_price)
    fields = [p.bought_wh, p.cost_milli, p.sold_wh, p.value_milli]
    assert harness.functions.lockedUnits(fields, retail).call() == locked_units(p, retail)
    expected = settle_meter(p, Metered(*metered), retail, feed_in)
    assert tuple(harness.functions.amounts(fields, list(metered), retail, feed_in).call()) == (
        expected.locked,
        expected.credits,
        expected.debit,
    )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(power=st.integers(1, 2**32 - 1), seconds=st.integers(0, 10**7))
def test_the_plausibility_bound_equals_the_python_mirror(
    harness: Any, power: int, seconds: int
) -> None:
    assert harness.functions.maxEnergyWh(power, seconds).call() == max_energy_wh(power, seconds)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    registers=st.tuples(*(st.integers(0, 2**64 - 1) for _ in range(4))),
    bought=wh,
    sold=wh,
    with_position=st.booleans(),
)
def test_the_codec_reads_what_python_packs(
    harness: Any,
    registers: tuple[int, int, int, int],
    bought: int,
    sold: int,
    with_position: bool,
) -> None:
    a, b = meter_id_to_bytes32("a"), meter_id_to_bytes32("b")
    domain = MarketDomain(31337, "0x" + "ab" * 20)
    reading = sign_reading(domain, ReadingMessage(a, 900, *registers), board_key(0))
    positions = [Position(a, bought, bought * 7, sold, sold * 9)] if with_position else []
    packed = pack_delivery([*positions, Position(b, 1, 2, 3, 4)], [reading])
    meter_id, fields, reading_at, following = harness.functions.entry(packed, 0).call()
    assert meter_id == a
    if with_position:
        assert fields == [bought, bought * 7, sold, sold * 9]
    assert harness.functions.registers(packed, reading_at).call() == list(registers)
    meter_id, fields, reading_at, end = harness.functions.entry(packed, following).call()
    assert (meter_id, fields, reading_at, end) == (b, [1, 2, 3, 4], 0, len(packed))


def test_a_truncated_entry_is_refused_with_its_offset(harness: Any) -> None:
    packed = pack_delivery([Position(meter_id_to_bytes32("a"), 1, 2, 3, 4)], [])
    with pytest.raises(ContractCustomError) as caught:
        harness.functions.entry(packed[:-1], 0).call()
    selector = function_signature_to_4byte_selector("MalformedEntries(uint256)")
    assert caught.value.data == "0x" + (selector + bytes(32)).hex()  # at offset 0


# ---------------------------------------------------------------- orders, trades, signatures

DOMAIN = MarketDomain(31337, "0x" + "ab" * 20)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
uint64 = st.integers(0, 2**64 - 1)
intervals = st.integers(1, 2**64 - 1)  # also order quantities: signing refuses 0 for both


def eth_account_signature(
    domain: MarketDomain, primary: str, data: dict[str, Any], key: LocalAccount
) -> bytes:
    """A signature made by eth-account's general EIP-712 encoder (not the project's fast path)."""
    types = {"Order": ORDER_TYPE, "Reading": READING_TYPE}
    message = encode_typed_data(domain.as_dict(), {primary: types[primary]}, data)
    return bytes(Account.sign_message(message, key.key).signature)


def signed_order(order: OrderMessage, key: LocalAccount) -> SignedOrder:
    data = {
        "meterId": order.meter_id,
        "interval": order.interval,
        "side": int(order.side),
        "quantityWh": order.quantity_wh,
        "limitPrice": order.limit_price,
        "nonce": order.nonce,
    }
    return SignedOrder(order, eth_account_signature(DOMAIN, "Order", data, key))


def signed_reading(reading: ReadingMessage, key: LocalAccount) -> SignedReading:
    data = {"meterId": reading.meter_id, "interval": reading.interval} | dict(
        zip(
            ("startImportWh", "startExportWh", "endImportWh", "endExportWh"),
            reading.registers,
            strict=True,
        )
    )
    return SignedReading(reading, eth_account_signature(DOMAIN, "Reading", data, key))


def malleable(signature: bytes) -> bytes:
    """The same signature with s replaced by n - s and v flipped: valid for ecrecover, refused
    by OpenZeppelin's ECDSA (EIP-2), which accepts only the low-s form."""
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signature[64]])


orders_st = st.lists(
    st.tuples(uint64, st.sampled_from(list(OrderSide)), intervals, uint64, st.integers(0, 3)),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(orders=orders_st, interval=intervals)
def test_orders_decode_and_recover_their_signer_as_python_packs_and_eth_account_signs(
    harness: Any, orders: list[tuple[int, OrderSide, int, int, int]], interval: int
) -> None:
    signed = [
        signed_order(
            OrderMessage(meter_id_to_bytes32(f"m{k}"), interval, side, quantity, limit, nonce),
            board_key(k),
        )
        for nonce, side, quantity, limit, k in orders
    ]
    packed = b"".join(pack_order(order) for order in signed)
    separator = DOMAIN.separator()
    for index, order in enumerate(signed):
        message = order.order
        meter_id, fields = harness.functions.order(packed, index).call()
        assert meter_id == message.meter_id
        assert fields == [
            message.nonce,
            int(message.side),
            message.quantity_wh,
            message.limit_price,
        ]
        r, s, v = harness.functions.orderSignature(packed, index).call()
        assert r + s + bytes([v]) == order.signature
        terms = [int(message.side), message.quantity_wh, message.limit_price, message.nonce]
        digest = harness.functions.orderDigest(separator, meter_id, interval, terms).call()
        assert digest == order_digest(DOMAIN, message)
        signer = harness.functions.orderSigner(separator, interval, packed, index).call()
        assert signer == board_key(orders[index][4]).address


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    trades=st.lists(
        st.tuples(
            st.integers(0, 2**16 - 1),
            st.integers(0, 2**16 - 1),
            st.integers(0, 2**32 - 1),
            uint64,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_trades_decode_as_python_packs_them(
    harness: Any, trades: list[tuple[int, int, int, int]]
) -> None:
    packed = b"".join(pack_trade(*trade) for trade in trades)
    for index, (buy, sell, quantity_wh, price) in enumerate(trades):
        decoded = harness.functions.trade(packed, index).call()
        assert decoded == [buy, sell, quantity_wh, price, quantity_wh, price]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(registers=st.tuples(uint64, uint64, uint64, uint64), interval=intervals, k=st.integers(0, 3))
def test_a_reading_recovers_its_signer_as_eth_account_signs(
    harness: Any, registers: tuple[int, int, int, int], interval: int, k: int
) -> None:
    meter_id = meter_id_to_bytes32("reader")
    reading = signed_reading(ReadingMessage(meter_id, interval, *registers), board_key(k))
    assert reading.signature == sign_reading(DOMAIN, reading.reading, board_key(k)).signature
    packed = pack_delivery([], [reading])
    _, _, reading_at, _ = harness.functions.entry(packed, 0).call()
    separator = DOMAIN.separator()
    digest = harness.functions.readingDigest(
        separator, meter_id, interval, reading.reading.packed_registers
    ).call()
    assert digest == reading_digest(DOMAIN, reading.reading)
    signer = harness.functions.readingSigner(
        separator, meter_id, interval, packed, reading_at
    ).call()
    assert signer == board_key(k).address


def test_a_signature_for_other_terms_or_another_market_recovers_another_address(
    harness: Any,
) -> None:
    key = board_key(0)
    order = signed_order(OrderMessage(meter_id_to_bytes32("m"), 900, OrderSide.SELL, 5, 7, 1), key)
    packed = pack_order(order)
    separator = DOMAIN.separator()
    assert harness.functions.orderSigner(separator, 900, packed, 0).call() == key.address
    # Another interval, another market (domain) or another quantity: the same signature
    # recovers some other address, never the meter's.
    other_market = MarketDomain(31337, "0x" + "cd" * 20).separator()
    assert harness.functions.orderSigner(separator, 1800, packed, 0).call() != key.address
    assert harness.functions.orderSigner(other_market, 900, packed, 0).call() != key.address
    tampered = packed[:41] + (6).to_bytes(8, "big") + packed[49:]  # quantityWh 5 -> 6
    assert harness.functions.orderSigner(separator, 900, tampered, 0).call() != key.address

    reading = signed_reading(ReadingMessage(meter_id_to_bytes32("m"), 900, 1, 2, 3, 4), key)
    entries = pack_delivery([], [reading])
    signer = harness.functions.readingSigner(separator, reading.reading.meter_id, 900, entries, 33)
    assert signer.call() == key.address
    other = harness.functions.readingSigner(separator, meter_id_to_bytes32("n"), 900, entries, 33)
    assert other.call() != key.address


def test_an_invalid_or_malleable_signature_recovers_the_zero_address(harness: Any) -> None:
    zero = "0x" + "00" * 20
    key = board_key(1)
    order = signed_order(OrderMessage(meter_id_to_bytes32("m"), 900, OrderSide.BUY, 5, 7, 1), key)
    digest = order_digest(DOMAIN, order.order)
    assert harness.functions.recover(digest, order.signature).call() == key.address
    twin = malleable(order.signature)
    assert Account._recover_hash(digest, signature=twin) == key.address  # ecrecover accepts it
    assert harness.functions.recover(digest, twin).call() == zero
    assert harness.functions.recover(digest, order.signature[:64]).call() == zero  # 64 bytes
    assert harness.functions.recover(digest, order.signature[:64] + b"\x1d").call() == zero  # v
    assert harness.functions.recover(digest, bytes(65)).call() == zero
    packed = pack_order(SignedOrder(order.order, twin))
    assert harness.functions.orderSigner(DOMAIN.separator(), 900, packed, 0).call() == zero
