"""Battery wear, ramp limits, the CC-CV taper, several batteries and SoC targets mid-horizon."""

from __future__ import annotations

import itertools

import pytest

from meterchain.der import Battery, DerProblem, Site, optimise
from meterchain.der.evaluate import PlanFlows, evaluate
from meterchain.der.site import InvalidSite, SocTarget

HOUR_S = 3600


def night_and_evening(
    battery: Battery, *, cheap: float, dear: float, **extra: object
) -> DerProblem:
    """Four cheap hours, then four dear ones, 1 kW of load throughout."""
    return DerProblem(
        site=Site("house", battery),
        pv_w=[0.0] * 8,
        load_w=[1_000.0] * 8,
        buy_price_per_kwh=[cheap] * 4 + [dear] * 4,
        sell_price_per_kwh=[0.0] * 8,
        initial_soc_fraction=0.1,
        step_s=HOUR_S,
        **extra,  # type: ignore[arg-type]
    )


def test_wear_cost_comes_from_the_cell_price_and_the_cycle_life() -> None:
    battery = Battery(
        10_000,
        5_000,
        5_000,
        soc_min_fraction=0.1,
        soc_max_fraction=0.9,
        cell_price_per_kwh=2_400.0,
        cycle_life=6_000,
    )
    # R$ 2400/kWh of cells over 6000 cycles of an 80 % window, in and out: R$ 0.25 per kWh
    assert battery.wear_cost_per_kwh == pytest.approx(2_400 / (2 * 6_000 * 0.8))


def test_battery_does_not_cycle_when_the_spread_does_not_pay_for_the_wear() -> None:
    worn = Battery(10_000, 5_000, 5_000, cell_price_per_kwh=4_800.0, cycle_life=3_000)
    # wear 4800 / (2·3000·0.85) ≈ 0.94 per kWh in and out: more than a 0.60 → 1.00 spread
    plan = optimise(night_and_evening(worn, cheap=0.60, dear=1.00))
    assert sum(plan.charge_w) == pytest.approx(0.0, abs=1e-6)


def test_battery_cycles_when_the_spread_pays_for_the_wear() -> None:
    cheap_cells = Battery(10_000, 5_000, 5_000, cell_price_per_kwh=600.0, cycle_life=6_000)
    problem = night_and_evening(cheap_cells, cheap=0.20, dear=1.50)
    plan = optimise(problem)
    assert sum(plan.discharge_w[4:]) == pytest.approx(4_000.0, abs=1e-3)
    assert plan.battery_wear_cost > 0
    # the evaluator, from the flows alone, prices the wear the same way
    assert evaluate(problem, PlanFlows.of(plan)).wear_cost == pytest.approx(plan.battery_wear_cost)


def test_ramp_limit_keeps_each_step_change_within_the_limit() -> None:
    battery = Battery(
        20_000, 5_000, 5_000, soc_min_fraction=0.0, soc_max_fraction=1.0, ramp_limit_w_per_h=1_000.0
    )
    problem = night_and_evening(
        battery, cheap=0.20, dear=1.50, initial_battery_power_w=[0.0], target_soc_fraction=0.0
    )
    plan = optimise(problem)
    power = [0.0, *plan.battery_power_w]
    assert max(abs(b - a) for a, b in itertools.pairwise(power)) <= 1_000 + 1e-6
    assert evaluate(problem, PlanFlows.of(plan)).feasible
    # without the limit the battery swings 5 kW in one step
    free = optimise(
        night_and_evening(
            Battery(20_000, 5_000, 5_000, soc_min_fraction=0.0, soc_max_fraction=1.0),
            cheap=0.20,
            dear=1.50,
            target_soc_fraction=0.0,
        )
    )
    swing = [0.0, *free.battery_power_w]
    assert max(abs(b - a) for a, b in itertools.pairwise(swing)) > 1_000


def test_charge_power_tapers_above_the_cv_threshold() -> None:
    battery = Battery(
        10_000,
        5_000,
        20_000,
        soc_min_fraction=0.0,
        soc_max_fraction=1.0,
        taper_soc_fraction=0.8,
        taper_end_power_fraction=0.1,
    )
    problem = DerProblem(
        site=Site("house", battery),
        pv_w=[0.0] * 6,
        load_w=[0.0] * 6,
        buy_price_per_kwh=[0.10, 0.11, 0.12, 0.13, 0.14, 5.0],
        sell_price_per_kwh=[0.0] * 5 + [4.9],
        initial_soc_fraction=0.5,
        step_s=HOUR_S,
    )
    plan = optimise(problem)
    soc = problem.initial_soc_wh
    for t in range(5):
        assert plan.charge_w[t] <= battery.max_charge_w_at(soc) + 1e-6
        soc = plan.soc_wh[t]
    # the taper is felt: the battery charges less than its 5 kW once above 80 %
    assert 0 < plan.charge_w[1] < 5_000
    assert evaluate(problem, PlanFlows.of(plan)).feasible


def test_two_batteries_each_keep_their_own_bounds_and_the_cheaper_to_wear_works_first() -> None:
    wall = Battery(10_000, 3_000, 3_000, name="wall", cell_price_per_kwh=3_000.0)
    car = Battery(40_000, 3_000, 3_000, name="car", cell_price_per_kwh=9_000.0)
    problem = DerProblem(
        site=Site("house", wall, batteries=[car]),
        pv_w=[0.0] * 8,
        load_w=[2_000.0] * 8,
        buy_price_per_kwh=[0.2] * 4 + [3.0] * 4,
        sell_price_per_kwh=[0.0] * 8,
        initial_soc_fractions=[0.1, 0.5],
        step_s=HOUR_S,
    )
    plan = optimise(problem)
    by_name = {b.name: b for b in plan.batteries}
    assert set(by_name) == {"wall", "car"}
    for battery in (wall, car):
        for soc in by_name[battery.name].soc_wh:
            assert battery.soc_min_wh - 1e-6 <= soc <= battery.soc_max_wh + 1e-6
    assert sum(by_name["wall"].discharge_w) > sum(by_name["car"].discharge_w)
    assert plan.discharge_w == pytest.approx(
        [
            a + b
            for a, b in zip(by_name["wall"].discharge_w, by_name["car"].discharge_w, strict=True)
        ]
    )
    assert evaluate(problem, PlanFlows.of(plan)).feasible


def test_a_soc_target_before_the_evening_is_met_even_when_prices_do_not_ask_for_it() -> None:
    battery = Battery(10_000, 5_000, 5_000)
    problem = DerProblem(
        site=Site("house", battery),
        pv_w=[0.0] * 6,
        load_w=[500.0] * 6,
        buy_price_per_kwh=[0.5] * 6,
        sell_price_per_kwh=[0.1] * 6,
        initial_soc_fraction=0.2,
        soc_targets=[SocTarget(step=2, soc_fraction=0.9)],  # backup reserve for a storm
        step_s=HOUR_S,
    )
    plan = optimise(problem)
    assert plan.soc_fraction[2] == pytest.approx(0.9, abs=1e-6)
    assert plan.target_shortfall_wh == pytest.approx(0.0, abs=1e-6)


def test_a_soc_target_after_the_horizon_is_refused() -> None:
    with pytest.raises(InvalidSite, match="soc target at step 9 is after the horizon of 6"):
        DerProblem(
            site=Site("house", Battery(10_000, 5_000, 5_000)),
            pv_w=[0.0] * 6,
            load_w=[0.0] * 6,
            buy_price_per_kwh=[0.5] * 6,
            sell_price_per_kwh=[0.1] * 6,
            soc_targets=[SocTarget(step=9, soc_fraction=0.5)],
        )


def test_two_batteries_with_one_name_are_refused() -> None:
    with pytest.raises(InvalidSite, match="batteries with the same name"):
        Site("house", Battery(1_000, 500, 500), batteries=[Battery(2_000, 500, 500)])
