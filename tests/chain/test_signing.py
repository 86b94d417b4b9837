"""EIP-712 orders and readings: Python's digests are byte for byte the contract's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from contract_suite import Suite, board_key, deploy_test_suite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3

from meterchain.chain.signing import (
    UINT64_MAX,
    MarketDomain,
    OrderMessage,
    OrderSide,
    ReadingMessage,
    SigningError,
    bytes32_to_meter_id,
    interval_number,
    meter_id_to_bytes32,
    order_digest,
    reading_digest,
    recover_order_signer,
    recover_reading_signer,
    sign_order,
    sign_reading,
)

uint64 = st.integers(min_value=0, max_value=UINT64_MAX)
positive64 = st.integers(min_value=1, max_value=UINT64_MAX)
meter_ids = st.binary(min_size=32, max_size=32).filter(lambda b: b != bytes(32))
orders = st.builds(
    OrderMessage, meter_ids, positive64, st.sampled_from(OrderSide), positive64, uint64, uint64
)
readings = st.builds(ReadingMessage, meter_ids, positive64, uint64, uint64, uint64, uint64)
DOMAIN = MarketDomain(chain_id=31337, market_address="0x" + "ab" * 20)


@pytest.fixture(scope="module")
def suite(w3: Web3) -> Suite:
    return deploy_test_suite(w3, fund=False)


def test_domain_separator_equals_the_contracts(suite: Suite) -> None:
    assert suite.market().domain_separator() == suite.domain.separator()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=orders)
def test_order_digest_equals_the_contracts(suite: Suite, order: OrderMessage) -> None:
    signed = sign_order(suite.domain, order, board_key(1))
    assert suite.market().hash_order(signed) == order_digest(suite.domain, order)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(reading=readings)
def test_reading_digest_equals_the_contracts(suite: Suite, reading: ReadingMessage) -> None:
    signed = sign_reading(suite.domain, reading, board_key(1))
    assert suite.market().hash_reading(signed) == reading_digest(suite.domain, reading)


@settings(max_examples=25, deadline=None)
@given(order=orders, reading=readings)
def test_signatures_recover_to_the_board_key(order: OrderMessage, reading: ReadingMessage) -> None:
    key = board_key(2)
    assert recover_order_signer(DOMAIN, sign_order(DOMAIN, order, key)) == key.address
    assert recover_reading_signer(DOMAIN, sign_reading(DOMAIN, reading, key.key)) == key.address


def test_signature_is_bound_to_the_interval_and_the_market() -> None:
    meter = meter_id_to_bytes32("m-1")
    order = OrderMessage(meter, 1_795_000_500, OrderSide.SELL, 1000, 40, 7)
    later = OrderMessage(meter, 1_795_001_400, OrderSide.SELL, 1000, 40, 7)
    other_market = MarketDomain(chain_id=31337, market_address="0x" + "cd" * 20)
    digests = {
        order_digest(DOMAIN, order),
        order_digest(DOMAIN, later),
        order_digest(other_market, order),
    }
    assert len(digests) == 3


def test_meter_ids_are_readable_zero_padded_bytes32() -> None:
    raw = meter_id_to_bytes32("ABNT-000123")
    assert raw == b"ABNT-000123" + bytes(21)
    assert bytes32_to_meter_id(raw) == "ABNT-000123"


@pytest.mark.parametrize("bad", ["", "x" * 33, "nul\x00inside"])
def test_meter_ids_that_cannot_go_on_chain_are_refused(bad: str) -> None:
    with pytest.raises(SigningError, match="meter id"):
        meter_id_to_bytes32(bad)


def test_interval_number_is_the_start_in_unix_seconds() -> None:
    start = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    assert interval_number(start) == int(start.timestamp())
    with pytest.raises(SigningError, match="time zone"):
        interval_number(datetime(2026, 11, 24, 15, 0))
    with pytest.raises(SigningError, match="whole second"):
        interval_number(start + timedelta(milliseconds=5))


def test_out_of_range_fields_are_refused_before_signing() -> None:
    meter = meter_id_to_bytes32("m-1")
    with pytest.raises(SigningError, match="quantity_wh"):
        OrderMessage(meter, 1, OrderSide.BUY, 2**64, 1, 1)
    with pytest.raises(SigningError, match="0 Wh"):
        OrderMessage(meter, 1, OrderSide.BUY, 0, 1, 1)
    with pytest.raises(SigningError, match="interval 0"):
        ReadingMessage(meter, 0, 1, 1, 1, 1)
    with pytest.raises(SigningError, match="start_import_wh"):
        ReadingMessage(meter, 1, -1, 1, 1, 1)
    with pytest.raises(SigningError, match="end_export_wh"):
        ReadingMessage(meter, 1, 1, 1, 1, 2**64)
    with pytest.raises(SigningError, match="bytes32"):
        ReadingMessage(b"short", 1, 1, 1, 1, 1)
