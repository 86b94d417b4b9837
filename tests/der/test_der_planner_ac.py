"""A board's planner runs its air conditioner: it reads the room, plans, and sets the power;
under thermostat control it only forecasts the thermostat. The simulated room obeys the same
physics as the plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from meterchain.agents.messages import TariffNotice
from meterchain.agents.planning import AirConditionerControl, DerPlanner
from meterchain.clock import ManualClock
from meterchain.config import AirConditionerConfig, Household, Scenario
from meterchain.der.optimiser import optimise
from meterchain.der.site import Site
from meterchain.der.thermal import temperatures_c
from meterchain.der.weather import OutdoorForecaster
from meterchain.sim.aircon import (
    BoardLink,
    LoadWithAirConditioner,
    SimulatedAirConditioner,
    outdoor_truth_c,
)
from meterchain.sim.profiles import StepProfile

NOON = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # 12:00 in Fortaleza
TARIFFS = TariffNotice(retail_price=0.95, feed_in_price=0.25)
STEPS = 32  # eight hours of quarter hours


def street(control: str) -> tuple[DerPlanner, SimulatedAirConditioner, ManualClock]:
    clock = ManualClock(NOON)
    outdoor = StepProfile(NOON, 900, tuple([31.0] * 16 + [28.0] * 80))
    config = AirConditionerConfig(initial_c=26.0, control=control)  # type: ignore[arg-type]
    aircon = SimulatedAirConditioner("ac", config, clock, outdoor, "America/Fortaleza")
    # 3 kW of PV until 16:00, then none; the house draws 400 W
    pv = [3_000.0] * 16 + [0.0] * 80
    planner = DerPlanner(
        Site("house"),
        lambda start, steps: (pv[:steps], [400.0] * steps),
        meter_id="m1",
        horizon_steps=STEPS,
        air_conditioners=[
            AirConditionerControl(
                "ac", config, BoardLink(aircon), "America/Fortaleza", OutdoorForecaster()
            )
        ],
    )
    return planner, aircon, clock


async def test_planned_air_conditioner_pre_cools_on_the_afternoon_surplus() -> None:
    planner, aircon, _ = street("plan")
    plan = await planner.plan_async(NOON, TARIFFS, None, NOON)
    assert aircon.power_w(NOON) == pytest.approx(plan.thermal_power_w["ac"])
    # over the horizon: it cools on PV that would sell at 0.25, before an evening at 0.95
    schedule = optimise(planner.problem(NOON, TARIFFS, None, {"ac": 26.0}))
    power, room = schedule.thermal_w["ac"], schedule.temperature_c["ac"]
    assert sum(power[:16]) > sum(power[16:])
    assert room[15] < 26.0 - 0.5  # colder than the evening asks, when the sun goes


async def test_the_plans_problem_starts_from_the_measured_room() -> None:
    planner, aircon, clock = street("plan")
    aircon.set_power_w(0.0)
    clock.set(NOON + timedelta(hours=1))  # an hour without cooling: the room warmed up
    rooms = {"ac": aircon.temperature_c()}
    problem = planner.problem(NOON + timedelta(hours=1), TARIFFS, None, rooms)
    assert problem.thermal_loads[0].initial_c == pytest.approx(rooms["ac"])
    assert rooms["ac"] > 26.0


async def test_thermostat_control_holds_the_band_and_the_plan_forecasts_its_draw() -> None:
    planner, aircon, clock = street("thermostat")
    plan = await planner.plan_async(NOON, TARIFFS, None, NOON)
    assert plan.thermal_power_w == {}
    problem = planner.problem(NOON, TARIFFS, None, {"ac": 26.0})
    assert problem.thermal_loads == ()
    assert problem.load_w[0] > 400.0  # the thermostat's expected draw is in the load
    clock.set(NOON + timedelta(minutes=15))
    assert aircon.temperature_c() <= 28.0 + 1e-6  # away: the band's top is 28 °C


def test_the_simulated_room_follows_the_plans_physics() -> None:
    clock = ManualClock(NOON)
    outdoor = StepProfile(NOON, 900, (30.0, 31.0, 32.0, 31.5))
    config = AirConditionerConfig(initial_c=27.0)
    aircon = SimulatedAirConditioner("ac", config, clock, outdoor, "America/Fortaleza")
    powers = [800.0, 0.0, 1_200.0, 300.0]
    seen = []
    for k, power in enumerate(powers):
        aircon.set_power_w(power)
        clock.set(NOON + timedelta(minutes=15 * (k + 1)))
        seen.append(aircon.temperature_c())
    planner = AirConditionerControl(
        "ac", config, BoardLink(aircon), "America/Fortaleza", OutdoorForecaster()
    )
    load = planner.load(NOON, 4, 900, 27.0)
    expected = temperatures_c(
        load.__class__(**{**load.__dict__, "outdoor_c": (30.0, 31.0, 32.0, 31.5)}), powers, 0.25
    )
    assert seen == pytest.approx(expected, abs=1e-9)
    assert aircon.energy_wh == pytest.approx(sum(powers) * 0.25)


def test_the_meter_sees_the_air_conditioners_power_on_top_of_the_load() -> None:
    clock = ManualClock(NOON)
    base = StepProfile(NOON, 900, (500.0, 500.0))
    aircon = SimulatedAirConditioner(
        "ac",
        AirConditionerConfig(),
        clock,
        StepProfile(NOON, 900, (30.0, 30.0)),
        "America/Fortaleza",
    )
    aircon.set_power_w(700.0)
    assert LoadWithAirConditioner(base, aircon)(NOON + timedelta(minutes=5)) == pytest.approx(1_200)


def test_the_outdoor_truth_is_reproducible_and_near_the_typical_day() -> None:
    a = outdoor_truth_c(NOON, 96, 900, np.random.default_rng(1), "America/Fortaleza")
    b = outdoor_truth_c(NOON, 96, 900, np.random.default_rng(1), "America/Fortaleza")
    assert a.values_w == b.values_w
    assert min(a.values_w) > 20.0 and max(a.values_w) < 36.0


def test_a_scenario_household_takes_an_air_conditioner_and_refuses_a_wrong_band() -> None:
    household = Household(meter_id="30010001", air_conditioner={"control": "thermostat"})  # type: ignore[arg-type]
    assert household.air_conditioner is not None
    assert household.air_conditioner.control == "thermostat"
    with pytest.raises(ValueError, match="comfort temperatures must satisfy"):
        AirConditionerConfig(comfort_min_c=27.0, comfort_max_c=26.0)
    scenario = Scenario.model_validate(
        {
            "name": "x",
            "start": "2026-11-24T03:00:00Z",
            "households": [{"meter_id": "30010001", "air_conditioner": {}}],
        }
    )
    assert scenario.households[0].air_conditioner == AirConditionerConfig()
