"""The household planner: the MILP for flexible sites, a shortcut for inflexible ones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.agents.messages import TariffNotice
from meterchain.agents.planning import DerPlanner
from meterchain.der.optimiser import optimise
from meterchain.der.orders import orders_for_next_interval
from meterchain.der.site import Battery, DerProblem, Site

START = datetime(2026, 11, 24, 15, tzinfo=UTC)
TARIFFS = TariffNotice(retail_price=0.95, feed_in_price=0.25)


def planner_for(site: Site, pv_w: list[float], load_w: list[float]) -> DerPlanner:
    return DerPlanner(site, lambda _start, steps: (pv_w[:steps], load_w[:steps]), meter_id="m1")


@settings(max_examples=40, deadline=None)
@given(
    pv=st.lists(st.floats(0, 5000), min_size=8, max_size=8),
    load=st.lists(st.floats(0, 5000), min_size=8, max_size=8),
)
def test_inflexible_shortcut_orders_what_the_milp_would(pv: list[float], load: list[float]) -> None:
    site = Site(name="m1")
    plan = planner_for(site, pv, load).plan(START, TARIFFS, None, START)
    problem = DerProblem(
        site=site,
        pv_w=pv,
        load_w=load,
        buy_price_per_kwh=[0.95] * 8,
        sell_price_per_kwh=[0.25] * 8,
    )
    expected = orders_for_next_interval(
        problem, optimise(problem), meter_id="m1", submitted_at=START, order_id_prefix="x",
        flexible=False,
    )  # fmt: skip
    got = [(o.side, o.quantity_wh, o.limit_price) for o in plan.orders]
    want = [(o.side, o.quantity_wh, pytest.approx(o.limit_price)) for o in expected]
    assert got == want


def test_a_battery_site_is_planned_by_the_milp_and_gets_a_set_point() -> None:
    battery = Battery(capacity_wh=10_000, max_charge_power_w=3000, max_discharge_power_w=3000)
    pv, load = [4000.0] + [0.0] * 7, [500.0] * 8  # the sun shines only now
    plan = planner_for(Site(name="m1", battery=battery), pv, load).plan(START, TARIFFS, 0.2, START)
    assert plan.battery_power_w is not None and plan.battery_power_w > 0  # it stores the surplus


def test_a_matched_flexible_offer_is_discharged_from_the_battery() -> None:
    from meterchain.agents.prosumer import setpoint_after_trades

    # Planned: export 250 Wh with the battery idle; a neighbour took 750 Wh more.
    assert setpoint_after_trades(0.0, (0.0, 250.0), 0, 1000, 900) == pytest.approx(-3000.0)
    # Planned: charge 1000 W from a 250 Wh import; 500 Wh more were bought from neighbours.
    assert setpoint_after_trades(1000.0, (250.0, 0.0), 750, 0, 900) == pytest.approx(3000.0)
    # Matched exactly what was planned: the plan's set-point stands.
    assert setpoint_after_trades(-500.0, (0.0, 125.0), 0, 125, 900) == pytest.approx(-500.0)
