"""Which module serves which protocol. Each provides `start_tcp` and `start_serial`:

async def start_tcp(meter: PhysicalMeter, host: str, port: int) -> RunningServer
async def start_serial(meter: PhysicalMeter, device: str) -> RunningServer
"""

from __future__ import annotations

import importlib
from typing import Any

from meterchain.meters.sim.physical import PhysicalMeter
from meterchain.meters.sim.server import RunningServer

SIMULATORS: dict[str, str] = {
    "modbus": "meterchain.meters.sim.modbus_server",
    "dlms": "meterchain.meters.sim.dlms_server",
    "iec62056-21": "meterchain.meters.sim.iec62056_21_server",
    "nbr14522": "meterchain.meters.sim.nbr14522_server",
}


def _module(protocol: str) -> Any:
    if protocol not in SIMULATORS:
        raise ValueError(f"no simulator for {protocol!r}; choose one of {', '.join(SIMULATORS)}")
    return importlib.import_module(SIMULATORS[protocol])


async def start_simulator(
    protocol: str, meter: PhysicalMeter, host: str = "127.0.0.1", port: int = 0
) -> RunningServer:
    """Serve `meter` over `protocol` on TCP (port 0 picks a free port; see `.port`)."""
    server: RunningServer = await _module(protocol).start_tcp(meter, host, port)
    return server


async def start_serial_simulator(protocol: str, meter: PhysicalMeter, device: str) -> RunningServer:
    """Serve `meter` over `protocol` on a serial device (RTU for Modbus, HDLC for DLMS)."""
    server: RunningServer = await _module(protocol).start_serial(meter, device)
    return server


CLIENT_URLS: dict[str, str] = {
    "modbus": "modbus+tcp://{host}:{port}?unit=1&map=sdm630",
    "dlms": "dlms+tcp://{host}:{port}?client=16&server=1",
    "iec62056-21": "iec62056-21+tcp://{host}:{port}",
    "nbr14522": "nbr14522+tcp://{host}:{port}",
}


def client_url(protocol: str, port: int, host: str = "127.0.0.1") -> str:
    """The URL a driver uses to read a simulator of `protocol` serving on TCP host:port."""
    return CLIENT_URLS[protocol].format(host=host, port=port)
