"""Power profiles for simulated households, generated offline.

PV comes from pvlib's clear-sky model (Ineichen, with the Linke turbidity data pvlib ships)
scaled by a random clearness per day and cloud flicker within it; loads come from the bundled
BDEW standard load profiles (H0 households, G0 commerce) scaled to a daily energy, with noise.
Everything is a pure function of its arguments and a seeded random generator.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib.resources import files

import numpy as np
import pandas as pd
import pvlib

FORTALEZA = (-3.7319, -38.5267, 21.0, "America/Fortaleza")
PERFORMANCE_RATIO = 0.8  # inverter, wiring, soiling and heat losses of a rooftop system
LOAD_KINDS = ("h0", "g0")


@dataclass(frozen=True)
class StepProfile:
    """Values held constant over each step: a callable from a moment to watts."""

    start: datetime
    step_s: int
    values_w: tuple[float, ...]

    def __call__(self, moment: datetime) -> float:
        index = int((moment - self.start).total_seconds() // self.step_s)
        if index < 0:
            return self.values_w[0]
        return self.values_w[min(index, len(self.values_w) - 1)]

    def energy_wh(self, first_step: int, steps: int) -> float:
        """Energy over `steps` steps from `first_step`."""
        return sum(self.values_w[first_step : first_step + steps]) * self.step_s / 3600


@cache
def _shapes() -> dict[tuple[str, str], np.ndarray]:
    """(kind, period) -> array of 7 weekdays × 96 quarter-hours, mean 1."""
    text = files("meterchain.sim").joinpath("data/bdew_standard_load_profiles.csv").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    table: dict[tuple[str, str], np.ndarray] = {}
    for row in csv.DictReader(lines):
        for kind in LOAD_KINDS:
            shape = table.setdefault((kind, row["period"]), np.zeros((7, 96)))
            shape[int(row["weekday"]) - 1, int(row["quarter"])] = float(row[kind])
    return {key: shape / shape.mean() for key, shape in table.items()}


def _local_times(start: datetime, steps: int, step_s: int, timezone: str) -> pd.DatetimeIndex:
    index = pd.date_range(start, periods=steps, freq=f"{step_s}s")
    return index.tz_convert(timezone)


def household_load_w(
    start: datetime,
    steps: int,
    step_s: int,
    daily_kwh: float,
    rng: np.random.Generator,
    kind: str = "h0",
    timezone: str = FORTALEZA[3],
    noise: float = 0.25,
) -> np.ndarray:
    """Demand per step (W): a standard profile scaled to `daily_kwh`, with AR(1) noise.

    Fortaleza has no winter, so the summer profile is used all year.
    """
    if kind not in LOAD_KINDS:
        raise ValueError(f"unknown load profile {kind!r}; choose one of {', '.join(LOAD_KINDS)}")
    shape = _shapes()[(kind, "summer")]
    local = _local_times(start, steps, step_s, timezone)
    quarters = (local.hour * 4 + local.minute // 15).to_numpy()
    weekdays = local.day_of_week.to_numpy()
    base = shape[weekdays, quarters] * daily_kwh * 1000 / 24
    wiggle = np.empty(steps)
    state = 0.0
    for i in range(steps):
        state = 0.7 * state + rng.normal(0.0, noise)
        wiggle[i] = state
    return np.asarray(np.clip(base * np.exp(wiggle - noise**2), 0.05 * base.mean(), None))


def pv_power_w(
    start: datetime,
    steps: int,
    step_s: int,
    kwp: float,
    rng: np.random.Generator,
    location: tuple[float, float, float, str] = FORTALEZA,
    cloudiness: float = 0.3,
) -> np.ndarray:
    """PV output per step (W) of a near-horizontal array of `kwp` peak kW.

    `cloudiness` 0 gives clear sky every day; larger values lower and roughen the days.
    """
    if kwp <= 0:
        return np.zeros(steps)
    latitude, longitude, altitude, timezone = location
    site = pvlib.location.Location(latitude, longitude, timezone, altitude)
    times = _local_times(start + timedelta(seconds=step_s / 2), steps, step_s, timezone)
    ghi = site.get_clearsky(times, model="ineichen")["ghi"].to_numpy()
    days = (times.normalize() - times.normalize()[0]).days.to_numpy()
    day_clearness = 1 - cloudiness * rng.beta(2, 5, size=int(days.max()) + 1)
    flicker = np.clip(1 - cloudiness * rng.beta(1, 6, size=steps), 0.1, 1)
    factor = day_clearness[days] * flicker
    return np.asarray(kwp * ghi * PERFORMANCE_RATIO * factor)
