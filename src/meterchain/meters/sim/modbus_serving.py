"""Serving pymodbus simulated devices over Modbus TCP or RTU: what every Modbus simulator shares.

The meter simulator (`meters/sim/modbus_server.py`) and the device simulators
(`devices/sim/`) build pymodbus `SimDevice`s with `sim_device` and serve them with `serve_tcp`
or `serve_serial`. On TCP an unknown unit id gets exception 0x0B (gateway target failed to
respond), as from a Modbus gateway; on a serial line it gets silence, as from an RS-485 bus
where nobody has it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from meterchain.meters.sim.server import RunningServer

# pymodbus logs every refused request (unknown unit, bad address) at ERROR with a frame dump;
# for a simulator those are the expected answers to tests, not faults. Keep only CRITICAL
# unless the application has set the "pymodbus" logger's level itself.
_PYMODBUS_LOG = logging.getLogger("pymodbus")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)

#: pymodbus calls it before it answers (function code, first register of the request, address,
#: count, the registers to fill in place, the values written or None); an ExcCodes refuses.
SimAction = Callable[
    [int, int, int, int, list[int], list[int] | list[bool] | None],
    Coroutine[None, None, ExcCodes | None],
]


def unused_bits() -> SimData:
    """A table of bits the device does not serve (pymodbus wants all four tables)."""
    return SimData(0, values=[False], datatype=DataType.BITS, readonly=True)


def unused_registers() -> SimData:
    """A table of registers the device does not serve."""
    return SimData(0, values=[0], datatype=DataType.REGISTERS, readonly=True)


def sim_device(
    unit: int,
    action: SimAction,
    *,
    coils: SimData | None = None,
    holding: SimData | None = None,
    input_registers: SimData | None = None,
) -> SimDevice:
    """A pymodbus SimDevice under `unit` whose `action` serves every request; a table not
    given serves nothing (discrete inputs never are)."""
    return SimDevice(
        unit,
        simdata=(
            [coils or unused_bits()],
            [unused_bits()],
            [holding or unused_registers()],
            [input_registers or unused_registers()],
        ),
        action=action,
    )


class UnitAwareCore(SimCore):
    """pymodbus's SimCore falls back to device 0 and fails with KeyError for any other unit
    id; this raises NoSuchIdException, which the server turns into exception 0x0B or silence."""

    def _check(self, device_id: int) -> None:
        if device_id not in self.devices:
            raise NoSuchIdException(f"no device with unit id {device_id}")

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        self._check(device_id)
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        self._check(device_id)
        return await super().async_setValues(device_id, func_code, address, values)


async def serve_tcp(
    devices: Sequence[SimDevice], host: str, port: int, *, error: type[Exception]
) -> RunningServer:
    """Serve `devices`, each under its unit id, on TCP host:port (0 picks a free port).

    `error` is what the caller's simulators raise when the port cannot be had.
    """
    server = ModbusTcpServer(list(devices), address=(host, port), ignore_missing_devices=False)
    server.context = UnitAwareCore(list(devices))
    try:
        await server.serve_forever(background=True)
    except RuntimeError:
        raise error(
            f"cannot listen on {host}:{port}; is the port in use or the address not local?"
        ) from None
    transport = server.transport
    bound_port = int(transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    return RunningServer(f"{host}:{bound_port}", bound_port, _stopper(server))


async def serve_serial(
    devices: Sequence[SimDevice], device: str, *, baud: int, error: type[Exception]
) -> RunningServer:
    """Serve `devices` on a serial port (or one end of a virtual cable), Modbus RTU."""
    server = ModbusSerialServer(
        list(devices),
        framer=FramerType.RTU,
        port=device,
        baudrate=baud,
        ignore_missing_devices=True,
    )
    server.context = UnitAwareCore(list(devices))
    try:
        await server.serve_forever(background=True)
    except RuntimeError:
        raise error(f"cannot open serial port {device}; check the path and permissions") from None
    return RunningServer(device, 0, _stopper(server))


def _stopper(server: ModbusTcpServer | ModbusSerialServer) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        await server.shutdown()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0)

    return stop
