"""A site or forecast that cannot be right fails when it is built, naming the field."""

from __future__ import annotations

import math

import pytest

from meterchain.der import Battery, DeferrableLoad, DerProblem, InvalidSite, Site


def problem(**changes: object) -> DerProblem:
    values: dict[str, object] = {
        "site": Site("house", Battery(5_000, 2_000, 2_000)),
        "pv_w": [0.0] * 4,
        "load_w": [100.0] * 4,
        "buy_price_per_kwh": [0.5] * 4,
        "sell_price_per_kwh": [0.2] * 4,
    }
    values.update(changes)
    return DerProblem(**values)  # type: ignore[arg-type]


def test_series_of_different_lengths_are_rejected_with_their_lengths() -> None:
    with pytest.raises(InvalidSite, match="load_w has 3"):
        problem(load_w=[1.0, 2.0, 3.0])


def test_negative_pv_is_rejected_with_its_step() -> None:
    with pytest.raises(InvalidSite, match=r"pv_w\[2\] must not be negative"):
        problem(pv_w=[0.0, 0.0, -5.0, 0.0])


def test_nan_price_is_rejected() -> None:
    with pytest.raises(InvalidSite, match=r"buy_price_per_kwh\[0\] must be a finite number"):
        problem(buy_price_per_kwh=[math.nan, 0.5, 0.5, 0.5])


def test_negative_prices_are_accepted() -> None:
    assert problem(sell_price_per_kwh=[-0.1] * 4).sell_price_per_kwh == (-0.1,) * 4


def test_series_are_stored_as_tuples() -> None:
    assert isinstance(problem().pv_w, tuple)


def test_efficiency_above_one_is_rejected() -> None:
    with pytest.raises(InvalidSite, match=r"charge_efficiency must be in \(0, 1\], got 1.2"):
        Battery(5_000, 2_000, 2_000, charge_efficiency=1.2)


def test_swapped_soc_bounds_are_rejected() -> None:
    with pytest.raises(InvalidSite, match=r"soc_min_fraction 0\.9 is above soc_max_fraction 0\.2"):
        Battery(5_000, 2_000, 2_000, soc_min_fraction=0.9, soc_max_fraction=0.2)


def test_start_soc_outside_the_bounds_is_accepted() -> None:
    assert problem(initial_soc_fraction=0.02).initial_soc_wh == pytest.approx(100)


def test_target_outside_the_bounds_is_rejected() -> None:
    with pytest.raises(InvalidSite, match="target_soc_fraction 1 is outside"):
        problem(target_soc_fraction=1.0)


def test_target_without_a_battery_is_rejected() -> None:
    with pytest.raises(InvalidSite, match="has no battery"):
        problem(site=Site("house"), target_soc_fraction=0.5)


def test_deferrable_window_past_the_horizon_is_rejected() -> None:
    late = DeferrableLoad("ev", energy_wh=1_000, start_step=2, end_step=9, max_power_w=3_000)
    with pytest.raises(InvalidSite, match=r"'ev' window \[2, 9\) ends after the horizon of 4"):
        problem(deferrable_loads=[late])


def test_empty_deferrable_window_is_rejected() -> None:
    with pytest.raises(InvalidSite, match="is empty or negative"):
        DeferrableLoad("ev", energy_wh=1_000, start_step=3, end_step=3, max_power_w=3_000)


def test_minimum_power_above_maximum_is_rejected() -> None:
    with pytest.raises(InvalidSite, match="min_power_w 4000 is above its max_power_w 3000"):
        DeferrableLoad("ev", 1_000, 0, 2, max_power_w=3_000, min_power_w=4_000)


def test_duplicate_deferrable_names_are_rejected() -> None:
    load = DeferrableLoad("ev", energy_wh=100, start_step=0, end_step=2, max_power_w=3_000)
    with pytest.raises(InvalidSite, match="repeated: \\['ev'\\]"):
        problem(deferrable_loads=[load, load])


def test_negative_import_limit_is_rejected() -> None:
    with pytest.raises(InvalidSite, match="import_limit_w must be at least 0"):
        Site("house", import_limit_w=-1)
