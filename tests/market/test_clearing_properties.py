"""Clearing on thousands of random books, checked against a brute-force reference.

The reference is written the slow, obvious way: the maximal volume by trying every candidate
price, and the matching by walking both sorted queues one pair at a time. Random books are
drawn from small grids of prices, quantities, times and ids so that ties are common.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.market import ClearingResult, Mechanism, OrderBook, clear
from meterchain.market import clearing as clearing_module
from meterchain.model import Order, Side

OPEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MICRO = 1_000_000
BOOKS_PER_CHUNK = 250
CHUNKS = 8  # 2,000 seeded books, each cleared both ways and shuffled


def micro(price_per_kwh: float) -> int:
    """Test books only use prices on the micro-unit grid, so this is exact."""
    return round(price_per_kwh * MICRO)


def effective_micro(order: Order, book: OrderBook) -> int:
    limit = micro(order.limit_price)
    if order.side is Side.BUY:
        return min(limit, micro(book.retail_price_per_kwh))
    return max(limit, micro(book.feed_in_price_per_kwh))


def priority(order: Order, book: OrderBook) -> tuple[int, datetime, str]:
    price = effective_micro(order, book)
    return (-price if order.side is Side.BUY else price, order.submitted_at, order.id)


def queue(book: OrderBook, side: Side) -> list[Order]:
    return sorted((o for o in book.orders if o.side is side), key=lambda o: priority(o, book))


def brute_force_volume_at(book: OrderBook, price_micro: int) -> int:
    """Energy that can trade at one uniform price: the short side of the market."""
    demand = sum(
        o.quantity_wh
        for o in book.orders
        if o.side is Side.BUY and effective_micro(o, book) >= price_micro
    )
    supply = sum(
        o.quantity_wh
        for o in book.orders
        if o.side is Side.SELL and effective_micro(o, book) <= price_micro
    )
    return min(demand, supply)


def brute_force_max_volume(book: OrderBook) -> int:
    """The most energy any uniform price can clear: try every limit as the price."""
    candidates = {effective_micro(o, book) for o in book.orders}
    return max((brute_force_volume_at(book, p) for p in candidates), default=0)


def reference_clearing(
    book: OrderBook, mechanism: Mechanism
) -> tuple[int | None, list[tuple[str, str, int, int]]]:
    """Walk both queues one pair at a time: (price in micro-units, trades with micro prices)."""
    bids, asks = queue(book, Side.BUY), queue(book, Side.SELL)
    pairs: list[tuple[Order, Order, int]] = []
    i = j = 0
    bid_left = bids[0].quantity_wh if bids else 0
    ask_left = asks[0].quantity_wh if asks else 0
    while (
        i < len(bids)
        and j < len(asks)
        and effective_micro(bids[i], book) >= effective_micro(asks[j], book)
    ):
        quantity = min(bid_left, ask_left)
        pairs.append((bids[i], asks[j], quantity))
        bid_left -= quantity
        ask_left -= quantity
        if bid_left == 0:
            i += 1
            bid_left = bids[i].quantity_wh if i < len(bids) else 0
        if ask_left == 0:
            j += 1
            ask_left = asks[j].quantity_wh if j < len(asks) else 0
    if not pairs:
        return None, []

    def midpoint(b: Order, a: Order) -> int:
        return (effective_micro(b, book) + effective_micro(a, book)) // 2

    if mechanism is Mechanism.PAY_AS_CLEAR:
        price = midpoint(pairs[-1][0], pairs[-1][1])
        return price, [(b.id, a.id, q, price) for b, a, q in pairs]
    trades = [(b.id, a.id, q, midpoint(b, a)) for b, a, q in pairs]
    turnover = sum(q * p for _, _, q, p in trades)
    return turnover // sum(q for _, _, q, _ in trades), trades


def check_result(book: OrderBook, mechanism: Mechanism, result: ClearingResult) -> None:
    """Everything a clearing must promise, whatever the book."""
    orders = {o.id: o for o in book.orders}
    filled: Counter[str] = Counter()
    retail, feed_in = book.retail_price_per_kwh, book.feed_in_price_per_kwh
    for trade in result.trades:
        buyer, seller = orders[trade.buy_order_id], orders[trade.sell_order_id]
        assert buyer.side is Side.BUY and seller.side is Side.SELL, trade
        assert trade.quantity_wh > 0, trade
        assert trade.price <= buyer.limit_price and trade.price <= retail, trade
        assert trade.price >= seller.limit_price and trade.price >= feed_in, trade
        filled[buyer.id] += trade.quantity_wh
        filled[seller.id] += trade.quantity_wh
    for order_id, quantity_wh in filled.items():
        assert quantity_wh <= orders[order_id].quantity_wh, f"{order_id} over-filled"

    volume_wh = sum(t.quantity_wh for t in result.trades)
    assert volume_wh == brute_force_max_volume(book)
    assert (result.price is None) == (volume_wh == 0)
    if result.price is not None and mechanism is Mechanism.PAY_AS_CLEAR:
        assert all(t.price == result.price for t in result.trades)
        assert brute_force_volume_at(book, micro(result.price)) == volume_wh
    if result.price is not None and mechanism is Mechanism.PAY_AS_BID:
        prices = [t.price for t in result.trades]
        assert min(prices) <= result.price <= max(prices)

    for side in Side:  # fills follow priority: nobody trades while someone ahead is unfilled
        waiting = False
        for order in queue(book, side):
            assert not (waiting and filled[order.id]), f"{order.id} jumped the queue"
            waiting = waiting or filled[order.id] < order.quantity_wh


def check_against_reference(book: OrderBook, mechanism: Mechanism, context: str) -> None:
    result = clear(book, mechanism)
    try:
        check_result(book, mechanism, result)
        price, trades = reference_clearing(book, mechanism)
        assert result.price == (None if price is None else price / MICRO)
        assert [
            (t.buy_order_id, t.sell_order_id, t.quantity_wh, t.price) for t in result.trades
        ] == [(b, s, q, p / MICRO) for b, s, q, p in trades]
    except AssertionError as exc:
        raise AssertionError(f"{context}: {json.dumps(book.as_json())}") from exc


def random_book(rng: random.Random, max_orders: int = 8) -> OrderBook:
    """A small book whose prices, quantities and times often tie."""
    retail = rng.choice([0.95, 0.95, 0.60, 1.20])
    feed_in = rng.choice([0.25, 0.25, 0.0, -0.05, retail])
    price_grid = [p / 100 for p in range(-10, 131, 5)]
    ids = [f"{rng.choice('abxyz')}{n}" for n in rng.sample(range(100), 2 * max_orders)]
    orders = []
    for k in range(rng.randint(0, max_orders) + rng.randint(0, max_orders)):
        side = rng.choice([Side.BUY, Side.SELL])
        if rng.random() < 0.6:
            limit = rng.choice(price_grid)
        elif rng.random() < 0.5:  # one micro-unit apart from the grid
            limit = (micro(rng.choice(price_grid)) + rng.choice([-1, 1])) / MICRO
        else:
            limit = rng.randint(-100_000, 1_300_000) / MICRO
        quantity = (
            rng.choice([1, 100, 100, 250, 1000]) if rng.random() < 0.7 else rng.randint(1, 3000)
        )
        after = timedelta(seconds=rng.choice([0, 0, 30, 900]), microseconds=rng.choice([0, 0, 1]))
        meter = f"{side.value}-{rng.randint(0, 3)}"  # some meters send several orders
        orders.append(Order(ids[k], meter, side, quantity, limit, OPEN + after))
    return OrderBook(retail, feed_in, tuple(orders))


def shuffled(book: OrderBook, rng: random.Random) -> OrderBook:
    orders = list(book.orders)
    rng.shuffle(orders)
    return OrderBook(book.retail_price_per_kwh, book.feed_in_price_per_kwh, tuple(orders))


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_books_clear_like_the_brute_force_reference(chunk: int) -> None:
    for seed in range(chunk * BOOKS_PER_CHUNK, (chunk + 1) * BOOKS_PER_CHUNK):
        rng = random.Random(seed)
        book = random_book(rng)
        for mechanism in Mechanism:
            check_against_reference(book, mechanism, f"seed {seed}, {mechanism}")


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_the_order_the_book_was_given_in_does_not_matter(chunk: int) -> None:
    for seed in range(chunk * BOOKS_PER_CHUNK, (chunk + 1) * BOOKS_PER_CHUNK):
        rng = random.Random(seed)
        book = random_book(rng)
        for mechanism in Mechanism:
            assert clear(shuffled(book, rng), mechanism) == clear(book, mechanism), seed


@pytest.mark.parametrize("seed", range(4))
def test_large_books_with_many_ties_match_the_reference(seed: int) -> None:
    rng = random.Random(10_000 + seed)
    retail, feed_in = 0.95, 0.25
    orders = [
        Order(
            f"o{rng.randrange(10**9):09d}-{k}",
            f"m{k}",
            rng.choice([Side.BUY, Side.SELL]),
            rng.choice([50, 100, 500, 1000, rng.randint(1, 5000)]),
            rng.choice([p / 100 for p in range(15, 106, 5)]),
            OPEN + timedelta(seconds=rng.choice(range(0, 900, 60))),
        )
        for k in range(3000)
    ]
    book = OrderBook(retail, feed_in, tuple(orders))
    for mechanism in Mechanism:
        check_against_reference(book, mechanism, f"large seed {seed}, {mechanism}")
        assert clear(shuffled(book, rng), mechanism) == clear(book, mechanism)


def test_the_slow_sort_for_enormous_books_gives_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Books too big for the one-key sort fall back to a lexicographic sort: same answer."""
    books = [random_book(random.Random(seed)) for seed in range(200)]
    expected = [clear(book, mechanism) for book in books for mechanism in Mechanism]
    monkeypatch.setattr(clearing_module, "MAX_ABS_PRICE_MICRO", 2**62)
    assert [clear(book, mechanism) for book in books for mechanism in Mechanism] == expected


def test_extreme_prices_and_quantities_do_not_overflow() -> None:
    big = 10**12
    orders = [Order(f"b{k}", f"mb{k}", Side.BUY, big, 1e6 - k, OPEN) for k in range(50)] + [
        Order(f"s{k}", f"ms{k}", Side.SELL, big, -1e6 + k, OPEN) for k in range(50)
    ]
    book = OrderBook(1e6, -1e6, tuple(orders))
    for mechanism in Mechanism:
        check_against_reference(book, mechanism, f"extreme, {mechanism}")


prices = st.integers(min_value=-20, max_value=130).map(lambda cents: cents / 100)


@st.composite
def books(draw: st.DrawFn) -> OrderBook:
    retail = draw(st.sampled_from([0.95, 0.6, 1.0]))
    feed_in = draw(st.sampled_from([0.25, 0.0, -0.1, retail]))
    count = draw(st.integers(min_value=0, max_value=12))
    ids = draw(
        st.lists(
            st.text(alphabet="ab01", min_size=1, max_size=4),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    orders: list[Order] = []
    for order_id in ids:
        side = draw(st.sampled_from(Side))
        orders.append(
            Order(
                order_id,
                f"{side.value}-{draw(st.integers(0, 2))}",
                side,
                draw(st.integers(min_value=1, max_value=2000)),
                draw(prices),
                OPEN + timedelta(seconds=draw(st.sampled_from([0, 1, 60]))),
            )
        )
    return OrderBook(retail, feed_in, tuple(orders))


@settings(max_examples=300, deadline=None)
@given(book=books(), mechanism=st.sampled_from(Mechanism), order=st.randoms())
def test_any_book_clears_feasibly_maximally_and_independently_of_its_order(
    book: OrderBook, mechanism: Mechanism, order: random.Random
) -> None:
    result = clear(book, mechanism)
    check_result(book, mechanism, result)
    assert clear(shuffled(book, order), mechanism) == result
