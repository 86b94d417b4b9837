"""A simulated room with an inverter air conditioner, behind a simulated meter.

The room follows the same 1R1C physics the optimiser plans with (meterchain.der.thermal),
stepped exactly between the moments its power or the outdoor temperature change, under the
"true" outdoor temperature of the simulation (the typical Fortaleza day, shifted by a random
offset per day and a slow random drift: what the board's forecast does not know). The air
conditioner draws the power it was last told to (a board's plan), or, under thermostat
control, what an ideal inverter thermostat needs to hold the top of the comfort band.
Its electricity adds to the household's load at the meter.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from datetime import datetime, timedelta

import numpy as np

from meterchain.clock import Clock
from meterchain.config import AirConditionerConfig
from meterchain.der.site import ThermalLoad
from meterchain.der.thermal import next_temperature_c, power_to_reach_w
from meterchain.der.weather import typical_outdoor_c
from meterchain.sim.profiles import StepProfile


def outdoor_truth_c(
    start: datetime, steps: int, step_s: int, rng: np.random.Generator, timezone: str
) -> StepProfile:
    """The outdoor temperature the simulation lives: typical day + daily offset + drift."""
    typical = typical_outdoor_c(start, steps, step_s, timezone=timezone)
    per_day = 86400 // step_s
    offsets = rng.normal(0.0, 0.8, size=steps // per_day + 2)
    drift = 0.0
    values = []
    for k, value in enumerate(typical):
        drift = 0.95 * drift + rng.normal(0.0, 0.25)
        values.append(float(value + offsets[k // per_day] + drift))
    return StepProfile(start, step_s, tuple(values))


def thermal_load(
    config: AirConditionerConfig,
    *,
    name: str,
    initial_c: float,
    outdoor_c: list[float],
    comfort_min_c: list[float],
    comfort_max_c: list[float],
) -> ThermalLoad:
    """The optimiser's view of this air conditioner over a horizon."""
    steps = len(outdoor_c)
    return ThermalLoad(
        name=name,
        max_power_w=config.max_power_kw * 1000,
        capacitance_wh_per_k=config.capacitance_wh_per_k,
        resistance_k_per_w=config.resistance_k_per_w,
        initial_c=initial_c,
        outdoor_c=outdoor_c,
        comfort_min_c=comfort_min_c,
        comfort_max_c=comfort_max_c,
        heat_gain_w=[config.heat_gain_w] * steps,
        cop_at_reference=config.cop_at_reference,
        reference_outdoor_c=config.reference_outdoor_c,
        cop_change_per_k=config.cop_change_per_k,
        discomfort_per_kelvin_hour=config.discomfort_per_kelvin_hour,
    )


class SimulatedAirConditioner:
    """The room and its air conditioner, advanced lazily by the clock (thread safe)."""

    def __init__(
        self,
        name: str,
        config: AirConditionerConfig,
        clock: Clock,
        outdoor: StepProfile,
        timezone: str,
    ) -> None:
        self.name = name
        self.config = config
        self.outdoor = outdoor
        self.timezone = timezone
        self._clock = clock
        self._room_c = config.initial_c
        self._last = clock.now()
        self._changes: list[datetime] = [self._last]
        self._powers: list[float] = [0.0]
        self._lock = threading.Lock()
        self.energy_wh = 0.0
        self.discomfort_k_h = 0.0  # above the band's top, the band in force at each moment
        self.low_c = self.high_c = self._room_c

    def power_w(self, moment: datetime) -> float:
        """The electric power in force at `moment` (what the meter sees)."""
        with self._lock:
            index = bisect_right(self._changes, moment) - 1
            return self._powers[max(0, index)]

    def temperature_c(self) -> float:
        with self._lock:
            self._advance(self._clock.now())
            return self._room_c

    def outdoor_c(self) -> float:
        return self.outdoor(self._clock.now())

    def set_power_w(self, power_w: float) -> None:
        """Run at `power_w` from now on (clipped to what the machine can draw)."""
        power = min(self.config.max_power_kw * 1000, max(0.0, power_w))
        with self._lock:
            now = self._clock.now()
            self._advance(now)
            if self._changes[-1] == now:
                self._powers[-1] = power
            else:
                self._changes.append(now)
                self._powers.append(power)

    def thermostat(self, setpoint_c: float, step_s: int) -> float:
        """Set the power an ideal inverter thermostat needs to hold `setpoint_c` (or the room's
        temperature, if cooler) by the end of the coming step, under the outdoor temperature
        it lives in."""
        now = self._clock.now()
        room = self.temperature_c()
        power = power_to_reach_w(
            self._as_load(room),
            room,
            min(room, setpoint_c),
            outdoor_c=self.outdoor(now),
            gain_w=self.config.heat_gain_w,
            step_h=step_s / 3600,
        )
        self.set_power_w(power)
        return power

    def _as_load(self, room_c: float) -> ThermalLoad:
        return thermal_load(
            self.config,
            name=self.name,
            initial_c=room_c,
            outdoor_c=[30.0],
            comfort_min_c=[self.config.comfort_min_c],
            comfort_max_c=[self.config.comfort_max_c],
        )

    def _advance(self, now: datetime) -> None:
        """Step the room from the last moment to `now`, exactly, piece by piece."""
        if now <= self._last:
            return
        load = self._as_load(self._room_c)
        moment = self._last
        while moment < now:
            index = bisect_right(self._changes, moment) - 1
            power = self._powers[max(0, index)]
            step_end = self.outdoor.start + timedelta(
                seconds=(
                    int((moment - self.outdoor.start).total_seconds()) // self.outdoor.step_s + 1
                )
                * self.outdoor.step_s
            )
            following = [now, step_end]
            if index + 1 < len(self._changes):
                following.append(self._changes[index + 1])
            end = min(t for t in following if t > moment)
            hours = (end - moment).total_seconds() / 3600
            room = next_temperature_c(
                load,
                self._room_c,
                outdoor_c=self.outdoor(moment),
                gain_w=self.config.heat_gain_w,
                power_w=power,
                step_h=hours,
            )
            _, top = self.config.comfort_band_c(moment, self.timezone)
            self.discomfort_k_h += max(0.0, (room + self._room_c) / 2 - top) * hours
            self.energy_wh += power * hours
            self._room_c = room
            self.low_c, self.high_c = min(self.low_c, room), max(self.high_c, room)
            moment = end
        self._last = now

    def summary(self) -> dict[str, float]:
        self.temperature_c()
        return {
            "energy_kwh": round(self.energy_wh / 1000, 3),
            "discomfort_k_h": round(self.discomfort_k_h, 3),
            "indoor_min_c": round(self.low_c, 2),
            "indoor_max_c": round(self.high_c, 2),
        }


class BoardLink:
    """The board's view of a simulated air conditioner: its room and outdoor sensors and its
    set-points (meterchain.agents.planning.AirConditionerDevice). A real board reaches its
    unit over the unit's own protocol instead; the simulation links straight to the model."""

    def __init__(self, aircon: SimulatedAirConditioner) -> None:
        self.aircon = aircon

    async def room_c(self) -> float:
        return self.aircon.temperature_c()

    async def outdoor_c(self) -> float:
        return self.aircon.outdoor_c()

    async def set_power_w(self, power_w: float) -> None:
        self.aircon.set_power_w(power_w)

    async def hold_c(self, setpoint_c: float, step_s: int) -> None:
        self.aircon.thermostat(setpoint_c, step_s)


class LoadWithAirConditioner:
    """A household's load profile plus its air conditioner's power, as the meter sees them."""

    def __init__(self, base: StepProfile, aircon: SimulatedAirConditioner) -> None:
        self.base = base
        self.aircon = aircon

    def __call__(self, moment: datetime) -> float:
        return self.base(moment) + self.aircon.power_w(moment)
