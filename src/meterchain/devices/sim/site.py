"""The devices of one simulated site, as a board would find them on its bus.

One Modbus server (a TCP port, or an RS-485 line) carries the site's devices under fixed unit
ids: the battery inverter on 1, the PV inverter on 2, the relay board on 3 (its coil 0
switches the load named `SWITCHED_LOAD`). All act on the site's one physical model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from meterchain.devices.maps import DEFAULT_MAPS, load_device_map
from meterchain.devices.sim.relay_board import RelayBoard
from meterchain.devices.sim.server import SimulatedUnit, start_serial, start_tcp
from meterchain.devices.sim.sunspec_server import PvBehaviour, StorageBehaviour, SunSpecRegisters
from meterchain.meters.sim.physical import PhysicalMeter
from meterchain.meters.sim.server import RunningServer

UNITS = {"battery": 1, "pv": 2, "load": 3}
SWITCHED_LOAD = "load"
LOAD_COIL = 0


def site_units(
    meter: PhysicalMeter,
    kinds: Iterable[str],
    *,
    pv_rated_w: float | None = None,
    faults: Iterable[str] = (),
) -> dict[int, SimulatedUnit]:
    """The simulated devices of `kinds` on `meter`, by unit id."""
    units: dict[int, SimulatedUnit] = {}
    for kind in dict.fromkeys(kinds):
        device_id = f"{kind}-{meter.meter_id}"
        if kind == "battery":
            units[UNITS[kind]] = SunSpecRegisters(
                meter,
                load_device_map(DEFAULT_MAPS[kind]),
                StorageBehaviour(meter),
                device_id=device_id,
                faults=faults,
            )
        elif kind == "pv":
            if pv_rated_w is None:
                raise ValueError("a simulated PV inverter needs its rated power")
            units[UNITS[kind]] = SunSpecRegisters(
                meter,
                load_device_map(DEFAULT_MAPS[kind]),
                PvBehaviour(pv_rated_w),
                device_id=device_id,
                faults=faults,
            )
        elif kind == "load":
            units[UNITS[kind]] = RelayBoard(meter, [SWITCHED_LOAD], faults=faults)
        else:
            raise ValueError(f"no simulated device of kind {kind!r}; choose battery, pv or load")
    return units


def device_urls(units: Mapping[int, SimulatedUnit], link: str) -> dict[str, str]:
    """The URL of each served device; `link` is `+tcp://HOST:PORT` or `+rtu:///dev/…`."""
    urls = {}
    for unit, device in sorted(units.items()):
        if device.kind == "load":
            urls["load"] = f"relay{link}?unit={unit}&coil={LOAD_COIL}"
        else:
            urls[device.kind] = f"sunspec{link}?unit={unit}"
    return urls


async def serve_site_tcp(
    units: Mapping[int, SimulatedUnit], host: str = "127.0.0.1", port: int = 0
) -> tuple[RunningServer, dict[str, str]]:
    server = await start_tcp(units, host, port)
    return server, device_urls(units, f"+tcp://{host}:{server.port}")


async def serve_site_serial(
    units: Mapping[int, SimulatedUnit], device: str, client_device: str | None = None
) -> tuple[RunningServer, dict[str, str]]:
    """Serve on `device`; the URLs name `client_device` (the other end of a virtual cable)."""
    server = await start_serial(units, device)
    return server, device_urls(units, f"+rtu://{client_device or device}")
