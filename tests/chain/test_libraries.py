"""The contracts' internal libraries on their own, against their Python mirror.

Settlement (the money rules) and PackedCalldata (the calldata codec) are compiled into a small
harness contract that exposes them; hypothesis compares every result with
meterchain.chain.batch, the arithmetic the market agent, the simulation and the verifiers use.
"""

from __future__ import annotations

from typing import Any

import pytest
from contract_suite import board_key
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
    settle_meter,
)
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import MarketDomain, ReadingMessage, meter_id_to_bytes32, sign_reading

HARNESS = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

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
        HARNESS, "LibraryHarness", imports=("PackedCalldata.sol", "Settlement.sol")
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
