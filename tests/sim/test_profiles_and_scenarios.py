"""Profiles are plausible and reproducible; scenario files load or say what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from meterchain.config import ConfigError, Scenario, load_toml
from meterchain.sim.profiles import StepProfile, household_load_w, pv_power_w

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
MIDNIGHT_FORTALEZA = datetime(2026, 11, 24, 3, tzinfo=UTC)


def test_pv_is_zero_at_night_and_peaks_near_noon() -> None:
    pv = pv_power_w(MIDNIGHT_FORTALEZA, 96, 900, 4.0, np.random.default_rng(1), cloudiness=0)
    assert pv[:20].max() == 0 and pv[-20:].max() == 0  # before 05:00 and after 19:00 local
    assert 44 <= int(np.argmax(pv)) <= 52  # 11:00-13:00 local
    assert 3000 < pv.max() < 4000  # 4 kWp, performance ratio 0.8, near the equator
    assert 18 < pv.sum() * 0.25 / 1000 < 26  # about 5 kWh per kWp per day in Fortaleza


def test_household_load_follows_the_daily_energy_with_an_evening_peak() -> None:
    load = household_load_w(MIDNIGHT_FORTALEZA, 96 * 7, 900, 8.0, np.random.default_rng(2))
    daily_kwh = load.sum() * 0.25 / 1000 / 7
    assert 6.5 < daily_kwh < 9.5
    mean_day = load.reshape(7, 96).mean(axis=0)
    assert mean_day[72:88].mean() > mean_day[8:20].mean()  # 18-22 h above 02-05 h


def test_profiles_are_reproducible_from_the_seed() -> None:
    first = household_load_w(MIDNIGHT_FORTALEZA, 96, 900, 8.0, np.random.default_rng(5))
    second = household_load_w(MIDNIGHT_FORTALEZA, 96, 900, 8.0, np.random.default_rng(5))
    assert np.array_equal(first, second)


def test_step_profile_holds_each_value_for_its_step() -> None:
    profile = StepProfile(MIDNIGHT_FORTALEZA, 900, (100.0, 200.0))
    assert profile(MIDNIGHT_FORTALEZA) == 100.0
    assert profile(datetime(2026, 11, 24, 3, 15, tzinfo=UTC)) == 200.0
    assert profile.energy_wh(0, 2) == pytest.approx(75.0)


@pytest.mark.parametrize("name", ["fortaleza-street-10.toml", "fortaleza-100.toml"])
def test_shipped_scenarios_load(name: str) -> None:
    scenario = load_toml(SCENARIOS / name, Scenario)
    households = scenario.all_households()
    assert len(households) == (10 if name.endswith("-10.toml") else 100)
    assert {h.protocol for h in households} == {"modbus", "dlms", "iec62056-21", "nbr14522"}
    assert scenario.intervals == 96


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_scenario_loads(path: Path) -> None:
    scenario = load_toml(path, Scenario)
    assert scenario.all_households(), path.name


def test_the_prepaid_scenario_has_a_household_cut_and_reconnected_and_one_never_cut() -> None:
    scenario = load_toml(SCENARIOS / "fortaleza-prepaid.toml", Scenario)
    prepaid = [h for h in scenario.all_households() if h.prepaid]
    assert any(h.top_ups and not h.never_cut for h in prepaid)  # runs out, a voucher later
    assert any(h.never_cut for h in prepaid)
    assert scenario.prepaid.cut_from_hour >= 6  # never cut in the night


def test_the_community_solar_scenario_funds_a_plant_that_is_one_of_its_meters() -> None:
    scenario = load_toml(SCENARIOS / "fortaleza-community-solar.toml", Scenario)
    assert scenario.fund is not None
    ids = {h.meter_id for h in scenario.all_households()}
    assert scenario.fund.plant_meter_id in ids
    assert set(scenario.fund.backers) <= ids and len(scenario.fund.backers) >= 2


def test_a_typo_in_a_scenario_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "x"\nstart = "2026-11-24T03:00:00Z"\n'
        '[[households]]\nmeter_id = "30010001"\npv_kwpp = 3\n'
    )
    with pytest.raises(ConfigError, match=r"households\.0\.pv_kwpp"):
        load_toml(path, Scenario)


def test_duplicate_meter_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    path.write_text(
        'name = "x"\nstart = "2026-11-24T03:00:00Z"\n'
        '[[households]]\nmeter_id = "30010001"\n[[households]]\nmeter_id = "30010001"\n'
    )
    with pytest.raises(ConfigError, match="used twice: 30010001"):
        load_toml(path, Scenario)
