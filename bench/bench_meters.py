"""Reads per second for each meter protocol over loopback TCP and over a serial line made of two
pseudo-terminals (RTU for Modbus, HDLC for DLMS, plain serial for IEC 62056-21 and NBR 14522),
beside the time one read would take on a 9600-baud line (bytes on the wire × 10 bits / 9600).

The 9600-baud figure uses the bytes of the serial framing, which is what such a line carries.
A pseudo-terminal has no baud rate: its reads/s are the software's limit plus the protocol's own
waits (IEC 62056-21's pause before switching baud rate, NBR 14522's wait for the meter's ENQ).

Writes bench/results/meters.json.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.common import write_result
from meterchain.clock import ScaledClock
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import build_profile_meter
from meterchain.meters.sim.registry import (
    SIMULATORS,
    client_url,
    serial_client_url,
    start_serial_simulator,
    start_simulator,
)
from meterchain.meters.sim.serial_link import VirtualSerialLink

DURATION_S = 3.0
BAUD = 9600
BITS_PER_BYTE = 10  # start bit, 8 data bits (or 7 and parity), stop bit
SERIAL_FRAMING = {"modbus": "rtu", "dlms": "hdlc", "iec62056-21": "serial", "nbr14522": "serial"}


async def _time_reads(meter: Any) -> dict[str, Any]:
    await meter.read()  # connect and associate outside the timed loop
    bytes_before = meter.bytes_exchanged
    reads = 0
    started = time.perf_counter()
    while time.perf_counter() - started < DURATION_S:
        await meter.read()
        reads += 1
    elapsed = time.perf_counter() - started
    bytes_per_read = (meter.bytes_exchanged - bytes_before) / reads
    return {
        "reads": reads,
        "reads_per_s": reads / elapsed,
        "ms_per_read": 1000 * elapsed / reads,
        "bytes_per_read": bytes_per_read,
        "ms_per_read_at_9600_baud": 1000 * bytes_per_read * BITS_PER_BYTE / BAUD,
    }


async def measure_tcp(protocol: str) -> dict[str, Any]:
    model = build_profile_meter("30010001", "pv-house", ScaledClock(speed=60))
    server = await start_simulator(protocol, model)
    meter: Any = open_meter(client_url(protocol, server.port))
    try:
        return await _time_reads(meter)
    finally:
        await meter.close()
        await server.close()


async def measure_serial(protocol: str) -> dict[str, Any]:
    model = build_profile_meter("30010001", "pv-house", ScaledClock(speed=60))
    with VirtualSerialLink() as link:
        server = await start_serial_simulator(protocol, model, link.meter_end)
        meter: Any = open_meter(serial_client_url(protocol, link.client_end))
        try:
            result = await _time_reads(meter)
        finally:
            await meter.close()
            await server.close()
    return {"framing": SERIAL_FRAMING[protocol], **result}


def main() -> None:
    results: dict[str, Any] = {}
    with Progress() as progress:
        task = progress.add_task("protocols × transports", total=2 * len(SIMULATORS))
        for protocol in SIMULATORS:
            tcp = asyncio.run(measure_tcp(protocol))
            progress.advance(task)
            serial = asyncio.run(measure_serial(protocol))
            progress.advance(task)
            results[protocol] = {
                # the loopback figures under their original names, for earlier readers of the file
                "reads": tcp["reads"],
                "reads_per_s": tcp["reads_per_s"],
                "ms_per_read_loopback": tcp["ms_per_read"],
                "bytes_per_read": tcp["bytes_per_read"],
                "ms_per_read_at_9600_baud": tcp["ms_per_read_at_9600_baud"],
                "serial": serial,
            }
    table = Table(title=f"one meter read: loopback TCP, pseudo-terminal, {BAUD}-baud line")
    columns = (
        "protocol",
        "TCP reads/s",
        "TCP ms/read",
        "TCP bytes/read",
        "serial framing",
        "pty reads/s",
        "serial bytes/read",
        f"ms/read @{BAUD}",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for protocol, row in results.items():
        serial = row["serial"]
        table.add_row(
            protocol,
            f"{row['reads_per_s']:.0f}",
            f"{row['ms_per_read_loopback']:.2f}",
            f"{row['bytes_per_read']:.0f}",
            serial["framing"],
            f"{serial['reads_per_s']:.1f}",
            f"{serial['bytes_per_read']:.0f}",
            f"{serial['ms_per_read_at_9600_baud']:.0f}",
        )
    Console(width=140).print(table)
    path = write_result("meters", {"duration_s": DURATION_S, "baud": BAUD, "protocols": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
