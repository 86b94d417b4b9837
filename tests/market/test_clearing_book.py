"""Order books: reading them from JSON, and refusing the ones that cannot be cleared."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from meterchain.market import BookError, OrderBook, parse_book
from meterchain.model import Order, Side

OPEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BOOK: dict[str, Any] = {
    "retail_price": 0.95,
    "feed_in_price": 0.25,
    "orders": [
        {
            "id": "b1",
            "meter_id": "m1",
            "side": "buy",
            "quantity_wh": 1500,
            "limit_price": 0.85,
            "submitted_at": "2026-11-24T12:00:00Z",
        },
        {
            "id": "s3",
            "meter_id": "m3",
            "side": "sell",
            "quantity_wh": 1200,
            "limit_price": 0.39,
            "submitted_at": "2026-11-24T12:00:05+00:00",
        },
    ],
}


def _literal(text: str) -> str:
    """pytest.raises(match=…) takes a regular expression; these messages are literal text."""
    return re.escape(text)


def with_change(index: int, field: str, value: object) -> str:
    """The book as JSON with one order field set (or removed, when value is ...)."""
    book = copy.deepcopy(BOOK)
    if value is ...:
        del book["orders"][index][field]
    else:
        book["orders"][index][field] = value
    return json.dumps(book)


def test_a_book_is_read_into_orders() -> None:
    book = parse_book(json.dumps(BOOK))
    assert (book.retail_price_per_kwh, book.feed_in_price_per_kwh) == (0.95, 0.25)
    assert book.orders == (
        Order("b1", "m1", Side.BUY, 1500, 0.85, OPEN),
        Order("s3", "m3", Side.SELL, 1200, 0.39, OPEN + timedelta(seconds=5)),
    )


def test_a_book_survives_a_round_trip_through_json() -> None:
    book = parse_book(json.dumps(BOOK))
    assert parse_book(json.dumps(book.as_json())) == book


def test_times_in_other_offsets_are_the_same_instant() -> None:
    book = parse_book(with_change(0, "submitted_at", "2026-11-24T09:00:00-03:00"))
    assert book.orders[0].submitted_at == OPEN and book.orders[0].submitted_at.tzinfo is UTC
    assert book.as_json()["orders"][0]["submitted_at"] == "2026-11-24T12:00:00Z"  # type: ignore[index]


def test_a_whole_number_written_as_a_float_is_a_quantity() -> None:
    assert parse_book(with_change(0, "quantity_wh", 1500.0)).orders[0].quantity_wh == 1500


@pytest.mark.parametrize(
    ("index", "field", "value", "complaint"),
    [
        (0, "quantity_wh", ..., "order 'b1' (orders[0]) field 'quantity_wh': missing"),
        (1, "limit_price", ..., "order 's3' (orders[1]) field 'limit_price': missing"),
        (0, "id", ..., "order orders[0] field 'id': missing"),
        (0, "quantity_wh", -5, "order 'b1' (orders[0]) field 'quantity_wh': must be a whole"),
        (0, "quantity_wh", 0, "'b1' (orders[0]) field 'quantity_wh': must be a whole"),
        (0, "quantity_wh", 10.5, "'b1' (orders[0]) field 'quantity_wh': must be a whole"),
        (0, "quantity_wh", "1500", "'b1' (orders[0]) field 'quantity_wh': must be a whole"),
        (0, "quantity_wh", True, "'b1' (orders[0]) field 'quantity_wh': must be a whole"),
        (0, "quantity_wh", 10**13, "'b1' (orders[0]) field 'quantity_wh': must be a whole"),
        (1, "side", "bid", "order 's3' (orders[1]) field 'side': must be 'buy' or 'sell'"),
        (1, "side", "SELL", "order 's3' (orders[1]) field 'side': must be 'buy' or 'sell'"),
        (0, "submitted_at", "yesterday", "'b1' (orders[0]) field 'submitted_at': 'yesterday'"),
        (0, "submitted_at", "2026-11-24T12:00:00", "field 'submitted_at': needs a time with a"),
        (0, "submitted_at", 1764000000, "field 'submitted_at': must be an ISO 8601 string"),
        (0, "limit_price", "0.85", "'b1' (orders[0]) field 'limit_price': must be a number"),
        (0, "limit_price", None, "'b1' (orders[0]) field 'limit_price': must be a number"),
        (0, "limit_price", 1e9, "field 'limit_price': 1000000000.0 is beyond"),
        (0, "meter_id", "", "'b1' (orders[0]) field 'meter_id': must be a non-empty string"),
        (0, "id", 7, "order orders[0] field 'id': must be a non-empty string"),
        (0, "colour", "green", "order 'b1' (orders[0]) field 'colour': unknown field"),
    ],
)
def test_a_malformed_order_is_named_with_its_field(
    index: int, field: str, value: object, complaint: str
) -> None:
    with pytest.raises(BookError, match=_literal(complaint)) as caught:
        parse_book(with_change(index, field, value))
    assert caught.value.index == index and caught.value.field == field


def test_a_limit_that_is_not_a_number_is_refused() -> None:
    text = with_change(0, "limit_price", 0.5).replace("0.5", "NaN")
    complaint = "'b1' (orders[0]) field 'limit_price': must be a finite"
    with pytest.raises(BookError, match=_literal(complaint)):
        parse_book(text)


def test_a_duplicate_id_names_both_orders() -> None:
    complaint = "order 'b1' (orders[1]) field 'id': duplicate of orders[0]"
    with pytest.raises(BookError, match=_literal(complaint)):
        parse_book(with_change(1, "id", "b1"))


def test_a_meter_that_buys_and_sells_in_one_interval_is_refused() -> None:
    complaint = (
        "order 's3' (orders[1]) field 'side': meter 'm1' already has a buy order (orders[0])"
    )
    with pytest.raises(BookError, match=_literal(complaint)):
        parse_book(with_change(1, "meter_id", "m1"))


def test_one_meter_may_send_several_orders_on_one_side() -> None:
    book = copy.deepcopy(BOOK)
    book["orders"].append({**book["orders"][0], "id": "b2", "limit_price": 0.5})
    assert len(parse_book(json.dumps(book)).orders) == 3


TARIFFS = '"retail_price": 0.95, "feed_in_price": 0.25'


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{", "book: not valid JSON"),
        ("[]", "book: the book must be a JSON object"),
        ('{"feed_in_price": 0.25, "orders": []}', "book field 'retail_price': missing"),
        ('{"retail_price": 0.95, "orders": []}', "book field 'feed_in_price': missing"),
        ("{" + TARIFFS + "}", "book field 'orders': missing"),
        ("{" + TARIFFS + ', "orders": {}}', "book field 'orders': must be a list"),
        ("{" + TARIFFS + ', "orders": [], "x": 1}', "book field 'x': unknown field"),
        ("{" + TARIFFS + ', "orders": [1]}', "order orders[0]: must be a JSON object"),
        (
            '{"retail_price": "0.95", "feed_in_price": 0.25, "orders": []}',
            "book field 'retail_price': must be a number",
        ),
        (
            '{"retail_price": 0.2, "feed_in_price": 0.25, "orders": []}',
            "book field 'feed_in_price': 0.25 is above the retail price 0.2",
        ),
    ],
)
def test_a_malformed_book_says_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(BookError, match=_literal(complaint)):
        parse_book(text)


def test_orders_built_in_code_are_checked_too() -> None:
    naive = Order("b1", "m1", Side.BUY, 100, 0.5, datetime(2026, 11, 24, 12, 0))
    with pytest.raises(BookError, match=_literal("'b1' (orders[0]) field 'submitted_at'")):
        OrderBook(0.95, 0.25, (naive,))
    empty = Order("b1", "m1", Side.BUY, 0, 0.5, OPEN)
    with pytest.raises(BookError, match=_literal("'b1' (orders[0]) field 'quantity_wh'")):
        OrderBook(0.95, 0.25, (empty,))
    infinite = Order("b1", "m1", Side.BUY, 1, float("inf"), OPEN)
    with pytest.raises(BookError, match=_literal("'b1' (orders[0]) field 'limit_price'")):
        OrderBook(0.95, 0.25, (infinite,))


def test_a_book_built_from_a_list_keeps_a_tuple() -> None:
    order = Order("b1", "m1", Side.BUY, 100, 0.5, OPEN.astimezone(timezone(timedelta(hours=-3))))
    assert OrderBook(0.95, 0.25, [order]).orders == (order,)  # type: ignore[arg-type]
