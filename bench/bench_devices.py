"""What driving a device costs: a state read, a battery set-point with its read-back, a PV
limit, a relay switch; over loopback TCP and over a serial line made of two pseudo-terminals
(Modbus RTU), beside the time each would take on a 9600-baud RS-485 line (bytes on the wire
× 10 bits / 9600).

Writes bench/results/devices.json.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.common import write_result
from meterchain.clock import ScaledClock
from meterchain.devices.base import BatteryInverter, PvInverter, SwitchedLoad
from meterchain.devices.modbus_link import LinkPool
from meterchain.devices.registry import open_device
from meterchain.devices.sim.site import (
    SWITCHED_LOAD,
    serve_site_serial,
    serve_site_tcp,
    site_units,
)
from meterchain.meters.sim.physical import build_profile_meter
from meterchain.meters.sim.serial_link import VirtualSerialLink
from meterchain.meters.sim.server import RunningServer

DURATION_S = 2.0
BAUD = 9600
BITS_PER_BYTE = 10
KINDS = ["battery", "pv", "load"]


async def _time(links: LinkPool, operation: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    await operation(0)  # connect and find the models outside the timed loop
    before = links.bytes_exchanged
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < DURATION_S:
        await operation(count)
        count += 1
    elapsed = time.perf_counter() - started
    exchanged = links.bytes_exchanged - before
    bytes_per_op = exchanged / count
    return {
        "per_s": count / elapsed,
        "ms_each": 1000 * elapsed / count,
        "bytes_each": bytes_per_op,
        "ms_each_at_9600_baud": 1000 * bytes_per_op * BITS_PER_BYTE / BAUD,
    }


async def measure(transport: str) -> dict[str, dict[str, float]]:
    model = build_profile_meter("bench", "pv-house", ScaledClock(speed=1))
    model.add_switched_load(SWITCHED_LOAD, 2000.0)
    units = site_units(model, KINDS, pv_rated_w=4000.0)
    link: VirtualSerialLink | None = None
    server: RunningServer
    if transport == "tcp":
        server, urls = await serve_site_tcp(units)
    else:
        link = VirtualSerialLink()
        server, urls = await serve_site_serial(units, link.meter_end, link.client_end)
    links = LinkPool()
    battery = open_device(urls["battery"], "battery", links=links)
    pv = open_device(urls["pv"], "pv", links=links)
    load = open_device(urls["load"], "load", links=links)
    assert isinstance(battery, BatteryInverter) and isinstance(pv, PvInverter)
    assert isinstance(load, SwitchedLoad)
    try:
        return {
            "battery_state": await _time(links, lambda _i: battery.read_state()),
            "battery_setpoint": await _time(links, lambda i: battery.set_power_w(-500 - i % 50)),
            "pv_limit": await _time(links, lambda i: pv.set_limit_pct(50 + i % 40)),
            "load_switch": await _time(links, lambda i: load.switch(i % 2 == 0)),
        }
    finally:
        await links.close()
        await server.close()
        if link is not None:
            link.close()


def main() -> None:
    results: dict[str, Any] = {}
    with Progress() as progress:
        task = progress.add_task("transports", total=2)
        for transport in ("tcp", "rtu"):
            results[transport] = asyncio.run(measure(transport))
            progress.advance(task)
    table = Table(title=f"driving a device: loopback TCP, pseudo-terminal (RTU), {BAUD}-baud line")
    for column in ("operation", "TCP ms", "pty ms", "RTU bytes", f"ms @{BAUD}"):
        table.add_column(column, justify="right")
    for operation, tcp in results["tcp"].items():
        rtu = results["rtu"][operation]
        table.add_row(
            operation,
            f"{tcp['ms_each']:.2f}",
            f"{rtu['ms_each']:.2f}",
            f"{rtu['bytes_each']:.0f}",
            f"{rtu['ms_each_at_9600_baud']:.0f}",
        )
    Console(width=120).print(table)
    path = write_result("devices", {"duration_s": DURATION_S, "baud": BAUD, **results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
