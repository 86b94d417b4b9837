"""The board's safety rules for devices, as pure functions of measurements and limits.

- Every set-point is clamped to the device's own limits before it is written.
- The PV cap that keeps a site's export under a limit, given its load and battery.
- The safe local rule a board falls back to when it loses its market: self-consume (the
  battery charges only from the site's surplus and discharges only to cover the site's own
  deficit) and never export over the limit (the PV inverter is capped). It needs nothing but
  the meter and the devices: no market, no broker, no chain.

Units: W; battery power positive while charging; grid power positive while importing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meterchain.devices.base import BatteryLimits


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of watts, not {value!r}")
    return value


def clamp_battery_power_w(power_w: float, limits: BatteryLimits, soc_fraction: float) -> float:
    """`power_w` within the battery's ratings; no charge when full, no discharge at reserve."""
    _finite("the battery set-point", power_w)
    if power_w > 0:
        if soc_fraction >= limits.soc_max_fraction:
            return 0.0
        return min(power_w, limits.max_charge_w)
    if power_w < 0:
        if soc_fraction <= limits.soc_min_fraction:
            return 0.0
        return max(power_w, -limits.max_discharge_w)
    return 0.0


def clamp_battery_window_w(
    low_w: float, high_w: float, limits: BatteryLimits, soc_fraction: float
) -> tuple[float, float]:
    """A window [low, high] with both bounds clamped as set-points are."""
    if low_w > high_w:
        raise ValueError(f"battery window [{low_w:g}, {high_w:g}] W has its low bound above high")
    return (
        clamp_battery_power_w(low_w, limits, soc_fraction),
        clamp_battery_power_w(high_w, limits, soc_fraction),
    )


def clamp_pv_limit_pct(percent: float) -> float:
    """A PV limit within 0..100 % of the rated power."""
    _finite("the PV limit", percent)
    return min(100.0, max(0.0, percent))


def pv_cap_for_export_w(export_limit_w: float, load_w: float, battery_w: float) -> float:
    """The PV output at which the site exports exactly `export_limit_w`.

    Export = PV − load − battery (charging counts against it), so PV ≤ limit + load + battery
    keeps the export under the limit. Never below 0 W.
    """
    _finite("the export limit", export_limit_w)
    return max(0.0, export_limit_w + max(load_w, 0.0) + battery_w)


@dataclass(frozen=True)
class SiteMeasurement:
    """What a board measures at one moment: the meter and its devices."""

    grid_power_w: float  # + import, - export (the meter)
    pv_power_w: float = 0.0  # the PV inverter's output
    battery_power_w: float = 0.0  # + charging
    soc_fraction: float | None = None

    @property
    def load_w(self) -> float:
        """The household's consumption, from the balance at the connection point."""
        return max(0.0, self.grid_power_w + self.pv_power_w - self.battery_power_w)


@dataclass(frozen=True)
class LocalSetpoints:
    """What the safe local rule tells the devices."""

    battery_window_w: tuple[float, float] | None  # None: no battery
    pv_limit_w: float | None  # None: no cap needed (no export limit, or no PV)


def safe_local_setpoints(
    measured: SiteMeasurement,
    *,
    export_limit_w: float | None,
    battery: BatteryLimits | None,
    has_pv: bool,
    capacity_wh: float | None = None,
    hold_s: float = 900.0,
) -> LocalSetpoints:
    """Self-consume and never export over the limit, for the next `hold_s` seconds.

    The battery gets a window inside which it follows the site's own surplus or deficit
    (it never charges from the grid nor discharges into it): its power ratings, cut to what
    its state of charge can take or give over `hold_s` when `capacity_wh` is known. The PV
    inverter is capped at export limit + measured load + what the battery can still absorb,
    so the export stays under the limit while the load stays as measured; the board
    re-applies the rule every interval.
    """
    if not hold_s > 0:
        raise ValueError(f"hold_s must be a positive number of seconds, not {hold_s}")
    load = measured.load_w
    window: tuple[float, float] | None = None
    if battery is not None:
        soc = measured.soc_fraction if measured.soc_fraction is not None else 0.5
        high = clamp_battery_power_w(battery.max_charge_w, battery, soc)
        low = clamp_battery_power_w(-battery.max_discharge_w, battery, soc)
        if capacity_wh is not None:
            hold_h = hold_s / 3600
            high = min(high, max(0.0, battery.soc_max_fraction - soc) * capacity_wh / hold_h)
            low = max(low, -max(0.0, soc - battery.soc_min_fraction) * capacity_wh / hold_h)
        window = (low, high)
    pv_limit = None
    if has_pv and export_limit_w is not None:
        headroom = window[1] if window is not None else 0.0
        pv_limit = pv_cap_for_export_w(export_limit_w, load, headroom)
    return LocalSetpoints(window, pv_limit)
