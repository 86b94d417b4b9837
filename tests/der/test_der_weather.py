"""The offline outdoor forecast: the bundled typical day, corrected by what the board measures.

Measurements above the typical day lift the next hours' forecast by their mean error, fading as
exp(−lead / 6 h) (docs/der.md, "Outdoor temperature, offline"); only the last 3 hours count.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from meterchain.agents.messages import TariffNotice
from meterchain.agents.planning import AirConditionerControl, DerPlanner
from meterchain.clock import ManualClock
from meterchain.config import AirConditionerConfig
from meterchain.der.site import InvalidSite, Site
from meterchain.der.weather import OutdoorForecaster, corrected_forecast_c, typical_outdoor_c
from meterchain.sim.aircon import BoardLink, SimulatedAirConditioner
from meterchain.sim.profiles import StepProfile

NOON = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # 12:00 in Fortaleza
STEP_S = 900
STEPS = 48  # twelve hours


def fade(k: int) -> float:
    """What is left of a bias at the middle of step k (15-minute steps, 6 h fade)."""
    return math.exp(-(k + 0.5) * 0.25 / 6.0)


def typical_at(moment: datetime) -> float:
    return typical_outdoor_c(moment - timedelta(seconds=0.5), 1, 1)[0]


def test_a_measured_bias_lifts_the_forecast_and_fades_with_the_lead_time() -> None:
    typical = typical_outdoor_c(NOON, STEPS, STEP_S)
    corrected = corrected_forecast_c(
        typical, measured_recent_c=[33.0, 34.0, 35.0], typical_recent_c=[30.0, 31.0, 32.0],
        step_s=STEP_S,
    )  # fmt: skip
    lift = [c - t for c, t in zip(corrected, typical, strict=True)]
    assert lift == pytest.approx([3.0 * fade(k) for k in range(STEPS)])
    assert lift[0] > 2.9 and lift[23] == pytest.approx(3.0 * math.exp(-5.875 / 6))  # ~6 h: 1/e
    assert all(a > b for a, b in pairwise(lift))  # fading, never growing


def test_without_measurements_the_forecast_is_the_typical_day() -> None:
    typical = typical_outdoor_c(NOON, STEPS, STEP_S)
    assert (
        corrected_forecast_c(typical, measured_recent_c=[], typical_recent_c=[], step_s=STEP_S)
        == typical
    )
    assert OutdoorForecaster().forecast(NOON, STEPS, STEP_S) == typical


def test_the_forecaster_corrects_by_its_recent_measurements() -> None:
    forecaster = OutdoorForecaster()
    for quarter in range(12):  # three hours of readings, each 3 °C above the typical day
        moment = NOON - timedelta(hours=3) + timedelta(minutes=15 * (quarter + 1))
        forecaster.observe(moment, typical_at(moment) + 3.0)
    typical = typical_outdoor_c(NOON, STEPS, STEP_S)
    forecast = forecaster.forecast(NOON, STEPS, STEP_S)
    lift = [f - t for f, t in zip(forecast, typical, strict=True)]
    assert lift == pytest.approx([3.0 * fade(k) for k in range(STEPS)], abs=1e-9)


def test_measurements_older_than_the_window_no_longer_count() -> None:
    forecaster = OutdoorForecaster()
    old = NOON - timedelta(hours=5)
    forecaster.observe(old, typical_at(old) + 10.0)  # a hot spell five hours ago
    recent = NOON - timedelta(minutes=30)
    forecaster.observe(recent, typical_at(recent) - 2.0)  # now cooler than usual
    lift = forecaster.forecast(NOON, 4, STEP_S)[0] - typical_outdoor_c(NOON, 4, STEP_S)[0]
    assert lift == pytest.approx(-2.0 * fade(0))


def test_a_measurement_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(InvalidSite, match="finite number"):
        OutdoorForecaster().observe(NOON, math.nan)


async def test_the_planner_plans_with_the_outdoor_temperature_its_sensor_measured() -> None:
    """A board whose outdoor sensor reads 3 °C above the typical day plans its air conditioner
    with a warmer afternoon: the thermal load's outdoor forecast is lifted, fading."""
    clock = ManualClock(NOON)
    hot = typical_at(NOON) + 3.0
    outdoor = StepProfile(NOON - timedelta(hours=1), STEP_S, tuple([hot] * 200))
    config = AirConditionerConfig(initial_c=26.0)
    aircon = SimulatedAirConditioner("ac", config, clock, outdoor, "America/Fortaleza")
    control = AirConditionerControl(
        "ac", config, BoardLink(aircon), "America/Fortaleza", OutdoorForecaster()
    )
    planner = DerPlanner(
        Site("house"),
        lambda _start, steps: ([0.0] * steps, [400.0] * steps),
        meter_id="m1",
        horizon_steps=STEPS,
        air_conditioners=[control],
    )
    tariffs = TariffNotice(retail_price=0.95, feed_in_price=0.25)
    before = planner.problem(NOON, tariffs, None, {"ac": 26.0}).thermal_loads[0].outdoor_c
    await planner.plan_async(NOON, tariffs, None, NOON)  # reads the sensor: 3 °C above
    after = planner.problem(NOON, tariffs, None, {"ac": 26.0}).thermal_loads[0].outdoor_c
    lift = [a - b for a, b in zip(after, before, strict=True)]
    assert lift == pytest.approx([3.0 * fade(k) for k in range(STEPS)], abs=1e-6)
