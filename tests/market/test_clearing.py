"""Clearing, case by case: the price rule, partial fills, tie-breaks and the tariff band."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterchain.market import ClearingResult, Mechanism, OrderBook, Trades, clear
from meterchain.model import Order, Side, Trade

OPEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RETAIL = 0.95
FEED_IN = 0.25


def buy(
    order_id: str, quantity_wh: int, limit_price: float, after_s: int = 0, meter: str = ""
) -> Order:
    return Order(
        order_id,
        meter or f"m-{order_id}",
        Side.BUY,
        quantity_wh,
        limit_price,
        OPEN + timedelta(seconds=after_s),
    )


def sell(
    order_id: str, quantity_wh: int, limit_price: float, after_s: int = 0, meter: str = ""
) -> Order:
    return Order(
        order_id,
        meter or f"m-{order_id}",
        Side.SELL,
        quantity_wh,
        limit_price,
        OPEN + timedelta(seconds=after_s),
    )


def cleared(
    *orders: Order,
    mechanism: Mechanism = Mechanism.PAY_AS_CLEAR,
    retail: float = RETAIL,
    feed_in: float = FEED_IN,
) -> ClearingResult:
    return clear(OrderBook(retail, feed_in, orders), mechanism)


def fills(result: ClearingResult) -> list[tuple[str, str, int]]:
    return [(t.buy_order_id, t.sell_order_id, t.quantity_wh) for t in result.trades]


def test_an_empty_book_clears_nothing() -> None:
    result = cleared()
    assert result.price is None and list(result.trades) == []
    assert result.as_json() == {"mechanism": "pay-as-clear", "price": None, "trades": []}


def test_books_with_one_side_only_clear_nothing() -> None:
    assert cleared(buy("b1", 100, 0.9)).price is None
    assert cleared(sell("s1", 100, 0.3)).price is None


def test_no_overlap_clears_nothing_and_the_price_is_null() -> None:
    result = cleared(buy("b1", 1000, 0.40), sell("s1", 1000, 0.41))
    assert result.price is None and len(result.trades) == 0


def test_one_buyer_and_one_seller_trade_at_the_midpoint_of_their_limits() -> None:
    result = cleared(buy("b1", 1500, 0.85), sell("s3", 1200, 0.39))
    assert result.price == 0.62
    assert list(result.trades) == [Trade("b1", "s3", 1200, 0.62)]


def test_equal_limits_trade_at_that_limit() -> None:
    result = cleared(buy("b1", 500, 0.5), sell("s1", 500, 0.5))
    assert result.price == 0.5 and fills(result) == [("b1", "s1", 500)]


def test_uniform_price_is_the_midpoint_of_the_marginal_pair() -> None:
    # Bids 0.90, 0.80, 0.50; asks 0.30, 0.60, 0.70. 0.80 ≥ 0.60 crosses; 0.50 < 0.70 does not.
    result = cleared(
        buy("b1", 100, 0.90),
        buy("b2", 100, 0.80),
        buy("b3", 100, 0.50),
        sell("s1", 100, 0.30),
        sell("s2", 100, 0.60),
        sell("s3", 100, 0.70),
    )
    assert fills(result) == [("b1", "s1", 100), ("b2", "s2", 100)]
    assert result.price == 0.70  # midpoint of b2 (0.80) and s2 (0.60)
    assert {t.price for t in result.trades} == {0.70}


def test_the_marginal_order_is_filled_in_part() -> None:
    result = cleared(buy("b1", 1000, 0.9), sell("s1", 300, 0.3), sell("s2", 400, 0.4))
    assert fills(result) == [("b1", "s1", 300), ("b1", "s2", 400)]
    assert result.price == 0.65


def test_one_seller_fills_buyers_in_price_order() -> None:
    result = cleared(
        buy("cheap", 500, 0.5), buy("dear", 500, 0.9), buy("mid", 500, 0.7), sell("s", 1200, 0.3)
    )
    assert fills(result) == [("dear", "s", 500), ("mid", "s", 500), ("cheap", "s", 200)]


def test_price_priority_beats_time_priority() -> None:
    result = cleared(
        buy("early", 100, 0.6, after_s=0), buy("late", 100, 0.7, after_s=60), sell("s", 100, 0.3)
    )
    assert fills(result) == [("late", "s", 100)]


def test_one_micro_unit_of_price_beats_any_head_start_in_time() -> None:
    result = cleared(
        buy("early", 100, 0.500000, after_s=0),
        *(sell(f"s{k}", 20, 0.3, after_s=k) for k in range(5)),
        buy("late", 100, 0.500001, after_s=600),
    )
    assert {t.buy_order_id for t in result.trades} == {"late"}


def test_at_equal_prices_the_earlier_order_is_filled_first() -> None:
    result = cleared(
        buy("late", 400, 0.7, after_s=60),
        buy("early", 400, 0.7, after_s=0),
        sell("s", 500, 0.3),
    )
    assert fills(result) == [("early", "s", 400), ("late", "s", 100)]


def test_at_equal_prices_and_times_the_smaller_id_is_filled_first() -> None:
    result = cleared(buy("b2", 400, 0.7), buy("b10", 400, 0.7), sell("s", 500, 0.3))
    # Ids compare as strings: "b10" < "b2".
    assert fills(result) == [("b10", "s", 400), ("b2", "s", 100)]


def test_sellers_tie_break_the_same_way() -> None:
    result = cleared(
        sell("s-late", 400, 0.3, after_s=5),
        sell("s-b", 400, 0.3),
        sell("s-a", 400, 0.3),
        buy("b", 1000, 0.9),
    )
    assert fills(result) == [("b", "s-a", 400), ("b", "s-b", 400), ("b", "s-late", 200)]


def test_a_buy_limit_above_retail_counts_as_retail() -> None:
    result = cleared(buy("b1", 100, 5.00), sell("s1", 100, 0.85))
    assert result.price == 0.90  # midpoint of 0.95 (retail) and 0.85


def test_bidding_above_retail_buys_no_priority() -> None:
    result = cleared(
        buy("greedy", 100, 9.99, after_s=30), buy("honest", 100, 0.95), sell("s", 100, 0.3)
    )
    assert fills(result) == [("honest", "s", 100)]


def test_a_sell_limit_below_feed_in_counts_as_feed_in() -> None:
    result = cleared(buy("b1", 100, 0.35), sell("s1", 100, -1.0))
    assert result.price == 0.30  # midpoint of 0.35 and 0.25 (feed-in)


def test_a_buyer_below_feed_in_never_trades() -> None:
    assert cleared(buy("b1", 100, 0.20), sell("s1", 100, 0.0)).price is None


def test_a_seller_above_retail_never_trades() -> None:
    assert cleared(buy("b1", 100, 2.0), sell("s1", 100, 1.0)).price is None


def test_every_price_lies_within_the_tariff_band() -> None:
    result = cleared(buy("b1", 100, 50.0), sell("s1", 100, -50.0))
    assert result.price == pytest.approx((RETAIL + FEED_IN) / 2)
    assert result.price is not None and FEED_IN <= result.price <= RETAIL


def test_negative_prices_clear_like_any_other() -> None:
    result = cleared(buy("b1", 100, -0.01), sell("s1", 100, -0.03), retail=0.5, feed_in=-0.1)
    assert result.price == -0.02 and fills(result) == [("b1", "s1", 100)]


def test_the_price_is_rounded_down_to_a_micro_unit() -> None:
    result = cleared(buy("b1", 100, 0.300001), sell("s1", 100, 0.3))
    assert result.price == 0.3


def test_limits_finer_than_a_micro_unit_are_rounded_to_the_safe_side() -> None:
    # Buy 0.1234569 counts as 0.123456, sell 0.1234561 as 0.123457: they no longer cross.
    assert cleared(buy("b1", 100, 0.1234569), sell("s1", 100, 0.1234561), feed_in=0).price is None
    result = cleared(buy("b1", 100, 0.1234569), sell("s1", 100, 0.1234551), feed_in=0)
    assert result.price == 0.123456
    assert 0.1234551 <= result.price <= 0.1234569


def test_pay_as_bid_prices_each_pair_at_the_midpoint_of_its_own_limits() -> None:
    result = cleared(
        buy("b1", 1500, 0.85),
        buy("b2", 1000, 1.20),
        sell("s3", 1200, 0.39),
        sell("s4", 2000, 0.10),
        mechanism=Mechanism.PAY_AS_BID,
    )
    assert list(result.trades) == [
        Trade("b2", "s4", 1000, 0.60),  # (0.95 retail + 0.25 feed-in) / 2
        Trade("b1", "s4", 1000, 0.55),
        Trade("b1", "s3", 500, 0.62),
    ]
    assert result.price == 0.584  # (1000·0.60 + 1000·0.55 + 500·0.62) / 2500


def test_pay_as_bid_matches_the_same_energy_as_pay_as_clear() -> None:
    orders = (buy("b1", 700, 0.9), buy("b2", 800, 0.6), sell("s1", 1000, 0.3), sell("s2", 600, 0.5))
    uniform = cleared(*orders)
    per_pair = cleared(*orders, mechanism=Mechanism.PAY_AS_BID)
    assert fills(uniform) == fills(per_pair)
    assert uniform.volume_wh == per_pair.volume_wh == 1500


def test_trades_read_like_a_sequence_of_trade_objects() -> None:
    result = cleared(buy("b1", 1000, 0.9), sell("s1", 300, 0.3), sell("s2", 400, 0.4))
    trades = result.trades
    assert isinstance(trades, Trades)
    assert len(trades) == 2 and trades[1] == Trade("b1", "s2", 400, 0.65)
    assert trades[-1] == trades[1] and list(trades[:1]) == [Trade("b1", "s1", 300, 0.65)]
    assert trades == (Trade("b1", "s1", 300, 0.65), Trade("b1", "s2", 400, 0.65))
    assert trades != (Trade("b1", "s1", 300, 0.65),)


def test_the_result_prints_as_the_json_the_cli_promises() -> None:
    result = cleared(buy("b1", 1500, 0.85), sell("s3", 1200, 0.39))
    assert result.as_json() == {
        "mechanism": "pay-as-clear",
        "price": 0.62,
        "trades": [{"buy": "b1", "sell": "s3", "quantity_wh": 1200, "price": 0.62}],
    }


def test_the_mechanism_may_be_named_by_its_string() -> None:
    orders = (buy("b1", 700, 0.9), sell("s1", 300, 0.3), sell("s2", 600, 0.5))
    book = OrderBook(RETAIL, FEED_IN, orders)
    assert clear(book, "pay-as-bid") == clear(book, Mechanism.PAY_AS_BID)  # type: ignore[arg-type]
    assert clear(book, "pay-as-bid") != clear(book)  # type: ignore[arg-type]
