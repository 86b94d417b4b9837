"""The values that cross module boundaries: frozen dataclasses with units in their names.

Energy is in Wh, power in W, prices in currency units per kWh, time in UTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RelayState(StrEnum):
    """Whether the meter's breaker lets energy through."""

    ON = "on"
    OFF = "off"


class Side(StrEnum):
    """Which side of the market an order is on."""

    BUY = "buy"
    SELL = "sell"


@dataclass(frozen=True)
class Reading:
    """One snapshot of a meter: cumulative registers and instantaneous values.

    `power_w` is positive while importing from the grid and negative while exporting.
    """

    meter_id: str
    timestamp: datetime
    import_wh: float
    export_wh: float
    power_w: float
    voltage_v: float
    current_a: float
    relay: RelayState

    def as_json(self) -> dict[str, object]:
        """The reading as the JSON object that `meterchain meter read --json` prints."""
        return {
            "meter_id": self.meter_id,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "import_wh": self.import_wh,
            "export_wh": self.export_wh,
            "power_w": self.power_w,
            "voltage_v": self.voltage_v,
            "current_a": self.current_a,
            "relay": self.relay.value,
        }

    def non_finite_fields(self) -> list[str]:
        """Names of the numeric fields that are NaN or infinite."""
        values = {
            "import_wh": self.import_wh,
            "export_wh": self.export_wh,
            "power_w": self.power_w,
            "voltage_v": self.voltage_v,
            "current_a": self.current_a,
        }
        return [name for name, value in values.items() if not math.isfinite(value)]


@dataclass(frozen=True)
class SetRelay:
    """Connect or disconnect the meter's relay."""

    state: RelayState


@dataclass(frozen=True)
class SetBatteryPower:
    """Battery set-point: positive charges, negative discharges."""

    power_w: float


DeviceCommand = SetRelay | SetBatteryPower


@dataclass(frozen=True)
class Order:
    """A limit order for energy in one market interval."""

    id: str
    meter_id: str
    side: Side
    quantity_wh: int
    limit_price: float
    submitted_at: datetime


@dataclass(frozen=True)
class Trade:
    """A matched quantity between one buy order and one sell order."""

    buy_order_id: str
    sell_order_id: str
    quantity_wh: int
    price: float


@dataclass(frozen=True)
class Interval:
    """A market interval: [start, start + length_s)."""

    start: datetime
    length_s: int = 900
