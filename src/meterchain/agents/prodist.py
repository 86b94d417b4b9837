"""Supply voltage against ANEEL's PRODIST Module 8 (section 8.1, steady-state voltage).

A reading of the voltage at the connection point is adequate, precarious or critical by the
ranges of the nominal voltage's table; over a set of readings (PRODIST takes 1,008 valid
10-minute readings, one week) the relative durations of precarious and critical voltage are

    DRP = nlp / n × 100 %        DRC = nlc / n × 100 %

and must not exceed DRPm = 3 % and DRCm = 0.5 %. The tables here are those for nominal
voltages up to 1 kV that Brazilian low-voltage networks use (phase-to-neutral or
phase-to-phase as the meter measures).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

DRP_LIMIT_PERCENT = 3.0
DRC_LIMIT_PERCENT = 0.5
READINGS_PER_WEEK = 1008


class VoltageClass(StrEnum):
    ADEQUATE = "adequate"
    PRECARIOUS = "precarious"
    CRITICAL = "critical"


@dataclass(frozen=True)
class VoltageRanges:
    """Adequate is [adequate_low, adequate_high]; precarious reaches down to precarious_low
    and up to precarious_high; beyond those it is critical."""

    nominal_v: float
    adequate_low: float
    adequate_high: float
    precarious_low: float
    precarious_high: float

    def classify(self, voltage_v: float) -> VoltageClass:
        if self.adequate_low <= voltage_v <= self.adequate_high:
            return VoltageClass.ADEQUATE
        if self.precarious_low <= voltage_v <= self.precarious_high:
            return VoltageClass.PRECARIOUS
        return VoltageClass.CRITICAL


# PRODIST Module 8, Table 3 (nominal voltage ≤ 1 kV); the systems 220/127 V and 380/220 V.
RANGES: dict[float, VoltageRanges] = {
    127.0: VoltageRanges(127.0, 117.0, 133.0, 110.0, 135.0),
    220.0: VoltageRanges(220.0, 202.0, 231.0, 191.0, 233.0),
    380.0: VoltageRanges(380.0, 350.0, 399.0, 331.0, 403.0),
}


def ranges_for(nominal_v: float) -> VoltageRanges:
    """The ranges of a nominal voltage PRODIST tabulates; anything else is a clear error."""
    found = RANGES.get(float(nominal_v))
    if found is None:
        known = ", ".join(f"{v:g}" for v in sorted(RANGES))
        raise ValueError(f"no PRODIST voltage ranges for a nominal {nominal_v:g} V; use {known}")
    return found


def classify(voltage_v: float, nominal_v: float = 220.0) -> VoltageClass:
    return ranges_for(nominal_v).classify(voltage_v)


@dataclass(frozen=True)
class DurationIndicators:
    """DRP and DRC over `readings` readings, in percent, and whether they break the limits."""

    readings: int
    precarious: int
    critical: int

    @property
    def drp_percent(self) -> float:
        return 100.0 * self.precarious / self.readings if self.readings else 0.0

    @property
    def drc_percent(self) -> float:
        return 100.0 * self.critical / self.readings if self.readings else 0.0

    @property
    def drp_exceeded(self) -> bool:
        return self.drp_percent > DRP_LIMIT_PERCENT

    @property
    def drc_exceeded(self) -> bool:
        return self.drc_percent > DRC_LIMIT_PERCENT


def duration_indicators(
    voltages_v: Iterable[float], nominal_v: float = 220.0
) -> DurationIndicators:
    """DRP and DRC of a set of voltage readings (the last week's, by PRODIST)."""
    ranges = ranges_for(nominal_v)
    total = precarious = critical = 0
    for voltage in voltages_v:
        total += 1
        found = ranges.classify(voltage)
        if found is VoltageClass.PRECARIOUS:
            precarious += 1
        elif found is VoltageClass.CRITICAL:
            critical += 1
    return DurationIndicators(total, precarious, critical)
