"""`meterchain market clear`, run as a user runs it: a process reading a book on stdin."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MARKET_CLEAR = [str(Path(sys.executable).parent / "meterchain"), "market", "clear"]


def order(
    order_id: str, side: str, quantity_wh: int, limit_price: float, at: str = "12:00:00"
) -> dict[str, Any]:
    return {
        "id": order_id,
        "meter_id": f"m-{order_id}",
        "side": side,
        "quantity_wh": quantity_wh,
        "limit_price": limit_price,
        "submitted_at": f"2026-11-24T{at}Z",
    }


BOOK: dict[str, Any] = {
    "retail_price": 0.95,
    "feed_in_price": 0.25,
    "orders": [
        order("b1", "buy", 1500, 0.85),
        order("b2", "buy", 1000, 0.70, at="12:01:00"),
        order("s3", "sell", 1200, 0.39),
        order("s4", "sell", 2000, 0.54),
    ],
}


def run(book: object, *options: str) -> subprocess.CompletedProcess[str]:
    text = book if isinstance(book, str) else json.dumps(book)
    return subprocess.run(
        [*MARKET_CLEAR, *options], input=text, capture_output=True, text=True, timeout=60
    )


def test_clear_prints_the_result_as_json() -> None:
    done = run(BOOK, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "mechanism": "pay-as-clear",
        "price": 0.62,
        "trades": [
            {"buy": "b1", "sell": "s3", "quantity_wh": 1200, "price": 0.62},
            {"buy": "b1", "sell": "s4", "quantity_wh": 300, "price": 0.62},
            {"buy": "b2", "sell": "s4", "quantity_wh": 1000, "price": 0.62},
        ],
    }


def test_pay_as_bid_prices_each_pair() -> None:
    done = run(BOOK, "--mechanism", "pay-as-bid", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "mechanism": "pay-as-bid",
        "price": 0.629,  # (1200·0.62 + 300·0.695 + 1000·0.62) / 2500
        "trades": [
            {"buy": "b1", "sell": "s3", "quantity_wh": 1200, "price": 0.62},
            {"buy": "b1", "sell": "s4", "quantity_wh": 300, "price": 0.695},
            {"buy": "b2", "sell": "s4", "quantity_wh": 1000, "price": 0.62},
        ],
    }


def test_a_book_that_does_not_cross_prints_a_null_price() -> None:
    book = {**BOOK, "orders": [order("b1", "buy", 100, 0.3), order("s1", "sell", 100, 0.4)]}
    done = run(book, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"mechanism": "pay-as-clear", "price": None, "trades": []}


def test_without_json_the_trades_are_printed_as_a_table() -> None:
    done = run(BOOK)
    assert done.returncode == 0, done.stderr
    assert "pay-as-clear: price 0.62 per kWh, 2,500 Wh in 3 trades" in done.stdout
    assert "b2" in done.stdout and "s4" in done.stdout and "1,000" in done.stdout


def without(index: int, field: str) -> dict[str, Any]:
    book = copy.deepcopy(BOOK)
    del book["orders"][index][field]
    return book


def changed(index: int, field: str, value: object) -> dict[str, Any]:
    book = copy.deepcopy(BOOK)
    book["orders"][index][field] = value
    return book


@pytest.mark.parametrize(
    ("book", "complaint"),
    [
        (without(1, "limit_price"), "order 'b2' (orders[1]) field 'limit_price': missing"),
        (changed(2, "quantity_wh", -1200), "order 's3' (orders[2]) field 'quantity_wh'"),
        (changed(3, "side", "offer"), "order 's4' (orders[3]) field 'side': must be 'buy' or"),
        (
            changed(0, "submitted_at", "24/11/2026 12:00"),
            "order 'b1' (orders[0]) field 'submitted_at'",
        ),
        (changed(3, "id", "b1"), "order 'b1' (orders[3]) field 'id': duplicate of orders[0]"),
    ],
    ids=["missing field", "negative quantity", "unknown side", "bad timestamp", "duplicate id"],
)
def test_a_malformed_book_is_refused_naming_the_order_and_field(
    book: dict[str, Any], complaint: str
) -> None:
    done = run(book, "--json")
    assert done.returncode != 0
    assert complaint in done.stderr.replace("\n", "")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_text_that_is_not_json_is_refused_without_a_traceback() -> None:
    done = run("retail_price = 0.95", "--json")
    assert done.returncode != 0
    assert "not valid JSON" in done.stderr and "Traceback" not in done.stderr
