"""The physical model behind every simulated meter: load, PV and battery at one connection point.

Power flows are integrated between calls, so counters only ever grow; voltage, current and power
agree with each other (single phase, unity power factor); an open relay cuts the flow entirely.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from meterchain.clock import Clock
from meterchain.model import Reading, RelayState

PowerProfile = Callable[[datetime], float]

NOMINAL_VOLTAGE_V = 230.0


@dataclass(frozen=True)
class BatterySpec:
    capacity_wh: float
    max_power_w: float
    efficiency: float = 0.95
    soc_fraction: float = 0.5


def house_load_w(moment: datetime) -> float:
    """A household's demand: a base load, a morning peak and an evening peak (local solar time)."""
    hour = (moment.hour + moment.minute / 60 + moment.second / 3600 - 3) % 24  # UTC-3
    morning = 600 * math.exp(-(((hour - 7.5) / 1.2) ** 2))
    evening = 1400 * math.exp(-(((hour - 19.5) / 1.8) ** 2))
    return 250 + morning + evening


def pv_w(peak_w: float) -> PowerProfile:
    """A clear-sky PV bell between 06:00 and 18:00 local time, peaking at `peak_w` at noon."""

    def profile(moment: datetime) -> float:
        hour = (moment.hour + moment.minute / 60 + moment.second / 3600 - 3) % 24
        if not 6 <= hour <= 18:
            return 0.0
        return float(peak_w * math.sin(math.pi * (hour - 6) / 12) ** 1.5)

    return profile


def flat_load_w(power_w: float) -> PowerProfile:
    return lambda _moment: power_w


def no_power(_moment: datetime) -> float:
    return 0.0


@dataclass(frozen=True)
class MeterState:
    """What the meter measures at one instant."""

    meter_id: str
    timestamp: datetime
    import_wh: float
    export_wh: float
    power_w: float
    voltage_v: float
    current_a: float
    relay: RelayState
    battery_soc_fraction: float | None

    def to_reading(self) -> Reading:
        return Reading(
            meter_id=self.meter_id,
            timestamp=self.timestamp,
            import_wh=self.import_wh,
            export_wh=self.export_wh,
            power_w=self.power_w,
            voltage_v=self.voltage_v,
            current_a=self.current_a,
            relay=self.relay,
        )


class PhysicalMeter:
    """One connection point, advanced by a clock. Safe to share between protocol servers."""

    def __init__(
        self,
        meter_id: str,
        clock: Clock,
        load_w: PowerProfile = house_load_w,
        pv_w: PowerProfile = no_power,
        battery: BatterySpec | None = None,
        import_wh: float = 0.0,
        export_wh: float = 0.0,
    ) -> None:
        self.meter_id = meter_id
        self._clock = clock
        self._load_w = load_w
        self._pv_w = pv_w
        self._battery = battery
        self._soc_wh = battery.capacity_wh * battery.soc_fraction if battery else 0.0
        self._battery_setpoint_w: float | None = None
        self._import_wh = import_wh
        self._export_wh = export_wh
        self._relay = RelayState.ON
        self._last_time = clock.now()
        self._lock = threading.Lock()

    def _battery_power_w(self, surplus_w: float, dt_h: float) -> float:
        """Battery power (+ charge, - discharge): the set-point if any, else self-consumption."""
        spec = self._battery
        if spec is None:
            return 0.0
        wanted = self._battery_setpoint_w if self._battery_setpoint_w is not None else surplus_w
        power = max(-spec.max_power_w, min(spec.max_power_w, wanted))
        if dt_h <= 0:
            return power
        if power > 0:
            room_wh = spec.capacity_wh - self._soc_wh
            power = min(power, room_wh / (dt_h * spec.efficiency))
        else:
            power = max(power, -self._soc_wh * spec.efficiency / dt_h)
        return power

    def _net_power_w(self, moment: datetime, dt_h: float) -> tuple[float, float]:
        """(grid power, battery power) at `moment`; grid power > 0 is import."""
        if self._relay is RelayState.OFF:
            return 0.0, 0.0
        surplus = self._pv_w(moment) - self._load_w(moment)
        battery = self._battery_power_w(surplus, dt_h)
        return -(surplus - battery), battery

    def _advance(self) -> datetime:
        now = self._clock.now()
        if now <= self._last_time:
            return self._last_time
        dt_h = (now - self._last_time).total_seconds() / 3600
        grid_w, battery_w = self._net_power_w(self._last_time, dt_h)
        if grid_w > 0:
            self._import_wh += grid_w * dt_h
        else:
            self._export_wh += -grid_w * dt_h
        if self._battery is not None:
            efficiency = self._battery.efficiency
            delta = (
                battery_w * dt_h * efficiency if battery_w > 0 else battery_w * dt_h / efficiency
            )
            self._soc_wh = min(self._battery.capacity_wh, max(0.0, self._soc_wh + delta))
        self._last_time = now
        return now

    def state(self) -> MeterState:
        """Advance to the clock's time and report what the meter measures."""
        with self._lock:
            now = self._advance()
            grid_w, _ = self._net_power_w(now, 0.0)
            voltage = NOMINAL_VOLTAGE_V * (1 + 0.02 * math.sin(now.timestamp() / 600))
            if self._relay is RelayState.OFF:
                grid_w = 0.0
            return MeterState(
                meter_id=self.meter_id,
                timestamp=now,
                import_wh=self._import_wh,
                export_wh=self._export_wh,
                power_w=grid_w,
                voltage_v=voltage,
                current_a=abs(grid_w) / voltage,
                relay=self._relay,
                battery_soc_fraction=(
                    self._soc_wh / self._battery.capacity_wh if self._battery else None
                ),
            )

    def set_relay(self, state: RelayState) -> RelayState:
        with self._lock:
            self._advance()
            self._relay = state
            return self._relay

    def set_battery_power(self, power_w: float | None) -> None:
        """Fix the battery's power (+ charge, - discharge), or None for self-consumption."""
        if self._battery is None:
            raise ValueError(f"meter {self.meter_id} has no battery")
        with self._lock:
            self._advance()
            self._battery_setpoint_w = power_w

    @property
    def relay(self) -> RelayState:
        return self._relay


PROFILES = ("house", "pv-house", "flat")


def build_profile_meter(meter_id: str, profile: str, clock: Clock) -> PhysicalMeter:
    """The simulator's named profiles: a plain house, a house with PV and battery, a flat load."""
    if profile == "house":
        return PhysicalMeter(meter_id, clock, load_w=house_load_w, import_wh=1_234_567.0)
    if profile == "pv-house":
        return PhysicalMeter(
            meter_id,
            clock,
            load_w=house_load_w,
            pv_w=pv_w(4000.0),
            battery=BatterySpec(capacity_wh=10_000, max_power_w=3_000),
            import_wh=987_654.0,
            export_wh=456_789.0,
        )
    if profile == "flat":
        return PhysicalMeter(meter_id, clock, load_w=flat_load_w(1000.0), import_wh=100_000.0)
    raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
