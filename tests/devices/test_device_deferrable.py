"""Relay-switched deferrable loads: what the planner is asked to place, and where it puts them.

A board's `[devices]` loads join its `[site.der]` deferrable loads (der.equipment.with_devices)
and are placed by the same DailyLoads: a relay is off or on at the load's power, for whole
steps.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from meterchain.agents.messages import TariffNotice
from meterchain.agents.planning import DerPlanner
from meterchain.config import DevicesConfig, SwitchedLoadConfig
from meterchain.der.equipment import DailyLoads, with_devices
from meterchain.der.site import Site

NINE_LOCAL = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # 09:00 in Fortaleza (UTC-3)
HEATER = SwitchedLoadConfig(
    name="heater",
    url="relay+tcp://127.0.0.1:502?unit=3",
    power_w=2000,
    energy_wh=1800,
    start_hour=10,
    end_hour=16,
)
TARIFFS = TariffNotice(retail_price=0.95, feed_in_price=0.25)


def daily() -> DailyLoads:
    equipment = with_devices(None, DevicesConfig(loads=[HEATER]))
    assert equipment is not None
    return DailyLoads(equipment.deferrable_loads, equipment.timezone, 900)


def planner(forecast: object = None) -> DerPlanner:
    return DerPlanner(
        Site(name="m1"),
        forecast or (lambda _start, n: ([0.0] * n, [400.0] * n)),  # type: ignore[arg-type]
        meter_id="m1",
        equipment=with_devices(None, DevicesConfig(loads=[HEATER])),
    )


def test_the_window_and_the_energy_are_placed_in_whole_relay_steps() -> None:
    (load,) = daily().horizon(NINE_LOCAL, 96)
    assert (load.start_step, load.end_step) == (4, 28)  # 10:00 to 16:00
    assert load.energy_wh == 2000  # 1.8 kWh rounds up to four 15-minute steps of 500 Wh
    assert load.least_energy_wh == 1800
    assert load.min_power_w == load.max_power_w == 2000  # a relay: off or on


def test_what_ran_today_is_not_asked_for_again() -> None:
    loads = daily()
    for start in (
        datetime(2026, 11, 24, 13, 0, tzinfo=UTC),
        datetime(2026, 11, 24, 13, 15, tzinfo=UTC),
    ):
        loads.record(start, {"heater": 2000})  # two steps on: 1 kWh
    (load,) = loads.horizon(datetime(2026, 11, 24, 14, 0, tzinfo=UTC), 96)
    assert load.energy_wh == 1000 and load.start_step == 0


def test_a_window_almost_over_asks_only_what_fits() -> None:
    late = datetime(2026, 11, 24, 18, 30, tzinfo=UTC)  # 15:30 local: two steps left
    (load,) = daily().horizon(late, 96)
    assert (load.start_step, load.end_step, load.energy_wh) == (0, 2, 1000)


def test_after_the_window_comes_tomorrows() -> None:
    loads = daily()
    for quarter in range(4):
        loads.record(datetime(2026, 11, 24, 14, 15 * quarter, tzinfo=UTC), {"heater": 2000})
    loads.record(datetime(2026, 11, 24, 15, 0, tzinfo=UTC), {})  # and off since
    (load,) = loads.horizon(datetime(2026, 11, 24, 20, 0, tzinfo=UTC), 96)
    assert load.start_step == 17 * 4 and load.energy_wh == 2000  # from 17:00 to 10:00 tomorrow


def test_the_plan_runs_the_heater_when_the_window_closes() -> None:
    late = datetime(2026, 11, 24, 18, 30, tzinfo=UTC)
    plan = planner().plan(late, TARIFFS, None, late)
    assert plan.deferrable_power_w == {"heater": pytest.approx(2000)}
    assert plan.expected_import_wh == pytest.approx((400 + 2000) / 4)


def test_the_plan_puts_the_heater_in_the_sun() -> None:
    def forecast(start: datetime, steps: int) -> tuple[list[float], list[float]]:
        # 3 kW of PV from 11:00 to 13:00 local (steps 8..15 from 09:00), nothing else
        return [3000.0 if 8 <= t < 16 else 0.0 for t in range(steps)], [300.0] * steps

    problem = planner(forecast).problem(NINE_LOCAL, TARIFFS, None)
    from meterchain.der.optimiser import optimise

    schedule = optimise(problem)
    on_steps = [t for t, w in enumerate(schedule.deferrable_w["heater"]) if w > 1]
    assert on_steps and all(8 <= t < 16 for t in on_steps)  # only on PV surplus


def test_a_deferrable_load_needs_both_power_and_energy() -> None:
    with pytest.raises(ValidationError, match="needs power_w and energy_wh"):
        SwitchedLoadConfig(name="pump", url="relay+tcp://127.0.0.1:502?coil=1", power_w=800)
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        SwitchedLoadConfig(name="pump", url="relay+tcp://h:1?coil=1", timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="a load is reached over relay"):
        SwitchedLoadConfig(name="pump", url="sunspec+tcp://127.0.0.1:502")
