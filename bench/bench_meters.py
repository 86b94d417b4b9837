"""Reads per second for each meter protocol over loopback, beside the time one read would take
on a 9600-baud serial line (bytes on the wire × 10 bits / 9600 baud).

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
from meterchain.meters.sim.registry import SIMULATORS, client_url, start_simulator

DURATION_S = 3.0
BAUD = 9600
BITS_PER_BYTE = 10  # start bit, 8 data bits, stop bit


async def measure(protocol: str) -> dict[str, Any]:
    model = build_profile_meter("30010001", "pv-house", ScaledClock(speed=60))
    server = await start_simulator(protocol, model)
    meter: Any = open_meter(client_url(protocol, server.port))
    try:
        await meter.read()  # connect and associate outside the timed loop
        bytes_before = meter.bytes_exchanged
        reads = 0
        started = time.perf_counter()
        while time.perf_counter() - started < DURATION_S:
            await meter.read()
            reads += 1
        elapsed = time.perf_counter() - started
        bytes_per_read = (meter.bytes_exchanged - bytes_before) / reads
    finally:
        await meter.close()
        await server.close()
    return {
        "reads": reads,
        "reads_per_s": reads / elapsed,
        "ms_per_read_loopback": 1000 * elapsed / reads,
        "bytes_per_read": bytes_per_read,
        "ms_per_read_at_9600_baud": 1000 * bytes_per_read * BITS_PER_BYTE / BAUD,
    }


def main() -> None:
    results: dict[str, Any] = {}
    with Progress() as progress:
        task = progress.add_task("protocols", total=len(SIMULATORS))
        for protocol in SIMULATORS:
            results[protocol] = asyncio.run(measure(protocol))
            progress.advance(task)
    table = Table(title=f"one meter read: loopback vs {BAUD} baud serial")
    for column in ("protocol", "reads/s", "ms/read loopback", "bytes/read", "ms/read @9600"):
        table.add_column(column, justify="right")
    for protocol, row in results.items():
        table.add_row(
            protocol,
            f"{row['reads_per_s']:.0f}",
            f"{row['ms_per_read_loopback']:.2f}",
            f"{row['bytes_per_read']:.0f}",
            f"{row['ms_per_read_at_9600_baud']:.0f}",
        )
    Console().print(table)
    path = write_result("meters", {"duration_s": DURATION_S, "baud": BAUD, "protocols": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
