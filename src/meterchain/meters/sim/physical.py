"""The physical model behind every simulated meter and device: load, PV and battery at one
connection point.

Power flows are integrated between calls, so counters only ever grow; voltage, current and power
agree with each other (single phase, unity power factor); an open relay cuts the flow entirely.

The device simulators (`devices/sim/`) act on the same model the meter simulators read: a
battery's power window, the PV inverter's active-power limit and relay-switched loads, each
set here, change what the meter measures. A device set-point may carry a revert time, as the
SunSpec controls do (`InOutWRte_RvrtTms`, `WMaxLimPct_RvrtTms`): when it passes, the device
returns to its own default (self-consumption, no PV limit) even if nobody talks to it again.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

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
    battery_power_w: float = 0.0  # + charging, - discharging (AC side)
    battery_window_w: tuple[float, float] | None = None  # set-point bounds; None: self-consumption
    pv_power_w: float = 0.0  # what the PV inverter delivers, after its limit
    pv_available_w: float = 0.0  # what the panels could give now
    pv_energy_wh: float = 0.0  # lifetime production counter of the PV inverter
    pv_limit_w: float | None = None  # the inverter's active-power limit, None when off
    load_power_w: float = 0.0  # household load, relay-switched loads included

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


_BATTERY = "battery"
_PV = "pv"


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
        pv_energy_wh: float = 0.0,
    ) -> None:
        self.meter_id = meter_id
        self._clock = clock
        self._load_w = load_w
        self._pv_w = pv_w
        self._battery = battery
        self._soc_wh = battery.capacity_wh * battery.soc_fraction if battery else 0.0
        # The battery follows the site's surplus inside [low, high] (+ charge); equal bounds
        # are a fixed set-point; None is the full range (self-consumption).
        self._battery_window_w: tuple[float, float] | None = None
        self._pv_limit_w: float | None = None
        self._switched: dict[str, tuple[float, bool]] = {}  # name -> (power_w, on)
        self._reverts: dict[str, datetime] = {}  # what returns to its default, and when
        self._import_wh = import_wh
        self._export_wh = export_wh
        self._pv_energy_wh = pv_energy_wh
        self._relay = RelayState.ON
        self._last_time = clock.now()
        self._lock = threading.Lock()

    @property
    def battery_spec(self) -> BatterySpec | None:
        return self._battery

    # ------------------------------------------------------------------ power flows

    def _pv_out_w(self, moment: datetime) -> float:
        available = max(0.0, self._pv_w(moment))
        return available if self._pv_limit_w is None else min(available, self._pv_limit_w)

    def _house_load_w(self, moment: datetime) -> float:
        switched = sum(power for power, on in self._switched.values() if on)
        return self._load_w(moment) + switched

    def _battery_power_w(self, surplus_w: float, dt_h: float) -> float:
        """Battery power (+ charge, - discharge): the surplus inside the window and the limits."""
        spec = self._battery
        if spec is None:
            return 0.0
        low, high = self._battery_window_w or (-spec.max_power_w, spec.max_power_w)
        power = max(low, min(high, surplus_w))
        power = max(-spec.max_power_w, min(spec.max_power_w, power))
        if dt_h <= 0:  # an instant: what the cells allow right now
            if (power > 0 and self._soc_wh >= spec.capacity_wh) or (
                power < 0 and self._soc_wh <= 0
            ):
                return 0.0
            return power
        if power > 0:
            room_wh = spec.capacity_wh - self._soc_wh
            power = min(power, room_wh / (dt_h * spec.efficiency))
        else:
            power = max(power, -self._soc_wh * spec.efficiency / dt_h)
        return power

    def _flows_w(self, moment: datetime, dt_h: float) -> tuple[float, float, float, float]:
        """(grid power, battery power, PV power, load) at `moment`; grid power > 0 is import."""
        if self._relay is RelayState.OFF:
            return 0.0, 0.0, 0.0, 0.0
        pv = self._pv_out_w(moment)
        load = self._house_load_w(moment)
        battery = self._battery_power_w(pv - load, dt_h)
        return -(pv - load - battery), battery, pv, load

    def _integrate(self, until: datetime) -> None:
        if until <= self._last_time:
            return
        dt_h = (until - self._last_time).total_seconds() / 3600
        grid_w, battery_w, pv_w_now, _ = self._flows_w(self._last_time, dt_h)
        if grid_w > 0:
            self._import_wh += grid_w * dt_h
        else:
            self._export_wh += -grid_w * dt_h
        self._pv_energy_wh += pv_w_now * dt_h
        if self._battery is not None:
            efficiency = self._battery.efficiency
            delta = (
                battery_w * dt_h * efficiency if battery_w > 0 else battery_w * dt_h / efficiency
            )
            self._soc_wh = min(self._battery.capacity_wh, max(0.0, self._soc_wh + delta))
        self._last_time = until

    def _advance(self) -> datetime:
        now = self._clock.now()
        while True:  # set-points that expire before `now` stop applying at their own moment
            due = [(moment, what) for what, moment in self._reverts.items() if moment <= now]
            if not due:
                break
            moment, what = min(due)
            self._integrate(moment)
            del self._reverts[what]
            if what == _BATTERY:
                self._battery_window_w = None
            else:
                self._pv_limit_w = None
        self._integrate(now)
        return self._last_time

    def state(self) -> MeterState:
        """Advance to the clock's time and report what the meter measures."""
        with self._lock:
            now = self._advance()
            grid_w, battery_w, pv_out_w, load_w = self._flows_w(now, 0.0)
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
                battery_power_w=battery_w,
                battery_window_w=self._battery_window_w,
                pv_power_w=pv_out_w,
                pv_available_w=max(0.0, self._pv_w(now)),
                pv_energy_wh=self._pv_energy_wh,
                pv_limit_w=self._pv_limit_w,
                load_power_w=load_w,
            )

    # ------------------------------------------------------------------ what devices set

    def set_relay(self, state: RelayState) -> RelayState:
        with self._lock:
            self._advance()
            self._relay = state
            return self._relay

    def _set_revert(self, what: str, revert_after_s: float | None, active: bool) -> None:
        if revert_after_s is not None and revert_after_s < 0:
            raise ValueError(f"revert_after_s must not be negative, got {revert_after_s}")
        if active and revert_after_s:
            self._reverts[what] = self._last_time + timedelta(seconds=revert_after_s)
        else:
            self._reverts.pop(what, None)

    def set_battery_power(self, power_w: float | None, revert_after_s: float | None = None) -> None:
        """Fix the battery's power (+ charge, - discharge), or None for self-consumption."""
        if power_w is None:
            self.set_battery_window(None, revert_after_s)
        else:
            self.set_battery_window((power_w, power_w), revert_after_s)

    def set_battery_window(
        self, window_w: tuple[float, float] | None, revert_after_s: float | None = None
    ) -> None:
        """Let the battery follow the surplus only inside [low, high] W (None: no bounds).

        A window that excludes 0 forces charge or discharge; after `revert_after_s` seconds
        (0 or None: never) the battery returns to self-consumption.
        """
        if self._battery is None:
            raise ValueError(f"meter {self.meter_id} has no battery")
        if window_w is not None and window_w[0] > window_w[1]:
            raise ValueError(f"battery window {window_w} has its low bound above its high bound")
        with self._lock:
            self._advance()
            self._battery_window_w = window_w
            self._set_revert(_BATTERY, revert_after_s, window_w is not None)

    def set_pv_limit_w(self, limit_w: float | None, revert_after_s: float | None = None) -> None:
        """Cap the PV inverter's output at `limit_w` (None lifts the cap)."""
        if limit_w is not None and not limit_w >= 0:
            raise ValueError(f"a PV limit must be 0 W or more, got {limit_w}")
        with self._lock:
            self._advance()
            self._pv_limit_w = limit_w
            self._set_revert(_PV, revert_after_s, limit_w is not None)

    def add_switched_load(self, name: str, power_w: float, on: bool = False) -> None:
        """A load behind a relay (a water heater, a pump) that adds `power_w` while on."""
        if not power_w >= 0:
            raise ValueError(f"switched load {name!r}: power must be 0 W or more, got {power_w}")
        with self._lock:
            self._advance()
            self._switched[name] = (power_w, on)

    def set_switched_load(self, name: str, on: bool) -> bool:
        with self._lock:
            if name not in self._switched:
                raise ValueError(f"meter {self.meter_id} has no switched load {name!r}")
            self._advance()
            power_w, _ = self._switched[name]
            self._switched[name] = (power_w, on)
            return on

    def switched_load_on(self, name: str) -> bool:
        if name not in self._switched:
            raise ValueError(f"meter {self.meter_id} has no switched load {name!r}")
        return self._switched[name][1]

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
