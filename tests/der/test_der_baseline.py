"""The rule-based baseline does what a plain hybrid inverter does, and nothing cleverer."""

from __future__ import annotations

import pytest

from meterchain.der import (
    Battery,
    DeferrableLoad,
    DerProblem,
    InfeasibleProblem,
    Site,
    run_baseline,
)

BATTERY = Battery(10_000, 2_000, 2_000, 0.95, 0.95, 0.1, 0.9)


def hourly(pv: list[float], load: list[float], **extra: object) -> DerProblem:
    steps = len(pv)
    values: dict[str, object] = {
        "site": Site("house", BATTERY),
        "buy_price_per_kwh": [0.5] * steps,
        "sell_price_per_kwh": [0.2] * steps,
        "initial_soc_fraction": 0.5,
        "step_s": 3600,
    }
    values.update(extra)
    return DerProblem(pv_w=pv, load_w=load, **values)  # type: ignore[arg-type]


def test_surplus_charges_the_battery_before_anything_is_exported() -> None:
    plan = run_baseline(hourly([3_000], [500]))
    assert plan.charge_w == (2_000,)
    assert plan.export_w == (500,)


def test_deficit_is_covered_by_the_battery_before_the_grid() -> None:
    plan = run_baseline(hourly([0], [2_500]))
    assert plan.discharge_w == (2_000,)
    assert plan.import_w == (500,)


def test_battery_stops_discharging_at_its_minimum() -> None:
    plan = run_baseline(hourly([0, 0], [1_000, 1_000], initial_soc_fraction=0.15))
    assert plan.soc_wh[-1] == pytest.approx(1_000)
    assert plan.discharge_w[0] == pytest.approx(500 * 0.95)
    assert plan.discharge_w[1] == 0


def test_baseline_never_charges_from_the_grid_even_when_it_is_cheap() -> None:
    plan = run_baseline(hourly([0, 0], [300, 300], buy_price_per_kwh=[0.01, 2.0]))
    assert plan.charge_w == (0, 0)


def test_negative_sell_price_curtails_instead_of_exporting() -> None:
    plan = run_baseline(hourly([5_000], [500], sell_price_per_kwh=[-0.1], initial_soc_fraction=0.9))
    assert plan.export_w == (0,)
    assert plan.curtailment_w == (4_500,)


def test_deferrable_load_starts_when_its_window_opens() -> None:
    washer = DeferrableLoad("washer", energy_wh=1_500, start_step=1, end_step=4, max_power_w=1_000)
    plan = run_baseline(hourly([0] * 4, [0] * 4, deferrable_loads=[washer]))
    assert plan.deferrable_w["washer"] == (0, 1_000, 500, 0)


def test_surplus_only_load_short_of_sun_is_noted() -> None:
    pump = DeferrableLoad(
        "pool", energy_wh=2_000, start_step=0, end_step=2, max_power_w=2_000, surplus_only=True
    )
    plan = run_baseline(hourly([800, 0], [300, 300], deferrable_loads=[pump]))
    assert plan.deferrable_w["pool"] == (500, 0)
    assert any("'pool' got only 500 of 2000 Wh" in note for note in plan.notes)


def test_baseline_that_would_break_the_import_limit_says_where() -> None:
    problem = hourly([0], [5_000], site=Site("house", None, import_limit_w=3_000))
    with pytest.raises(InfeasibleProblem, match="step 0: it would import 5000 W"):
        run_baseline(problem)
