"""The packed calldata, positions and settlement arithmetic on the Python side (no chain)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from contract_suite import board_key
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.chain.batch import (
    ORDER_BYTES,
    TRADE_BYTES,
    BatchError,
    BatchTrade,
    Metered,
    Position,
    compute_positions,
    decode_positions,
    pack_batch,
    pack_delivery,
    pack_trade,
    settle_meter,
)
from meterchain.chain.signing import (
    MarketDomain,
    OrderMessage,
    OrderSide,
    ReadingMessage,
    meter_id_to_bytes32,
    sign_order,
    sign_reading,
)
from meterchain.chain.units import UnitError, from_units, price_to_units, to_units

DOMAIN = MarketDomain(chain_id=31337, market_address="0x" + "ab" * 20)
A, B, C = (meter_id_to_bytes32(name) for name in ("a", "b", "c"))


def order(meter: bytes, side: OrderSide, quantity: int, limit: int, nonce: int = 1):  # type: ignore[no-untyped-def]
    return sign_order(DOMAIN, OrderMessage(meter, 1, side, quantity, limit, nonce), board_key(0))


def test_batch_is_sorted_by_meter_and_nonce_and_trades_refer_by_index() -> None:
    sell_b = order(B, OrderSide.SELL, 500, 40)
    buy_a2 = order(A, OrderSide.BUY, 500, 70, nonce=2)
    buy_a1 = order(A, OrderSide.BUY, 500, 70, nonce=1)
    packed = pack_batch(
        [sell_b, buy_a2, buy_a1], [BatchTrade(buy_a2.order.key, sell_b.order.key, 300, 55)]
    )
    assert len(packed.orders) == 3 * ORDER_BYTES
    keys = [(packed.orders[i : i + 32], packed.orders[i + 32 : i + 40]) for i in (0, 122, 244)]
    assert [k[0] for k in keys] == [A, A, B]
    assert [int.from_bytes(k[1], "big") for k in keys] == [1, 2, 1]
    assert packed.trades == pack_trade(1, 2, 300, 55)
    assert len(packed.trades) == TRADE_BYTES


def test_trade_referring_to_a_missing_order_cannot_be_packed() -> None:
    buy = order(A, OrderSide.BUY, 500, 70)
    with pytest.raises(BatchError, match="not in the batch"):
        pack_batch([buy], [BatchTrade(buy.order.key, (B, 1), 100, 55)])


def test_positions_net_each_meters_trades_exactly() -> None:
    trades = [
        BatchTrade((A, 1), (B, 1), 1001, 55),
        BatchTrade((A, 1), (C, 1), 1001, 55),
        BatchTrade((C, 2), (B, 1), 10, 60),
    ]
    positions = {p.meter_id: p for p in compute_positions(trades)}
    assert positions[A] == Position(A, 2002, 110_110, 0, 0)
    assert positions[A].locked(80) == 111
    # B sold 1,011 Wh for 55.655 cents: at retail it would owe 80.88; 81 - 55 = 26 locked.
    assert positions[B].locked(80) == 26
    assert positions[B] == Position(B, 0, 0, 1011, 55_055 + 600)
    assert positions[C] == Position(C, 10, 600, 1001, 55_055)


def test_packed_positions_round_trip() -> None:
    positions = compute_positions([BatchTrade((A, 1), (B, 1), 1000, 55)])
    blob = b"".join(
        p.meter_id
        + p.bought_wh.to_bytes(8, "big")
        + p.cost_milli.to_bytes(16, "big")
        + p.sold_wh.to_bytes(8, "big")
        + p.value_milli.to_bytes(16, "big")
        for p in positions
    )
    assert decode_positions(blob) == positions


def test_delivery_entries_are_sorted_and_one_per_meter() -> None:
    reading = sign_reading(DOMAIN, ReadingMessage(A, 1, 0, 0, 10, 0), board_key(0))
    entries = pack_delivery([Position(B, sold_wh=5, value_milli=5)], [reading])
    assert entries[:33] == A + bytes([2])  # A has a reading only
    assert entries[33 + 16 : 33 + 24] == (10).to_bytes(8, "big")  # its end import register
    assert entries[33 + 97 : 33 + 97 + 33] == B + bytes([1])  # B a position only
    with pytest.raises(BatchError, match="two readings"):
        pack_delivery([], [reading, reading])


@settings(max_examples=300, deadline=None)
@given(
    bought=st.integers(0, 10_000),
    sold=st.integers(0, 10_000),
    price=st.integers(30, 80),
    imported=st.integers(0, 20_000),
    exported=st.integers(0, 20_000),
)
def test_deviations_are_settled_at_the_tariffs_to_within_a_unit(
    bought: int, sold: int, price: int, imported: int, exported: int
) -> None:
    position = Position(A, bought, bought * price, sold, sold * price)
    result = settle_meter(position, Metered(imported, exported), 80, 30)
    owed = Decimal(bought * price + max(0, imported - bought) * 80 + max(0, sold - exported) * 80)
    earned = Decimal(sold * price + max(0, bought - imported) * 30 + max(0, exported - sold) * 30)
    assert owed / 1000 <= result.debit < owed / 1000 + 1
    assert earned / 1000 - 1 < result.credits - result.locked <= earned / 1000
    # What the batch locked and the sale pays always covers what the trades can cost.
    trading_debit = Decimal(bought * price + sold * 80) / 1000
    assert result.locked + (sold * price) // 1000 >= trading_debit


def test_currency_converts_to_cents_half_up() -> None:
    assert to_units("0.755") == 76
    assert to_units(Decimal("12.344")) == 1234
    assert price_to_units(0.8) == 80
    assert from_units(1235) == Decimal("12.35")
    with pytest.raises(UnitError, match="negative"):
        to_units(-1)
    with pytest.raises(UnitError, match="finite"):
        to_units(float("nan"))
