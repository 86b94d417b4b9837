"""A battery barred from discharging to the grid never makes the site export more than its PV
surplus: the bug of issue 12 (the battery ran the house while all the PV was exported)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterchain.der import Battery, DeferrableLoad, DerProblem, DerSchedule, Site, optimise

TOL = 1e-3


def _no_grid_discharge_battery(**changes: float) -> Battery:
    values = {
        "capacity_wh": 10_000.0,
        "max_charge_power_w": 3_000.0,
        "max_discharge_power_w": 3_000.0,
        "soc_min_fraction": 0.1,
        "soc_max_fraction": 0.95,
    }
    values.update(changes)
    return Battery(**values, grid_discharging=False)  # type: ignore[arg-type]


def _consumption_w(problem: DerProblem, plan: DerSchedule, t: int) -> float:
    """What the site draws at step t besides the grid: base load, deferrable loads, charging."""
    deferrable = sum(power[t] for power in plan.deferrable_w.values())
    return problem.load_w[t] + deferrable + plan.charge_w[t]


def _pv_surplus_w(problem: DerProblem, plan: DerSchedule, t: int) -> float:
    used_pv = problem.pv_w[t] - plan.curtailment_w[t]
    return max(0.0, used_pv - _consumption_w(problem, plan, t))


def test_battery_does_not_run_the_house_so_that_all_the_pv_can_be_sold() -> None:
    # Export pays 0.80 and import costs 0.50 all day: selling every PV watt and running the
    # house from the battery would "earn" more, but that is the battery feeding the grid.
    problem = DerProblem(
        site=Site("house", _no_grid_discharge_battery()),
        pv_w=[3_000, 3_000, 3_000, 3_000],
        load_w=[1_000, 1_000, 1_000, 1_000],
        buy_price_per_kwh=[0.50] * 4,
        sell_price_per_kwh=[0.80] * 4,
        initial_soc_fraction=0.9,
        step_s=3600,
    )
    plan = optimise(problem)
    assert plan.export_w == pytest.approx([2_000] * 4, abs=TOL)
    assert plan.discharge_w == pytest.approx([0] * 4, abs=TOL)
    # what the surplus is worth, and not a cent more: 4 h x 2 kWh x 0.80
    assert plan.cost == pytest.approx(-6.40, abs=1e-6)


def test_battery_still_runs_the_house_in_the_evening_when_it_may_not_feed_the_grid() -> None:
    problem = DerProblem(
        site=Site("house", _no_grid_discharge_battery()),
        pv_w=[3_000, 0, 0],
        load_w=[1_000, 1_000, 1_000],
        buy_price_per_kwh=[0.50, 1.00, 1.00],
        sell_price_per_kwh=[0.80, 0.80, 0.80],
        initial_soc_fraction=0.5,
        step_s=3600,
    )
    plan = optimise(problem)
    assert plan.discharge_w[1:] == pytest.approx([1_000, 1_000], abs=TOL)
    assert plan.export_w[1:] == pytest.approx([0, 0], abs=TOL)


def test_battery_does_not_run_a_deferrable_load_while_the_pv_is_sold() -> None:
    # The washer needs 2 kWh in the first two hours; running it from the battery while the PV
    # surplus over the base load is exported would sell battery energy through a detour.
    problem = DerProblem(
        site=Site("house", _no_grid_discharge_battery()),
        pv_w=[3_000, 3_000],
        load_w=[500, 500],
        buy_price_per_kwh=[0.50, 0.50],
        sell_price_per_kwh=[0.80, 0.80],
        initial_soc_fraction=0.9,
        deferrable_loads=[DeferrableLoad("washer", 2_000, 0, 2, max_power_w=2_000)],
        step_s=3600,
    )
    plan = optimise(problem)
    for t in range(problem.steps):
        assert plan.export_w[t] <= _pv_surplus_w(problem, plan, t) + TOL
    assert plan.cost == pytest.approx(-(5_000 - 2_000) / 1000 * 0.80, abs=1e-6)


@st.composite
def days_without_grid_discharge(draw: st.DrawFn) -> DerProblem:
    steps = draw(st.integers(2, 8))
    series = st.lists(st.floats(0, 5_000), min_size=steps, max_size=steps)
    buy = draw(st.lists(st.floats(0.0, 1.5), min_size=steps, max_size=steps))
    # export sometimes pays more than import: the days on which the bug showed
    sell = [b + draw(st.floats(-0.5, 0.5)) for b in buy]
    battery = _no_grid_discharge_battery(
        capacity_wh=draw(st.floats(1_000, 20_000)),
        max_charge_power_w=draw(st.floats(100, 5_000)),
        max_discharge_power_w=draw(st.floats(100, 5_000)),
    )
    loads = []
    if draw(st.booleans()):
        start = draw(st.integers(0, steps - 1))
        end = draw(st.integers(start + 1, steps))
        power = draw(st.floats(100, 3_000))
        energy = draw(st.floats(0, power * (end - start) * 0.25))
        loads.append(DeferrableLoad("pump", energy, start, end, max_power_w=power))
    return DerProblem(
        site=Site("random", battery, pv_curtailable=draw(st.booleans())),
        pv_w=draw(series),
        load_w=draw(series),
        buy_price_per_kwh=buy,
        sell_price_per_kwh=sell,
        initial_soc_fraction=draw(st.floats(0.1, 0.95)),
        deferrable_loads=loads,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days_without_grid_discharge())
def test_no_plan_with_grid_discharging_off_exports_more_than_the_pv_surplus(
    problem: DerProblem,
) -> None:
    plan = optimise(problem)
    for t in range(problem.steps):
        assert plan.export_w[t] <= _pv_surplus_w(problem, plan, t) + TOL
