"""An outdoor temperature forecast that works offline: a typical day, corrected by measurements.

The typical profile is built from the bundled monthly climate normals of the site (mean daily
maximum and minimum; Fortaleza's ship with the package) and the standard shape of a day's
temperature: ASHRAE's fraction of the daily range by hour of apparent solar time (Handbook of
Fundamentals, design-day profile: coolest just before sunrise, warmest at 14:00-15:00). Normals
are interpolated between mid-month days, so there is no jump at a month's turn.

What the board measures corrects it: the mean difference between measured and typical over the
last few hours is added to the forecast and fades with the lead time (a warm afternoon is likely
to stay warm for a few hours, not for days). All functions are pure; `OutdoorForecaster` only
keeps the recent measurements.
"""

from __future__ import annotations

import csv
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from importlib.resources import files
from zoneinfo import ZoneInfo

from meterchain.der.site import InvalidSite

# Fraction of the daily range below the maximum, hours 1..24 of apparent solar time
# (ASHRAE Handbook of Fundamentals 2009, ch. 14, table 6).
DAILY_RANGE_FRACTION = (
    0.88, 0.92, 0.95, 0.98, 1.00, 0.98, 0.91, 0.74, 0.55, 0.38, 0.23, 0.13,
    0.05, 0.00, 0.00, 0.06, 0.14, 0.24, 0.39, 0.50, 0.59, 0.68, 0.75, 0.82,
)  # fmt: skip
FORTALEZA_LONGITUDE = -38.5267
FORTALEZA_TZ = "America/Fortaleza"


@dataclass(frozen=True)
class MonthlyNormals:
    """Mean daily maximum and minimum temperature of each month (°C), January first."""

    mean_max_c: tuple[float, ...]
    mean_min_c: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean_max_c) != 12 or len(self.mean_min_c) != 12:
            raise InvalidSite("monthly normals need twelve maxima and twelve minima")
        for month, (high, low) in enumerate(zip(self.mean_max_c, self.mean_min_c, strict=True)):
            if low > high:
                raise InvalidSite(f"month {month + 1}: mean minimum {low} above maximum {high}")

    def on(self, day: date) -> tuple[float, float]:
        """(max, min) for a day, interpolated between the middles of the months around it."""
        middle = date(day.year, day.month, 15)
        if day >= middle:
            first = middle
            month = day.month % 12 + 1
            year = day.year + (1 if day.month == 12 else 0)
            second = date(year, month, 15)
            a, b = day.month - 1, month - 1
        else:
            month = (day.month - 2) % 12 + 1
            year = day.year - (1 if day.month == 1 else 0)
            first = date(year, month, 15)
            second = middle
            a, b = month - 1, day.month - 1
        weight = (day - first).days / (second - first).days
        high = (1 - weight) * self.mean_max_c[a] + weight * self.mean_max_c[b]
        low = (1 - weight) * self.mean_min_c[a] + weight * self.mean_min_c[b]
        return high, low


@cache
def fortaleza_normals() -> MonthlyNormals:
    """Fortaleza's monthly normals, bundled with the package (see the data file's header)."""
    text = files("meterchain.der").joinpath("data/fortaleza_temperature_normals.csv").read_text()
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    return MonthlyNormals(
        tuple(float(r["mean_max_c"]) for r in rows), tuple(float(r["mean_min_c"]) for r in rows)
    )


def _fraction_at(solar_hour: float) -> float:
    """The daily-range fraction at a fractional solar hour, interpolated between hours."""
    position = (solar_hour - 1.0) % 24.0  # the table's first value is hour 1
    below = math.floor(position)
    weight = position - below
    return (1 - weight) * DAILY_RANGE_FRACTION[below] + weight * DAILY_RANGE_FRACTION[
        (below + 1) % 24
    ]


def typical_outdoor_c(
    start: datetime,
    steps: int,
    step_s: int,
    *,
    normals: MonthlyNormals | None = None,
    longitude: float = FORTALEZA_LONGITUDE,
    timezone: str = FORTALEZA_TZ,
) -> tuple[float, ...]:
    """The typical temperature at the middle of each step (°C)."""
    if start.tzinfo is None:
        raise InvalidSite("typical_outdoor_c needs a timezone-aware start time")
    normals = normals or fortaleza_normals()
    zone = ZoneInfo(timezone)
    out = []
    for k in range(steps):
        moment = (start + timedelta(seconds=(k + 0.5) * step_s)).astimezone(zone)
        offset = moment.utcoffset() or timedelta(0)
        meridian = offset.total_seconds() / 3600 * 15.0
        clock = moment.hour + moment.minute / 60 + moment.second / 3600
        solar = clock + (longitude - meridian) / 15.0
        high, low = normals.on(moment.date())
        out.append(high - _fraction_at(solar) * (high - low))
    return tuple(out)


def corrected_forecast_c(
    typical_horizon_c: Sequence[float],
    *,
    measured_recent_c: Sequence[float],
    typical_recent_c: Sequence[float],
    step_s: int,
    fade_hours: float = 6.0,
) -> tuple[float, ...]:
    """The typical horizon plus the recent mean error, fading as exp(−lead / fade_hours)."""
    if len(measured_recent_c) != len(typical_recent_c):
        raise InvalidSite(
            f"measured_recent_c has {len(measured_recent_c)} values but typical_recent_c has "
            f"{len(typical_recent_c)}"
        )
    if fade_hours <= 0:
        raise InvalidSite(f"fade_hours must be positive, got {fade_hours:g}")
    if not measured_recent_c:
        return tuple(typical_horizon_c)
    bias = sum(m - t for m, t in zip(measured_recent_c, typical_recent_c, strict=True)) / len(
        measured_recent_c
    )
    step_h = step_s / 3600
    return tuple(
        value + bias * math.exp(-(k + 0.5) * step_h / fade_hours)
        for k, value in enumerate(typical_horizon_c)
    )


class OutdoorForecaster:
    """Keeps the last measurements of a board's outdoor sensor and forecasts from them."""

    def __init__(
        self,
        *,
        normals: MonthlyNormals | None = None,
        longitude: float = FORTALEZA_LONGITUDE,
        timezone: str = FORTALEZA_TZ,
        window_hours: float = 3.0,
        fade_hours: float = 6.0,
    ) -> None:
        self.normals = normals or fortaleza_normals()
        self.longitude = longitude
        self.timezone = timezone
        self.window = timedelta(hours=window_hours)
        self.fade_hours = fade_hours
        self._measured: deque[tuple[datetime, float, float]] = deque()

    def observe(self, moment: datetime, measured_c: float) -> None:
        """Record a measurement (a reading at `moment`)."""
        if not math.isfinite(measured_c):
            raise InvalidSite(f"an outdoor temperature must be a finite number, got {measured_c}")
        typical = self._typical_at(moment)
        self._measured.append((moment, measured_c, typical))
        while self._measured and moment - self._measured[0][0] > self.window:
            self._measured.popleft()

    def forecast(self, start: datetime, steps: int, step_s: int) -> tuple[float, ...]:
        typical = typical_outdoor_c(
            start,
            steps,
            step_s,
            normals=self.normals,
            longitude=self.longitude,
            timezone=self.timezone,
        )
        recent = [(m, t) for when, m, t in self._measured if start - when <= self.window]
        return corrected_forecast_c(
            typical,
            measured_recent_c=[m for m, _ in recent],
            typical_recent_c=[t for _, t in recent],
            step_s=step_s,
            fade_hours=self.fade_hours,
        )

    def _typical_at(self, moment: datetime) -> float:
        # the value at `moment` itself: a one-second step centred on it
        start = moment - timedelta(seconds=0.5)
        return typical_outdoor_c(
            start, 1, 1, normals=self.normals, longitude=self.longitude, timezone=self.timezone
        )[0]
