"""Serving simulated devices over Modbus TCP or RTU: several unit ids on one link.

A board's devices often share one RS-485 bus (or one Modbus TCP gateway) under different
unit ids; `start_tcp` and `start_serial` serve any set of simulated devices that way. An
unknown unit id gets exception 0x0B on TCP and silence on a serial line: the serving is the
meter simulators' (`meters/sim/modbus_serving.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pymodbus.simulator import SimDevice

from meterchain.devices.errors import DeviceConnectionFailed
from meterchain.meters.sim.modbus_serving import serve_serial, serve_tcp
from meterchain.meters.sim.server import RunningServer


class SimulatedUnit(Protocol):
    """One simulated device: what it is and the pymodbus device that serves it."""

    kind: str

    def sim_device(self, unit: int) -> SimDevice: ...


def _devices(units: Mapping[int, SimulatedUnit]) -> list[SimDevice]:
    if not units:
        raise ValueError("serve at least one device")
    for unit in units:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit id {unit} is outside 1..247")
    return [device.sim_device(unit) for unit, device in sorted(units.items())]


async def start_tcp(
    units: Mapping[int, SimulatedUnit], host: str = "127.0.0.1", port: int = 0
) -> RunningServer:
    """Serve the devices, each under its unit id, on TCP host:port (0 picks a free port)."""
    return await serve_tcp(_devices(units), host, port, error=DeviceConnectionFailed)


async def start_serial(
    units: Mapping[int, SimulatedUnit], device: str, *, baud: int = 9600
) -> RunningServer:
    """Serve the devices on a serial port (or one end of a virtual cable), Modbus RTU."""
    return await serve_serial(_devices(units), device, baud=baud, error=DeviceConnectionFailed)
