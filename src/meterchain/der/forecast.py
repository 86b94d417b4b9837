"""Simple, honest forecasts for the optimiser: no model that claims more than the data supports.

* Load: yesterday's profile (persistence) blended with the mean of the same time of day over the
  last few days. Persistence catches today's routine; the average damps one odd day.
* PV: a clear-sky profile from pvlib (offline: its turbidity tables ship with the package),
  scaled by the clear-sky index measured over the recent daylight hours — how much of the
  clear-sky power the panels actually gave.

All are pure functions of their inputs; history series end just before the first forecast step.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import datetime

from meterchain.der.site import DEFAULT_STEP_S, DEFAULT_STEPS, InvalidSite

STEPS_PER_DAY = 96


def load_forecast_w(
    history_w: Sequence[float],
    *,
    horizon_steps: int = DEFAULT_STEPS,
    steps_per_day: int = STEPS_PER_DAY,
    days: int = 7,
    persistence_weight: float = 0.5,
) -> tuple[float, ...]:
    """Forecast load per step: `persistence_weight` × yesterday + the rest × the days' mean.

    With less than a day of history there is no profile to repeat, so the forecast is flat at
    the history's mean: the honest answer when nothing more is known.
    """
    if not history_w:
        raise InvalidSite("load_forecast_w needs at least one measured value of history")
    if not 0.0 <= persistence_weight <= 1.0:
        raise InvalidSite(f"persistence_weight must be in [0, 1], got {persistence_weight:g}")
    if horizon_steps <= 0 or steps_per_day <= 0 or days <= 0:
        raise InvalidSite("horizon_steps, steps_per_day and days must be positive")
    n = len(history_w)
    if n < steps_per_day:
        mean = sum(history_w) / n
        return tuple(mean for _ in range(horizon_steps))
    forecast = []
    for k in range(horizon_steps):
        slot = k % steps_per_day
        same_slot = [
            history_w[n + slot - d * steps_per_day]
            for d in range(1, days + 1)
            if n + slot - d * steps_per_day >= 0
        ]
        yesterday = same_slot[0]
        average = sum(same_slot) / len(same_slot)
        forecast.append(
            max(0.0, persistence_weight * yesterday + (1 - persistence_weight) * average)
        )
    return tuple(forecast)


def clear_sky_pv_w(
    start: datetime,
    *,
    latitude: float,
    longitude: float,
    peak_power_w: float,
    steps: int = DEFAULT_STEPS,
    step_s: int = DEFAULT_STEP_S,
    tilt_deg: float | None = None,
    azimuth_deg: float | None = None,
    altitude_m: float = 0.0,
    system_efficiency: float = 0.85,
) -> tuple[float, ...]:
    """Clear-sky AC power per step (W, mean over the step, sampled at its middle).

    Plane of array: tilted at |latitude| (at least 5° so rain cleans it) towards the equator by
    default. `system_efficiency` lumps inverter, wiring, soiling and temperature losses.
    """
    # Imported here: pandas and pvlib are slow to import and heavy, and only this function
    # needs them (a board's forecast uses meterchain.board.solar, numpy only).
    import pandas as pd
    import pvlib

    if start.tzinfo is None:
        raise InvalidSite("clear_sky_pv_w needs a timezone-aware start time")
    if peak_power_w < 0:
        raise InvalidSite(f"peak_power_w must not be negative, got {peak_power_w:g}")
    tilt = max(5.0, abs(latitude)) if tilt_deg is None else tilt_deg
    azimuth = (0.0 if latitude < 0 else 180.0) if azimuth_deg is None else azimuth_deg
    times = pd.date_range(
        pd.Timestamp(start) + pd.Timedelta(seconds=step_s / 2), periods=steps, freq=f"{step_s}s"
    )
    location = pvlib.location.Location(latitude, longitude, altitude=altitude_m)
    with warnings.catch_warnings():
        # pvlib 0.16 still calls DatetimeIndex.dayofyear, which pandas 3 deprecates.
        warnings.filterwarnings("ignore", message=".*dayofyear is deprecated.*")
        clear_sky = location.get_clearsky(times, model="ineichen")
        sun = location.get_solarposition(times)
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt=tilt,
        surface_azimuth=azimuth,
        solar_zenith=sun["apparent_zenith"],
        solar_azimuth=sun["azimuth"],
        dni=clear_sky["dni"],
        ghi=clear_sky["ghi"],
        dhi=clear_sky["dhi"],
    )["poa_global"].fillna(0.0)
    power = (poa.clip(lower=0.0) / 1000.0) * peak_power_w * system_efficiency
    return tuple(float(p) for p in power)


def clear_sky_index(
    measured_w: Sequence[float], clear_sky_w: Sequence[float], *, min_clear_sky_w: float = 50.0
) -> float | None:
    """Measured over clear-sky energy in the steps when the sun is up; None if it never was."""
    if len(measured_w) != len(clear_sky_w):
        raise InvalidSite(
            f"measured_w has {len(measured_w)} values but clear_sky_w has {len(clear_sky_w)}"
        )
    pairs = [(m, c) for m, c in zip(measured_w, clear_sky_w, strict=True) if c >= min_clear_sky_w]
    if not pairs:
        return None
    return sum(m for m, _ in pairs) / sum(c for _, c in pairs)


def pv_forecast_w(
    clear_sky_horizon_w: Sequence[float],
    *,
    measured_recent_w: Sequence[float],
    clear_sky_recent_w: Sequence[float],
    default_index: float = 1.0,
    max_index: float = 1.1,
) -> tuple[float, ...]:
    """The clear-sky profile scaled by the recent clear-sky index (capped at `max_index`).

    With no daylight in the recent window (at night) the last known index cannot be measured,
    so `default_index` is used; pass the previous day's index there to carry it overnight.
    """
    index = clear_sky_index(measured_recent_w, clear_sky_recent_w)
    if index is None:
        index = default_index
    index = min(max(index, 0.0), max_index)
    return tuple(max(0.0, index * power) for power in clear_sky_horizon_w)
