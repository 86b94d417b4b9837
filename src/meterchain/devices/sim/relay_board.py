"""A simulated Modbus relay board: coil N switches a load of the physical model.

Each coil is bound to a relay-switched load of the PhysicalMeter (`add_switched_load`), so
switching it changes what the meter measures. Reading a coil reads the load's state; coils
with nothing behind them read 0 and refuse writes (exception 2), as unused addresses do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from meterchain.devices.sim.sunspec_server import FAULTS
from meterchain.meters.sim.modbus_serving import sim_device
from meterchain.meters.sim.physical import PhysicalMeter

COILS = 16  # coils 0..15, one register of bits


class RelayBoard:
    """`loads[n]` is the name of the switched load on coil n (None: nothing wired)."""

    kind = "load"

    def __init__(
        self, meter: PhysicalMeter, loads: Sequence[str | None], faults: Iterable[str] = ()
    ) -> None:
        if not 1 <= len(loads) <= COILS:
            raise ValueError(f"a relay board has 1..{COILS} coils, not {len(loads)}")
        for name in loads:
            if name is not None:
                meter.switched_load_on(name)  # ValueError if the meter has no such load
        self.meter = meter
        self.loads = list(loads)
        self.faults = frozenset(faults)
        unknown = sorted(self.faults - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault {', '.join(unknown)}; known: {', '.join(FAULTS)}")

    def coil(self, index: int) -> bool:
        name = self.loads[index] if index < len(self.loads) else None
        return name is not None and self.meter.switched_load_on(name)

    def sim_device(self, unit: int) -> SimDevice:
        coils = SimData(0, values=[False] * COILS, datatype=DataType.BITS)
        return sim_device(unit, self.action, coils=coils)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code not in (1, 5, 15):
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            if "refuse-writes" in self.faults:
                return ExcCodes.DEVICE_FAILURE
            for offset, value in enumerate(set_values):
                index = address + offset
                name = self.loads[index] if index < len(self.loads) else None
                if name is None:
                    return ExcCodes.ILLEGAL_ADDRESS
                if "ignore-writes" not in self.faults:
                    self.meter.set_switched_load(name, bool(value))
        word = 0
        for index in range(COILS):
            if self.coil(index):
                word |= 1 << index
        registers[0] = word
        return None
