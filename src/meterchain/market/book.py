"""The order book of one market interval: validated orders, the grid tariffs, and the columns
clearing works on.

Validation happens once, when a book is built, so that clearing itself is a few vectorised
sorts and sums: a market agent builds the book while orders arrive and clears it at gate
closure. Every complaint names the order (its id and its index in the book) and the field.

Prices are floats in currency units per kWh at the edges and integer micro-units
(PRICE_SCALE per currency unit) inside, so that results are reproducible and map one-to-one
onto integer on-chain units. A buy limit is rounded down to the grid and a sell limit up, so
rounding never makes anyone trade beyond the limit they gave.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from meterchain.model import Order, Side

PRICE_DECIMALS = 6
"""Prices are resolved to 1e-6 currency units per kWh (one micro-unit)."""
PRICE_SCALE: int = 10**PRICE_DECIMALS
MAX_ABS_PRICE_PER_KWH = 1e6
"""Bigger limits are a typo, not a bid; the bound keeps micro-units exact in a float64."""
MAX_QUANTITY_WH = 10**12
"""1 TWh in one order is a typo; the bound keeps sums of millions of orders inside int64."""

ORDER_FIELDS = ("id", "meter_id", "side", "quantity_wh", "limit_price", "submitted_at")
BOOK_FIELDS = ("retail_price", "feed_in_price", "orders")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
ObjectArray = npt.NDArray[np.object_]


class MarketError(Exception):
    """Base of every error the market raises; its message is meant for the operator."""


class BookError(MarketError):
    """An order book that cannot be cleared, naming the order and the field that is wrong."""

    def __init__(
        self,
        problem: str,
        *,
        field: str | None = None,
        index: int | None = None,
        order_id: str | None = None,
    ) -> None:
        self.field = field
        self.index = index
        self.order_id = order_id
        if index is None:
            where = "book"
        elif order_id is None:
            where = f"order orders[{index}]"
        else:
            where = f"order {order_id!r} (orders[{index}])"
        if field is not None:
            where += f" field {field!r}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class SideColumns:
    """The orders of one side as parallel arrays, in the order they appear in the book."""

    ids: ObjectArray
    quantity_wh: IntArray
    limit_micro: IntArray
    """Limit in micro-units per kWh, rounded towards the safe side (buys down, sells up)."""
    tie_rank: IntArray
    """0..n-1: rank by (submitted_at, id) among this side's orders, the tie-break after price."""

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class OrderBook:
    """The orders of one interval and the grid tariffs that bound every price.

    Raises BookError when an order is malformed, two orders share an id, or one meter both
    buys and sells (it would trade with itself and could steer the price).
    """

    retail_price_per_kwh: float
    feed_in_price_per_kwh: float
    orders: tuple[Order, ...]
    buys: SideColumns = field(init=False, repr=False, compare=False)
    sells: SideColumns = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_tariffs(self.retail_price_per_kwh, self.feed_in_price_per_kwh)
        if not isinstance(self.orders, tuple):
            object.__setattr__(self, "orders", tuple(self.orders))
        buys, sells = _columns(self.orders)
        object.__setattr__(self, "buys", buys)
        object.__setattr__(self, "sells", sells)

    @property
    def retail_micro(self) -> int:
        """The retail tariff in micro-units, rounded down: no buyer pays more than it."""
        return int(micro_down(np.array([self.retail_price_per_kwh]))[0])

    @property
    def feed_in_micro(self) -> int:
        """The feed-in tariff in micro-units, rounded up: no seller gets less than it."""
        return int(micro_up(np.array([self.feed_in_price_per_kwh]))[0])

    def as_json(self) -> dict[str, object]:
        """The book as the JSON object `meterchain market clear` reads."""
        return {
            "retail_price": self.retail_price_per_kwh,
            "feed_in_price": self.feed_in_price_per_kwh,
            "orders": [order_as_json(order) for order in self.orders],
        }


def order_as_json(order: Order) -> dict[str, object]:
    """One order as a JSON object, timestamps in UTC with a `Z`."""
    return {
        "id": order.id,
        "meter_id": order.meter_id,
        "side": order.side.value,
        "quantity_wh": order.quantity_wh,
        "limit_price": order.limit_price,
        "submitted_at": order.submitted_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def micro_down(price_per_kwh: FloatArray) -> IntArray:
    """The largest micro-unit price not above each price (exact for prices on the grid)."""
    scaled = price_per_kwh * PRICE_SCALE
    nearest = np.rint(scaled)
    micro = np.where(nearest / PRICE_SCALE == price_per_kwh, nearest, np.floor(scaled))
    micro = np.where(micro / PRICE_SCALE > price_per_kwh, micro - 1, micro)
    result: IntArray = micro.astype(np.int64)
    return result


def micro_up(price_per_kwh: FloatArray) -> IntArray:
    """The smallest micro-unit price not below each price (exact for prices on the grid)."""
    return -micro_down(-price_per_kwh)


def from_micro(micro: int) -> float:
    """A micro-unit price as a float per kWh (the float nearest the decimal value)."""
    return micro / PRICE_SCALE


def parse_book(text: str) -> OrderBook:
    """Read a book from its JSON text (see `OrderBook.as_json`), naming what is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BookError(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    return book_from_json(document)


def book_from_json(document: object) -> OrderBook:
    """Build a book from already-decoded JSON, checking each field's type."""
    if not isinstance(document, dict):
        raise BookError(
            f"the book must be a JSON object with {', '.join(BOOK_FIELDS)}, "
            f"got {_json_type(document)}"
        )
    _no_unknown_fields(document, BOOK_FIELDS, index=None, order_id=None)
    retail = _book_price(document, "retail_price")
    feed_in = _book_price(document, "feed_in_price")
    if "orders" not in document:
        raise BookError("missing; give a list of orders (it may be empty)", field="orders")
    raw_orders = document["orders"]
    if not isinstance(raw_orders, list):
        raise BookError(f"must be a list of orders, got {_json_type(raw_orders)}", field="orders")
    orders = tuple(_order_from_json(index, raw) for index, raw in enumerate(raw_orders))
    return OrderBook(retail, feed_in, orders)


def _book_price(document: dict[str, Any], name: str) -> float:
    if name not in document:
        raise BookError("missing; give the tariff in currency units per kWh", field=name)
    value = document[name]
    if not _is_number(value):
        raise BookError(f"must be a number (per kWh), got {_json_type(value)}", field=name)
    return float(value)


def _order_from_json(index: int, raw: object) -> Order:
    if not isinstance(raw, dict):
        raise BookError(
            f"must be a JSON object with {', '.join(ORDER_FIELDS)}, got {_json_type(raw)}",
            index=index,
        )
    order_id = raw.get("id")
    named = order_id if isinstance(order_id, str) and order_id else None

    def fail(name: str, problem: str) -> BookError:
        return BookError(problem, field=name, index=index, order_id=named)

    for name in ORDER_FIELDS:
        if name not in raw:
            raise fail(name, "missing")
    _no_unknown_fields(raw, ORDER_FIELDS, index=index, order_id=named)
    for name in ("id", "meter_id"):
        if not isinstance(raw[name], str) or not raw[name]:
            raise fail(name, f"must be a non-empty string, got {raw[name]!r}")
    side = raw["side"]
    if side not in (Side.BUY.value, Side.SELL.value):
        raise fail("side", f"must be 'buy' or 'sell', got {side!r}")
    quantity = raw["quantity_wh"]
    if not _is_number(quantity) or (isinstance(quantity, float) and not quantity.is_integer()):
        raise fail("quantity_wh", f"must be a whole number of Wh, got {quantity!r}")
    limit = raw["limit_price"]
    if not _is_number(limit):
        raise fail("limit_price", f"must be a number (per kWh), got {limit!r}")
    submitted = raw["submitted_at"]
    if not isinstance(submitted, str):
        raise fail("submitted_at", f"must be an ISO 8601 string, got {submitted!r}")
    try:
        submitted_at = datetime.fromisoformat(submitted)
    except ValueError:
        raise fail(
            "submitted_at", f"{submitted!r} is not an ISO 8601 time, e.g. 2026-11-24T12:00:00Z"
        ) from None
    if submitted_at.utcoffset() is not None:
        submitted_at = submitted_at.astimezone(UTC)
    return Order(
        id=raw["id"],
        meter_id=raw["meter_id"],
        side=Side(side),
        quantity_wh=int(quantity),
        limit_price=float(limit),
        submitted_at=submitted_at,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), repr(value))


def _no_unknown_fields(
    raw: dict[str, Any], known: Sequence[str], *, index: int | None, order_id: str | None
) -> None:
    for name in raw:
        if name not in known:
            raise BookError(
                f"unknown field; the fields are {', '.join(known)}",
                field=name,
                index=index,
                order_id=order_id,
            )


def _check_tariffs(retail: float, feed_in: float) -> None:
    for name, value in (("retail_price", retail), ("feed_in_price", feed_in)):
        if not _is_number(value) or not math.isfinite(value):
            raise BookError(f"must be a finite number (per kWh), got {value!r}", field=name)
        if abs(value) > MAX_ABS_PRICE_PER_KWH:
            raise BookError(
                f"{value!r} is beyond ±{MAX_ABS_PRICE_PER_KWH:g} per kWh; is the unit right?",
                field=name,
            )
    if feed_in > retail:
        raise BookError(
            f"{feed_in!r} is above the retail price {retail!r}; the grid cannot buy energy "
            "for more than it sells it",
            field="feed_in_price",
        )


def _looks_valid(order: Order) -> bool:
    """The fast check of every field; `_check_order` then says what is wrong."""
    quantity, limit, submitted = order.quantity_wh, order.limit_price, order.submitted_at
    return (
        type(order) is Order
        and type(order.id) is str
        and order.id != ""
        and type(order.meter_id) is str
        and order.meter_id != ""
        and type(order.side) is Side
        and type(quantity) is int
        and 0 < quantity <= MAX_QUANTITY_WH
        and type(limit) in (float, int)
        and -MAX_ABS_PRICE_PER_KWH <= limit <= MAX_ABS_PRICE_PER_KWH  # False for NaN
        and isinstance(submitted, datetime)
        and submitted.utcoffset() is not None
    )


def _raise_duplicate_id(orders: tuple[Order, ...]) -> None:
    first_index: dict[str, int] = {}
    for index, order in enumerate(orders):
        earlier = first_index.setdefault(order.id, index)
        if earlier != index:
            raise BookError(
                f"duplicate of orders[{earlier}]; every order needs its own id",
                field="id",
                index=index,
                order_id=order.id,
            )


def _raise_meter_on_both_sides(orders: tuple[Order, ...]) -> None:
    meter_side: dict[str, tuple[Side, int]] = {}
    for index, order in enumerate(orders):
        side, other = meter_side.setdefault(order.meter_id, (order.side, index))
        if side is not order.side:
            raise BookError(
                f"meter {order.meter_id!r} already has a {side.value} order (orders[{other}]); "
                "a meter may only buy or only sell in one interval",
                field="side",
                index=index,
                order_id=order.id,
            )


def _check_order(index: int, order: Order) -> None:
    """Raise BookError for the first field of this order that cannot be right."""
    if not isinstance(order, Order):
        raise BookError(f"must be an Order, got {type(order).__name__}", index=index)
    named = order.id if isinstance(order.id, str) and order.id else None

    def fail(name: str, problem: str) -> BookError:
        return BookError(problem, field=name, index=index, order_id=named)

    for name in ("id", "meter_id"):
        value = getattr(order, name)
        if not isinstance(value, str) or not value:
            raise fail(name, f"must be a non-empty string, got {value!r}")
    if not isinstance(order.side, Side):
        raise fail("side", f"must be 'buy' or 'sell', got {order.side!r}")
    quantity = order.quantity_wh
    if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY_WH:
        raise fail(
            "quantity_wh",
            f"must be a whole number of Wh from 1 to {MAX_QUANTITY_WH:,}, got {quantity!r}",
        )
    limit = order.limit_price
    if not _is_number(limit) or not math.isfinite(limit):
        raise fail("limit_price", f"must be a finite number (per kWh), got {limit!r}")
    if abs(limit) > MAX_ABS_PRICE_PER_KWH:
        raise fail(
            "limit_price",
            f"{limit!r} is beyond ±{MAX_ABS_PRICE_PER_KWH:g} per kWh; is the unit right?",
        )
    submitted = order.submitted_at
    if not isinstance(submitted, datetime) or submitted.utcoffset() is None:
        raise fail(
            "submitted_at",
            f"needs a time with a UTC offset, e.g. 2026-11-24T12:00:00Z; got {submitted!s}",
        )


def _columns(orders: tuple[Order, ...]) -> tuple[SideColumns, SideColumns]:
    """Validate every order and split the book into the two sides' columns."""
    for index, order in enumerate(orders):
        if not _looks_valid(order):
            _check_order(index, order)
    ids = [order.id for order in orders]
    if len(set(ids)) != len(ids):
        _raise_duplicate_id(orders)
    buyers = {order.meter_id for order in orders if order.side is Side.BUY}
    if not buyers.isdisjoint(order.meter_id for order in orders if order.side is Side.SELL):
        _raise_meter_on_both_sides(orders)
    tie_rank = _tie_rank(orders)
    is_buy = np.fromiter((order.side is Side.BUY for order in orders), bool, len(orders))
    return (
        _side_columns([o for o in orders if o.side is Side.BUY], tie_rank[is_buy], buy=True),
        _side_columns([o for o in orders if o.side is Side.SELL], tie_rank[~is_buy], buy=False),
    )


def _dense_rank(keys: IntArray) -> IntArray:
    """0..n-1 in the order of distinct integer keys."""
    rank = np.empty(len(keys), dtype=np.int64)
    rank[np.argsort(keys)] = np.arange(len(keys), dtype=np.int64)
    return rank


def _tie_rank(orders: tuple[Order, ...]) -> IntArray:
    """Each order's place when sorted by submission time, then id (code-point order)."""
    count = len(orders)
    ids = [order.id for order in orders]
    id_rank = np.empty(count, dtype=np.int64)
    id_rank[sorted(range(count), key=ids.__getitem__)] = np.arange(count, dtype=np.int64)
    # Seconds since the epoch as float64 keep distinct microseconds distinct until the year 2242.
    submitted_s = np.fromiter((order.submitted_at.timestamp() for order in orders), float, count)
    tie_rank = np.empty(count, dtype=np.int64)
    tie_rank[np.lexsort((id_rank, submitted_s))] = np.arange(count, dtype=np.int64)
    return tie_rank


def _side_columns(orders: Iterable[Order], tie_rank: IntArray, *, buy: bool) -> SideColumns:
    rows = list(orders)
    count = len(rows)
    limits = np.fromiter((o.limit_price for o in rows), np.float64, count)
    ids = np.empty(count, dtype=object)
    ids[:] = [o.id for o in rows]
    return SideColumns(
        ids=ids,
        quantity_wh=np.fromiter((o.quantity_wh for o in rows), np.int64, count),
        limit_micro=micro_down(limits) if buy else micro_up(limits),
        tie_rank=_dense_rank(tie_rank),
    )
