"""Brazilian tariffs as price series and demand charges for the optimiser (docs/der.md cites
ANEEL's rules behind each).

* `TarifaBranca`: Group B's white tariff, three posts on working days (ponta, intermediário one
  hour on each side of it, fora de ponta the rest) and fora de ponta all day on weekends and
  national holidays.
* `GroupATariff`: Group A's binomial tariffs, energy priced by post (ponta / fora de ponta) and
  demand charged per kW: one contracted demand in the green modality, one per post in the blue
  one, each with the overrun charge beyond the 5 % tolerance (`site.DemandCharge`).

The posts are in local time; pass the distributor's own post hours (Enel Ceará's ponta is
17:30-20:30) and, where its calendar differs, its holidays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from meterchain.der.site import DemandCharge, InvalidSite

Post = Literal["ponta", "intermediario", "fora_ponta"]
FORTALEZA_TZ = "America/Fortaleza"

# The national holidays the ponta post skips (REN 414/2010 art. 2, kept by REN 1000/2021):
# fixed dates, plus Carnival Tuesday, Good Friday and Corpus Christi, which move with Easter.
FIXED_HOLIDAYS = ((1, 1), (4, 21), (5, 1), (9, 7), (10, 12), (11, 2), (11, 15), (12, 25))


def easter(year: int) -> date:
    """Easter Sunday (Gregorian; the anonymous algorithm of Meeus, Jones and Butcher): pure
    arithmetic, so a board's planner does not load pandas for it."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def national_holidays(year: int) -> frozenset[date]:
    """The days of `year` on which every hour is fora de ponta."""
    sunday = easter(year)
    moving = {
        sunday - timedelta(days=47),  # Carnival Tuesday
        sunday - timedelta(days=2),  # Good Friday
        sunday + timedelta(days=60),  # Corpus Christi
    }
    return frozenset({date(year, m, d) for m, d in FIXED_HOLIDAYS} | moving)


def _minutes(moment: time) -> int:
    return moment.hour * 60 + moment.minute


@dataclass(frozen=True, kw_only=True)
class _Posts:
    peak_start: time = time(17, 30)
    peak_hours: float = 3.0
    intermediate_hours: float = 1.0
    extra_holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not 0 < self.peak_hours <= 24:
            raise InvalidSite(f"peak_hours must be in (0, 24], got {self.peak_hours:g}")
        if not 0 <= self.intermediate_hours <= 12 - self.peak_hours / 2:
            raise InvalidSite(
                f"intermediate_hours {self.intermediate_hours:g} must fit on both sides of a "
                f"{self.peak_hours:g}-hour peak within the day"
            )

    def is_working_day(self, day: date) -> bool:
        if day.weekday() >= 5:
            return False
        return day not in national_holidays(day.year) and day not in self.extra_holidays

    def post(self, local: datetime) -> Post:
        """The post a local moment falls in."""
        if not self.is_working_day(local.date()):
            return "fora_ponta"
        minute = local.hour * 60 + local.minute + local.second / 60
        start = _minutes(self.peak_start)
        since = (minute - start) % 1440
        peak = self.peak_hours * 60
        side = self.intermediate_hours * 60
        if since < peak:
            return "ponta"
        if since < peak + side or since >= 1440 - side:
            return "intermediario"
        return "fora_ponta"

    def posts(self, start: datetime, steps: int, step_s: int, timezone: str) -> list[Post]:
        """The post of each step (taken at the step's middle)."""
        if start.tzinfo is None:
            raise InvalidSite("tariff posts need a timezone-aware start time")
        zone = ZoneInfo(timezone)
        middle = timedelta(seconds=step_s / 2)
        return [
            self.post((start + timedelta(seconds=k * step_s) + middle).astimezone(zone))
            for k in range(steps)
        ]


@dataclass(frozen=True, kw_only=True)
class TarifaBranca(_Posts):
    """Group B's white tariff (R$/kWh per post)."""

    off_peak_per_kwh: float = 0.0
    intermediate_per_kwh: float = 0.0
    peak_per_kwh: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.off_peak_per_kwh <= self.intermediate_per_kwh <= self.peak_per_kwh:
            raise InvalidSite(
                "tarifa branca prices must rise from fora de ponta to intermediário to ponta, "
                f"got {self.off_peak_per_kwh:g}, {self.intermediate_per_kwh:g}, "
                f"{self.peak_per_kwh:g}"
            )

    def price(self, post: Post) -> float:
        return {
            "ponta": self.peak_per_kwh,
            "intermediario": self.intermediate_per_kwh,
            "fora_ponta": self.off_peak_per_kwh,
        }[post]

    def prices(
        self, start: datetime, steps: int, step_s: int, timezone: str = FORTALEZA_TZ
    ) -> tuple[float, ...]:
        return tuple(self.price(p) for p in self.posts(start, steps, step_s, timezone))


@dataclass(frozen=True, kw_only=True)
class GroupATariff(_Posts):
    """A Group A binomial tariff: energy by post and demand per kW (green or blue modality).

    Group A has no intermediate post (`intermediate_hours` 0). `contracted_peak_kw` and
    `demand_peak_per_kw` apply only to the blue modality, which contracts and charges the
    demand of each post apart; the green one has a single demand for all hours.
    """

    modality: Literal["verde", "azul"] = "verde"
    energy_peak_per_kwh: float = 0.0
    energy_off_peak_per_kwh: float = 0.0
    demand_per_kw: float = 0.0
    contracted_kw: float = 0.0
    demand_peak_per_kw: float = 0.0
    contracted_peak_kw: float = 0.0
    intermediate_hours: float = 0.0
    tolerance_fraction: float = 0.05
    overrun_multiplier: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modality not in ("verde", "azul"):
            raise InvalidSite(f"modality must be 'verde' or 'azul', got {self.modality!r}")
        if self.intermediate_hours:
            raise InvalidSite("Group A tariffs have no intermediate post; set it to 0")

    def prices(
        self, start: datetime, steps: int, step_s: int, timezone: str = FORTALEZA_TZ
    ) -> tuple[float, ...]:
        return tuple(
            self.energy_peak_per_kwh if p == "ponta" else self.energy_off_peak_per_kwh
            for p in self.posts(start, steps, step_s, timezone)
        )

    def demand_charges(
        self,
        start: datetime,
        steps: int,
        step_s: int,
        timezone: str = FORTALEZA_TZ,
        *,
        peak_so_far_kw: float = 0.0,
        peak_so_far_peak_post_kw: float = 0.0,
    ) -> list[DemandCharge]:
        """The demand charges of the billing month, with the peaks already registered."""
        tolerance, multiplier = self.tolerance_fraction, self.overrun_multiplier
        if self.modality == "verde":
            return [
                DemandCharge(
                    "demanda",
                    self.demand_per_kw,
                    self.contracted_kw,
                    peak_so_far_kw=peak_so_far_kw,
                    tolerance_fraction=tolerance,
                    overrun_multiplier=multiplier,
                )
            ]
        posts = self.posts(start, steps, step_s, timezone)
        return [
            DemandCharge(
                "demanda ponta",
                self.demand_peak_per_kw,
                self.contracted_peak_kw,
                steps=[p == "ponta" for p in posts],
                peak_so_far_kw=peak_so_far_peak_post_kw,
                tolerance_fraction=tolerance,
                overrun_multiplier=multiplier,
            ),
            DemandCharge(
                "demanda fora de ponta",
                self.demand_per_kw,
                self.contracted_kw,
                steps=[p != "ponta" for p in posts],
                peak_so_far_kw=peak_so_far_kw,
                tolerance_fraction=tolerance,
                overrun_multiplier=multiplier,
            ),
        ]
