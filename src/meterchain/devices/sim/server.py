"""Serving simulated devices over Modbus TCP or RTU: several unit ids on one link.

A board's devices often share one RS-485 bus (or one Modbus TCP gateway) under different
unit ids; `start_tcp` and `start_serial` serve any set of simulated devices that way. An
unknown unit id gets exception 0x0B on TCP and silence on a serial line, as the meter
simulators do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimDevice

from meterchain.devices.errors import DeviceConnectionFailed
from meterchain.meters.sim.modbus_server import _UnitAwareCore
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
    devices = _devices(units)
    server = ModbusTcpServer(devices, address=(host, port), ignore_missing_devices=False)
    server.context = _UnitAwareCore(devices)
    try:
        await server.serve_forever(background=True)
    except RuntimeError:
        raise DeviceConnectionFailed(
            f"cannot listen on {host}:{port}; is the port in use or the address not local?"
        ) from None
    transport = server.transport
    bound_port = int(transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop() -> None:
        await server.shutdown()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0)

    return RunningServer(f"{host}:{bound_port}", bound_port, stop)


async def start_serial(
    units: Mapping[int, SimulatedUnit], device: str, *, baud: int = 9600
) -> RunningServer:
    """Serve the devices on a serial port (or one end of a virtual cable), Modbus RTU."""
    devices = _devices(units)
    server = ModbusSerialServer(
        devices, framer=FramerType.RTU, port=device, baudrate=baud, ignore_missing_devices=True
    )
    server.context = _UnitAwareCore(devices)
    try:
        await server.serve_forever(background=True)
    except RuntimeError:
        raise DeviceConnectionFailed(
            f"cannot open serial port {device}; check the path and permissions"
        ) from None

    async def stop() -> None:
        await server.shutdown()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0)

    return RunningServer(device, 0, stop)
