"""The optimiser's decisions on cases small enough to solve by hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from meterchain.der import Battery, DeferrableLoad, DerProblem, Site, optimise

HOUR_S = 3600


def battery(**changes: Any) -> Battery:
    values: dict[str, Any] = {
        "capacity_wh": 10_000,
        "max_charge_power_w": 2_000,
        "max_discharge_power_w": 2_000,
        "charge_efficiency": 0.95,
        "discharge_efficiency": 0.95,
        "soc_min_fraction": 0.1,
        "soc_max_fraction": 0.9,
    }
    values.update(changes)
    return Battery(**values)


def hourly(
    *,
    pv: Sequence[float],
    load: Sequence[float],
    buy: Sequence[float],
    sell: Sequence[float],
    site: Site | None = None,
    **extra: object,
) -> DerProblem:
    return DerProblem(
        site=site or Site("house", battery()),
        pv_w=pv,
        load_w=load,
        buy_price_per_kwh=buy,
        sell_price_per_kwh=sell,
        step_s=HOUR_S,
        **extra,  # type: ignore[arg-type]
    )


def test_battery_charges_in_the_cheap_night_and_discharges_in_the_expensive_evening() -> None:
    problem = hourly(
        pv=[0] * 8,
        load=[500] * 8,
        buy=[0.20] * 4 + [1.00] * 4,
        sell=[0.05] * 8,
        initial_soc_fraction=0.1,
    )
    plan = optimise(problem)
    assert all(plan.discharge_w[t] == pytest.approx(0) for t in range(4))
    assert sum(plan.charge_w[:4]) > 2_000
    assert plan.import_w[4:] == pytest.approx([0] * 4, abs=1e-6)
    assert plan.discharge_w[4:] == pytest.approx([500] * 4)


def test_hand_computed_cost_of_shifting_the_evening_load_to_the_night() -> None:
    problem = hourly(
        pv=[0] * 8,
        load=[500] * 8,
        buy=[0.20] * 4 + [1.00] * 4,
        sell=[0.05] * 8,
        initial_soc_fraction=0.1,
    )
    # 2000 Wh delivered in the evening needs 2000 / 0.95 / 0.95 Wh bought at night at 0.20.
    expected = 2.0 * 0.20 + (2.0 / 0.95 / 0.95) * 0.20
    assert optimise(problem).cost == pytest.approx(expected, rel=1e-6)


def test_flat_prices_leave_a_lossy_battery_idle_when_it_must_end_where_it_started() -> None:
    problem = hourly(
        pv=[0] * 4,
        load=[400] * 4,
        buy=[0.5] * 4,
        sell=[0.1] * 4,
        initial_soc_fraction=0.5,
        target_soc_fraction=0.5,
    )
    plan = optimise(problem)
    assert plan.import_w == pytest.approx([400] * 4)
    assert plan.charge_w == pytest.approx([0] * 4, abs=1e-6)


def test_negative_sell_price_stops_all_export() -> None:
    problem = hourly(
        pv=[4_000] * 4,
        load=[300] * 4,
        buy=[0.6] * 4,
        sell=[-0.10] * 4,
        initial_soc_fraction=0.5,
    )
    plan = optimise(problem)
    assert plan.export_w == pytest.approx([0] * 4, abs=1e-6)
    assert sum(plan.curtailment_w) > 0


def test_negative_sell_price_without_curtailment_stores_the_surplus() -> None:
    site = Site("house", battery(max_charge_power_w=5_000), pv_curtailable=False)
    problem = hourly(
        pv=[3_000] * 2,
        load=[500] * 2,
        buy=[0.6] * 2,
        sell=[-0.10] * 2,
        initial_soc_fraction=0.1,
        site=site,
    )
    plan = optimise(problem)
    assert plan.export_w == pytest.approx([0, 0], abs=1e-6)
    assert plan.charge_w == pytest.approx([2_500, 2_500])


def test_surplus_is_exported_when_the_sell_price_is_positive_and_the_battery_is_full() -> None:
    problem = hourly(
        pv=[3_000] * 2,
        load=[500] * 2,
        buy=[0.6] * 2,
        sell=[0.2] * 2,
        initial_soc_fraction=0.9,
        target_soc_fraction=0.9,
    )
    plan = optimise(problem)
    assert plan.export_w == pytest.approx([2_500, 2_500])
    assert plan.curtailment_w == pytest.approx([0, 0], abs=1e-6)


def test_deferrable_load_runs_in_the_cheapest_steps_of_its_window() -> None:
    washer = DeferrableLoad("washer", energy_wh=2_000, start_step=1, end_step=5, max_power_w=1_000)
    problem = hourly(
        pv=[0] * 6,
        load=[200] * 6,
        buy=[0.1, 0.9, 0.3, 0.9, 0.2, 0.1],
        sell=[0.0] * 6,
        site=Site("house"),
        deferrable_loads=[washer],
    )
    plan = optimise(problem)
    assert plan.deferrable_w["washer"] == pytest.approx([0, 0, 1_000, 0, 1_000, 0], abs=1e-6)


def test_single_block_load_runs_without_interruption() -> None:
    oven = DeferrableLoad(
        "dryer",
        energy_wh=2_000,
        start_step=0,
        end_step=6,
        max_power_w=1_000,
        min_power_w=1_000,
        single_block=True,
    )
    problem = hourly(
        pv=[0] * 6,
        load=[0] * 6,
        buy=[0.1, 0.9, 0.1, 0.9, 0.5, 0.5],
        sell=[0.0] * 6,
        site=Site("house"),
        deferrable_loads=[oven],
    )
    power = optimise(problem).deferrable_w["dryer"]
    running = [t for t, p in enumerate(power) if p > 1]
    assert len(running) == 2
    assert running[1] == running[0] + 1


def test_semi_continuous_load_is_off_or_at_least_its_minimum_power() -> None:
    charger = DeferrableLoad(
        "ev", energy_wh=3_000, start_step=0, end_step=4, max_power_w=3_000, min_power_w=1_400
    )
    problem = hourly(
        pv=[0] * 4,
        load=[0] * 4,
        buy=[0.2, 0.3, 0.4, 0.5],
        sell=[0.0] * 4,
        site=Site("house"),
        deferrable_loads=[charger],
    )
    power = optimise(problem).deferrable_w["ev"]
    assert all(p < 1e-6 or p >= 1_400 - 1e-6 for p in power)
    assert sum(power) == pytest.approx(3_000)


def test_surplus_only_load_runs_only_on_pv_surplus() -> None:
    pump = DeferrableLoad(
        "pool", energy_wh=1_500, start_step=0, end_step=6, max_power_w=1_000, surplus_only=True
    )
    pv = [0, 600, 1_500, 1_200, 300, 0]
    load = [300] * 6
    problem = hourly(
        pv=pv,
        load=load,
        buy=[0.0] * 6,  # free grid energy: only the surplus rule keeps the pump off it
        sell=[0.0] * 6,
        site=Site("house"),
        deferrable_loads=[pump],
    )
    plan = optimise(problem)
    for t, power in enumerate(plan.deferrable_w["pool"]):
        assert power <= max(0.0, pv[t] - load[t]) - plan.curtailment_w[t] + 1e-6
    assert sum(plan.deferrable_w["pool"]) == pytest.approx(1_500)


def test_start_soc_below_the_minimum_is_brought_back_at_full_power_and_never_lowered() -> None:
    problem = hourly(
        pv=[0] * 6,
        load=[300] * 6,
        buy=[0.9, 0.9, 0.2, 0.2, 0.9, 0.9],
        sell=[0.0] * 6,
        initial_soc_fraction=0.02,
        site=Site("house", battery(max_charge_power_w=500)),
    )
    plan = optimise(problem)
    # 200 Wh at the start, 1000 Wh minimum, 475 Wh gained per hour at most: it charges at full
    # power through the two expensive hours it takes, then never leaves the bounds again.
    assert plan.soc_wh[0] == pytest.approx(200 + 475)
    assert all(soc >= 1_000 - 1e-6 for soc in plan.soc_wh[1:])
    assert plan.soc_outside_bounds_wh_steps == pytest.approx(1_000 - 675)
    assert plan.notes


def test_start_soc_above_the_maximum_is_brought_down() -> None:
    problem = hourly(
        pv=[0] * 4, load=[1_000] * 4, buy=[0.3] * 4, sell=[0.1] * 4, initial_soc_fraction=1.0
    )
    plan = optimise(problem)
    assert max(plan.soc_wh) <= 10_000 + 1e-6
    assert all(soc <= 9_000 + 1e-6 for soc in plan.soc_wh[1:])


def test_target_soc_is_met_when_reachable() -> None:
    problem = hourly(
        pv=[0] * 4,
        load=[200] * 4,
        buy=[0.5] * 4,
        sell=[0.0] * 4,
        initial_soc_fraction=0.2,
        target_soc_fraction=0.6,
    )
    plan = optimise(problem)
    assert plan.soc_wh[-1] >= 6_000 - 1e-6
    assert plan.target_shortfall_wh == 0


def test_unreachable_soft_target_is_reported_not_raised() -> None:
    problem = hourly(
        pv=[0] * 2,
        load=[0] * 2,
        buy=[0.5] * 2,
        sell=[0.0] * 2,
        initial_soc_fraction=0.1,
        target_soc_fraction=0.9,
    )
    plan = optimise(problem)
    assert plan.soc_wh[-1] == pytest.approx(1_000 + 2 * 2_000 * 0.95)
    assert plan.target_shortfall_wh == pytest.approx(9_000 - plan.soc_wh[-1])
    assert any("target SoC" in note for note in plan.notes)


def test_import_limit_is_respected_by_precharging() -> None:
    site = Site("house", battery(), import_limit_w=1_000)
    problem = hourly(
        pv=[0] * 3,
        load=[200, 200, 2_500],
        buy=[0.5] * 3,
        sell=[0.0] * 3,
        initial_soc_fraction=0.2,
        site=site,
    )
    plan = optimise(problem)
    assert max(plan.import_w) <= 1_000 + 1e-6
    assert plan.discharge_w[2] == pytest.approx(1_500)


def test_export_limit_is_respected() -> None:
    site = Site("house", None, export_limit_w=1_000)
    problem = hourly(pv=[4_000] * 2, load=[0] * 2, buy=[0.5] * 2, sell=[0.3] * 2, site=site)
    plan = optimise(problem)
    assert plan.export_w == pytest.approx([1_000, 1_000])
    assert plan.curtailment_w == pytest.approx([3_000, 3_000])


def test_no_simultaneous_import_and_export_when_selling_pays_more_than_buying() -> None:
    problem = hourly(
        pv=[2_000] * 2,
        load=[500] * 2,
        buy=[-0.1] * 2,
        sell=[0.2] * 2,
        site=Site("house", None, import_limit_w=5_000, export_limit_w=5_000),
    )
    plan = optimise(problem)
    for imported, exported in zip(plan.import_w, plan.export_w, strict=True):
        assert min(imported, exported) < 1e-6


def test_next_interval_gives_the_first_step_set_points() -> None:
    problem = hourly(
        pv=[0] * 8,
        load=[500] * 8,
        buy=[0.20] * 4 + [1.00] * 4,
        sell=[0.05] * 8,
        initial_soc_fraction=0.1,
    )
    plan = optimise(problem)
    step = plan.next_interval()
    assert step.import_wh == pytest.approx(plan.import_w[0])  # one-hour steps
    assert step.battery_power_w == pytest.approx(plan.charge_w[0] - plan.discharge_w[0])
    assert step.battery_command().power_w == step.battery_power_w


def test_marginal_value_is_the_cost_of_serving_one_more_kwh() -> None:
    problem = hourly(
        pv=[0] * 8,
        load=[500] * 8,
        buy=[0.20] * 4 + [1.00] * 4,
        sell=[0.05] * 8,
        initial_soc_fraction=0.1,
    )
    plan = optimise(problem)
    assert plan.marginal_value_per_kwh is not None
    assert plan.marginal_value_per_kwh[0] == pytest.approx(0.20)
    # evening energy comes from night energy through two conversions
    assert plan.marginal_value_per_kwh[6] == pytest.approx(0.20 / 0.95 / 0.95)


def test_battery_barred_from_grid_charging_waits_for_the_sun() -> None:
    site = Site("house", battery(grid_charging=False))
    problem = hourly(
        pv=[0, 0, 1_500, 0],
        load=[300, 300, 300, 1_500],
        buy=[0.2, 0.2, 0.5, 1.5],
        sell=[0.05] * 4,
        initial_soc_fraction=0.1,
        site=site,
    )
    plan = optimise(problem)
    assert plan.charge_w[:2] == pytest.approx([0, 0], abs=1e-6)
    assert plan.charge_w[2] == pytest.approx(1_200)


def test_battery_barred_from_feeding_the_grid_never_makes_the_site_export() -> None:
    site = Site("house", battery(grid_discharging=False))
    problem = hourly(
        pv=[0] * 2,
        load=[200] * 2,
        buy=[0.5] * 2,
        sell=[2.0] * 2,
        initial_soc_fraction=0.9,
        site=site,
    )
    plan = optimise(problem)
    assert plan.export_w == pytest.approx([0, 0], abs=1e-6)
    assert plan.discharge_w == pytest.approx([200, 200])


@pytest.mark.parametrize(("cycle_cost", "cycles"), [(0.9, False), (0.1, True)])
def test_battery_cycles_only_when_the_spread_pays_for_its_wear(
    cycle_cost: float, cycles: bool
) -> None:
    site = Site("house", battery(cycle_cost_per_kwh=cycle_cost))
    problem = hourly(
        pv=[0] * 2,
        load=[0, 1_000],
        buy=[0.2, 1.0],
        sell=[0.0] * 2,
        initial_soc_fraction=0.1,
        target_soc_fraction=0.1,
        site=site,
    )
    # Shifting a kWh costs 0.2 / 0.95 / 0.95 = 0.22 plus the wear, against 1.0 from the grid.
    assert (optimise(problem).discharge_w[1] > 0) is cycles
