"""From a plan to the site's orders: quantities from step 0, prices from the value of energy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterchain.der import Battery, DerProblem, Site, optimise, orders_for_next_interval
from meterchain.der.orders import flexible_blocks, planned_exchange
from meterchain.model import Side

BATTERY = Battery(10_000, 2_000, 2_000, 0.95, 0.95, 0.1, 0.9)
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def hourly(pv: list[float], load: list[float], buy: list[float], **extra: object) -> DerProblem:
    values: dict[str, object] = {
        "site": Site("house", BATTERY),
        "sell_price_per_kwh": [0.2] * len(pv),
        "step_s": 3600,
    }
    values.update(extra)
    return DerProblem(pv_w=pv, load_w=load, buy_price_per_kwh=buy, **values)  # type: ignore[arg-type]


def test_planned_import_becomes_a_bid_at_the_buy_price() -> None:
    problem = hourly([0, 0], [800, 800], [0.7, 0.7], site=Site("house"))
    [bid] = planned_exchange(problem, optimise(problem))
    assert (bid.side, bid.quantity_wh) == (Side.BUY, 800)
    assert bid.limit_price == pytest.approx(0.7)


def test_planned_export_becomes_an_offer_at_the_sell_price() -> None:
    problem = hourly([3_000, 0], [500, 0], [0.7, 0.7], site=Site("house"))
    [offer] = planned_exchange(problem, optimise(problem))
    assert (offer.side, offer.quantity_wh) == (Side.SELL, 2_500)
    assert offer.limit_price == pytest.approx(0.2)


def test_spare_battery_room_is_bid_at_what_the_energy_saves_later() -> None:
    # The plan buys 1662 Wh at 0.5 in step 1 or 2 for the 1500 W evening load. 2000 Wh bought
    # now instead (the battery's full charge power for an hour) saves those purchases and
    # leaves 321 Wh in the cells that can only be sold at 0.2 after the second conversion.
    problem = hourly([0] * 4, [0, 0, 0, 1_500], [0.9, 0.5, 0.5, 1.5], initial_soc_fraction=0.1)
    plan = optimise(problem)
    [block] = flexible_blocks(problem, plan)
    saved = 1_500 / 0.95 / 0.95 * 0.5 / 1000
    leftover = (2_000 * 0.95 - 1_500 / 0.95) * 0.95 * 0.2 / 1000
    assert block.side is Side.BUY
    assert block.quantity_wh == 2_000
    assert block.limit_price == pytest.approx((saved + leftover) / 2.0, abs=1e-5)


def test_no_flexible_offer_when_the_stored_energy_is_needed_later() -> None:
    # 1600 Wh above the minimum, 1579 Wh of it needed for the 2.0 evening: selling any now
    # means buying it back at 0.3 through two conversions, dearer than the grid price now.
    problem = hourly([0] * 3, [0, 0, 1_500], [0.3, 0.3, 2.0], initial_soc_fraction=0.26)
    plan = optimise(problem)
    assert not [b for b in flexible_blocks(problem, plan) if b.side is Side.SELL]


def test_energy_the_plan_would_sell_cheaply_later_is_offered_now() -> None:
    # 1421 Wh of the cells are spare: the plan sells them at 0.2 later, so it offers them now
    # at the price that beats that, after covering the evening.
    problem = hourly([0] * 3, [0, 0, 1_500], [0.3, 0.3, 2.0], initial_soc_fraction=0.4)
    plan = optimise(problem)
    [offer] = flexible_blocks(problem, plan)
    assert offer.side is Side.SELL
    assert 0.2 < offer.limit_price < 0.3


def test_orders_carry_the_meter_the_time_and_unique_ids() -> None:
    problem = hourly([0] * 4, [300, 0, 0, 1_500], [0.9, 0.5, 0.5, 1.5], initial_soc_fraction=0.1)
    orders = orders_for_next_interval(
        problem, optimise(problem), meter_id="m7", submitted_at=NOW, order_id_prefix="m7-0001"
    )
    assert [o.side for o in orders] == [Side.BUY, Side.BUY]
    assert {o.meter_id for o in orders} == {"m7"}
    assert {o.submitted_at for o in orders} == {NOW}
    assert len({o.id for o in orders}) == len(orders)
    assert all(o.id.startswith("m7-0001-") for o in orders)


def test_a_site_with_nothing_to_trade_sends_no_orders() -> None:
    problem = hourly([500], [500], [0.5], site=Site("house"))
    assert (
        orders_for_next_interval(
            problem, optimise(problem), meter_id="m1", submitted_at=NOW, order_id_prefix="x"
        )
        == []
    )


@st.composite
def small_days(draw: st.DrawFn) -> DerProblem:
    steps = draw(st.integers(2, 6))
    watts = st.lists(st.floats(0, 4_000), min_size=steps, max_size=steps)
    buy = draw(st.lists(st.floats(0.1, 1.5), min_size=steps, max_size=steps))
    return DerProblem(
        site=Site("house", BATTERY),
        pv_w=draw(watts),
        load_w=draw(watts),
        buy_price_per_kwh=buy,
        sell_price_per_kwh=[b * draw(st.floats(0.0, 0.9)) for b in buy],
        initial_soc_fraction=draw(st.floats(0.1, 0.9)),
        target_soc_fraction=draw(st.sampled_from([None, 0.5])),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_days())
def test_a_sites_own_orders_never_cross_and_stay_within_the_tariffs(problem: DerProblem) -> None:
    orders = orders_for_next_interval(
        problem, optimise(problem), meter_id="m1", submitted_at=NOW, order_id_prefix="x"
    )
    buy, sell = problem.buy_price_per_kwh[0], problem.sell_price_per_kwh[0]
    bids = [o.limit_price for o in orders if o.side is Side.BUY]
    offers = [o.limit_price for o in orders if o.side is Side.SELL]
    if bids and offers:
        assert max(bids) < min(offers)
    assert all(sell - 1e-9 <= price <= buy + 1e-9 for price in bids + offers)
    assert all(o.quantity_wh >= 1 for o in orders)


def test_only_side_prices_that_side_alone_and_the_same() -> None:
    problem = hourly([0] * 4, [0, 0, 0, 1_500], [0.9, 0.5, 0.5, 1.5], initial_soc_fraction=0.1)
    plan = optimise(problem)
    both = flexible_blocks(problem, plan)
    assert flexible_blocks(problem, plan, only_side=Side.BUY) == [
        b for b in both if b.side is Side.BUY
    ]
    assert flexible_blocks(problem, plan, only_side=Side.SELL) == [
        b for b in both if b.side is Side.SELL
    ]
