"""Hour-by-hour matching of consumption with retired certificates: the 24/7 carbon-free score.

EnergyTag's granular matching and Google's "24/7 CFE" count, for each hour, the consumption
covered by certificates of energy produced in that same hour; the score is the matched share of
the whole consumption. Certificates here are finer (one per market interval), so they are
summed into hours before matching; a surplus in one hour never covers another hour.

Consumption is what the meter imported (the energy the household took from the network);
its own PV used behind the meter never becomes a certificate and is not counted either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOUR_S = 3600


@dataclass(frozen=True)
class HourlyMatch:
    """Sums over hours of consumption and of matched (covered) consumption, in Wh."""

    consumption_wh: int
    matched_wh: int

    @property
    def fraction(self) -> float:
        """Matched share of consumption, 0–1 (0 without consumption), four decimals."""
        if self.consumption_wh <= 0:
            return 0.0
        return round(self.matched_wh / self.consumption_wh, 4)

    def __add__(self, other: HourlyMatch) -> HourlyMatch:
        return HourlyMatch(
            self.consumption_wh + other.consumption_wh, self.matched_wh + other.matched_wh
        )


def by_hour(energy_wh: Mapping[int, int]) -> dict[int, int]:
    """Energy by interval start (Unix seconds) → energy by hour start."""
    hours: dict[int, int] = {}
    for start, wh in energy_wh.items():
        hour = start - start % HOUR_S
        hours[hour] = hours.get(hour, 0) + wh
    return hours


def hourly_match(consumption_wh: Mapping[int, int], certified_wh: Mapping[int, int]) -> HourlyMatch:
    """Match consumption with certificates retired for it, hour by hour.

    Both map an interval start (Unix seconds) to Wh: consumption metered in the interval, and
    certificates of energy produced in the interval retired for this consumer. In each hour the
    matched energy is min(consumption, certificates).
    """
    consumed = by_hour(consumption_wh)
    certified = by_hour(certified_wh)
    matched = sum(min(wh, certified.get(hour, 0)) for hour, wh in consumed.items())
    return HourlyMatch(sum(consumed.values()), matched)


def total(matches: Iterable[HourlyMatch]) -> HourlyMatch:
    """The sum of several consumers' matches (a community's score is matched / consumed)."""
    result = HourlyMatch(0, 0)
    for match in matches:
        result = result + match
    return result
