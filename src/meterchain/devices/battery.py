"""The battery interface a board drives, and the simulator's direct link to the physical model."""

from __future__ import annotations

from typing import Protocol

from meterchain.meters.sim.physical import PhysicalMeter


class BatteryDevice(Protocol):
    """A battery inverter: read its state of charge, give it a power set-point."""

    async def soc_fraction(self) -> float: ...

    async def set_power_w(self, power_w: float) -> None:
        """Positive charges, negative discharges."""
        ...


class SimulatedBattery:
    """The battery behind a simulated meter, driven in-process (the community simulation).

    A board drives a real inverter over its protocol instead; the simulation links straight to
    the physical model because the battery shares the meter's connection point.
    """

    def __init__(self, meter: PhysicalMeter) -> None:
        self._meter = meter

    async def soc_fraction(self) -> float:
        soc = self._meter.state().battery_soc_fraction
        if soc is None:
            raise ValueError(f"meter {self._meter.meter_id} has no battery")
        return soc

    async def set_power_w(self, power_w: float) -> None:
        self._meter.set_battery_power(power_w)
