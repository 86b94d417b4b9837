"""Which module serves which protocol. Each provides `start_tcp` and `start_serial`:

async def start_tcp(meter: PhysicalMeter, host: str, port: int, **options) -> RunningServer
async def start_serial(meter: PhysicalMeter, device: str, **options) -> RunningServer

`SIMULATOR_OPTIONS` lists the keyword options each protocol's simulator takes.
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


# Keyword options of each simulator's start_tcp/start_serial that the command line offers:
# the register map a Modbus meter serves, and the password of DLMS low-level security
# (client 17) and of IEC 62056-21 programming mode. NBR 14522 as simulated has none.
SIMULATOR_OPTIONS: dict[str, tuple[str, ...]] = {
    "modbus": ("map",),
    "dlms": ("password",),
    "iec62056-21": ("password",),
    "nbr14522": (),
}


def _module(protocol: str) -> Any:
    if protocol not in SIMULATORS:
        raise ValueError(f"no simulator for {protocol!r}; choose one of {', '.join(SIMULATORS)}")
    return importlib.import_module(SIMULATORS[protocol])


def check_simulator_options(protocol: str, options: dict[str, Any]) -> None:
    """Refuse options the protocol's simulator does not take, naming those it does."""
    known = SIMULATOR_OPTIONS.get(protocol, ())
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = f"takes only {', '.join(known)}" if known else "takes no options"
        raise ValueError(f"the {protocol} simulator has no {', '.join(unknown)} option; it {takes}")


async def start_simulator(
    protocol: str, meter: PhysicalMeter, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> RunningServer:
    """Serve `meter` over `protocol` on TCP (port 0 picks a free port; see `.port`)."""
    module = _module(protocol)
    check_simulator_options(protocol, options)
    server: RunningServer = await module.start_tcp(meter, host, port, **options)
    return server


async def start_serial_simulator(
    protocol: str, meter: PhysicalMeter, device: str, **options: Any
) -> RunningServer:
    """Serve `meter` over `protocol` on a serial device (RTU for Modbus, HDLC for DLMS)."""
    module = _module(protocol)
    check_simulator_options(protocol, options)
    server: RunningServer = await module.start_serial(meter, device, **options)
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


SERIAL_CLIENT_URLS: dict[str, str] = {
    "modbus": "modbus+rtu://{device}?unit=1&map=sdm630&baud=9600",
    "dlms": "dlms+hdlc://{device}?client=16&server=1&baud=9600",
    "iec62056-21": "iec62056-21://{device}",
    "nbr14522": "nbr14522://{device}?baud=9600",
}


def serial_client_url(protocol: str, device: str) -> str:
    """The URL a driver uses to read a simulator of `protocol` serving on a serial line, through
    `device` (the client end of a `VirtualSerialLink`, or a real port)."""
    return SERIAL_CLIENT_URLS[protocol].format(device=device)
