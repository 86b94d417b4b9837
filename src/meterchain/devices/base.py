"""The interfaces a board drives, one per kind of device, and the states they report.

Every driver is an `Actuator`: it has a URL, reads its state and releases its link. The
kinds add their set-points: a battery inverter takes a power (or a window of powers), a PV
inverter an active-power limit, a relay-switched load on/off. A set-point call returns what
the device confirmed after the write was read back; a device that does not confirm raises
`WriteNotConfirmed` and is never assumed to have obeyed.

Units: W, Wh, fractions; battery power is positive while charging.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from meterchain.devices.url import DeviceUrl

KINDS = ("battery", "pv", "load")


def _time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class BatteryLimits:
    """What the battery itself allows: its power ratings and its state-of-charge band."""

    max_charge_w: float
    max_discharge_w: float
    soc_min_fraction: float = 0.0  # the reserve it keeps: no discharge at or below it
    soc_max_fraction: float = 1.0  # no charge at or above it


@dataclass(frozen=True)
class BatteryState:
    device_id: str
    timestamp: datetime
    soc_fraction: float
    power_w: float | None  # measured, + charging; None if the device does not report it
    window_w: tuple[float, float] | None  # the set-point bounds; None: its own self-consumption
    limits: BatteryLimits
    capacity_wh: float | None
    status: str

    def as_json(self) -> dict[str, object]:
        return {
            "kind": "battery",
            "device_id": self.device_id,
            "timestamp": _time(self.timestamp),
            "soc_fraction": self.soc_fraction,
            "power_w": self.power_w,
            "mode": "self-consumption" if self.window_w is None else "set-point",
            "setpoint_low_w": None if self.window_w is None else self.window_w[0],
            "setpoint_high_w": None if self.window_w is None else self.window_w[1],
            "max_charge_w": self.limits.max_charge_w,
            "max_discharge_w": self.limits.max_discharge_w,
            "soc_min_fraction": self.limits.soc_min_fraction,
            "soc_max_fraction": self.limits.soc_max_fraction,
            "capacity_wh": self.capacity_wh,
            "status": self.status,
        }


@dataclass(frozen=True)
class PvState:
    device_id: str
    timestamp: datetime
    power_w: float  # AC output now
    energy_wh: float  # lifetime production
    rated_power_w: float  # WMax: what 100 % of the limit means
    limit_pct: float | None  # None: no limit in force
    status: str

    @property
    def limit_w(self) -> float | None:
        return None if self.limit_pct is None else self.limit_pct / 100 * self.rated_power_w

    def as_json(self) -> dict[str, object]:
        return {
            "kind": "pv",
            "device_id": self.device_id,
            "timestamp": _time(self.timestamp),
            "power_w": self.power_w,
            "energy_wh": self.energy_wh,
            "rated_power_w": self.rated_power_w,
            "limit_pct": self.limit_pct,
            "limit_w": self.limit_w,
            "status": self.status,
        }


@dataclass(frozen=True)
class LoadState:
    device_id: str
    timestamp: datetime
    on: bool

    def as_json(self) -> dict[str, object]:
        return {
            "kind": "load",
            "device_id": self.device_id,
            "timestamp": _time(self.timestamp),
            "on": self.on,
        }


DeviceState = BatteryState | PvState | LoadState


class Actuator(Protocol):
    """Any device a board drives."""

    url: DeviceUrl
    kind: str

    async def read_state(self) -> DeviceState: ...

    async def close(self) -> None: ...


@runtime_checkable
class BatteryInverter(Actuator, Protocol):
    async def read_state(self) -> BatteryState: ...

    async def soc_fraction(self) -> float: ...

    async def set_power_w(self, power_w: float) -> float:
        """Hold the battery at `power_w` (clamped to its limits); returns the confirmed value."""
        ...

    async def set_window_w(self, low_w: float, high_w: float) -> tuple[float, float]:
        """Let the battery follow the site's surplus only within [low, high] W."""
        ...

    async def self_consume(self) -> None:
        """Hand control back to the inverter's own self-consumption."""
        ...


@runtime_checkable
class PvInverter(Actuator, Protocol):
    async def read_state(self) -> PvState: ...

    async def set_limit_pct(self, percent: float | None) -> float | None:
        """Cap the output at `percent` of the rated power (None lifts the cap)."""
        ...

    async def set_limit_w(self, limit_w: float | None) -> float | None:
        """Cap the output at `limit_w` (None lifts the cap); returns the confirmed cap in W."""
        ...


@runtime_checkable
class SwitchedLoad(Actuator, Protocol):
    async def read_state(self) -> LoadState: ...

    async def switch(self, on: bool) -> bool:
        """Switch the load; returns the state read back."""
        ...
