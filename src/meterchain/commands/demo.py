"""`meterchain demo`: the main job that `make run` starts.

Until the community simulation lands, it serves one simulated meter per protocol on loopback,
reads each through its driver as a board would, switches a relay off and on, and prints what
it saw.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meterchain.clock import ScaledClock
from meterchain.commands.errors import user_errors
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import build_profile_meter
from meterchain.meters.sim.registry import SIMULATORS, start_simulator
from meterchain.model import Reading, RelayState, SetRelay

console = Console(highlight=False)

URL_TEMPLATES = {
    "modbus": "modbus+tcp://127.0.0.1:{port}?unit=1&map=sdm630",
    "dlms": "dlms+tcp://127.0.0.1:{port}?client=16&server=1",
    "iec62056-21": "iec62056-21+tcp://127.0.0.1:{port}",
    "nbr14522": "nbr14522+tcp://127.0.0.1:{port}",
}


async def _demo_one(protocol: str, meter_id: str, speed: float) -> tuple[str, Reading, Reading]:
    start = datetime.now(UTC).replace(hour=15, minute=0, second=0, microsecond=0)
    model = build_profile_meter(meter_id, "pv-house", ScaledClock(start, speed))
    server = await start_simulator(protocol, model)
    url = URL_TEMPLATES[protocol].format(port=server.port)
    meter = open_meter(url)
    try:
        first = await meter.read()
        await asyncio.sleep(0.5)
        await meter.command(SetRelay(RelayState.OFF))
        cut = await meter.read()
        await meter.command(SetRelay(RelayState.ON))
        return url, first, cut
    finally:
        await meter.close()
        await server.close()


async def _demo(speed: float) -> list[tuple[str, Reading, Reading]]:
    return list(
        await asyncio.gather(
            *(
                _demo_one(protocol, f"{30010001 + index}", speed)
                for index, protocol in enumerate(SIMULATORS)
            )
        )
    )


def demo(
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 600.0,
) -> None:
    """Serve a simulated meter per protocol, read each over its protocol, switch its relay."""
    results = asyncio.run(_demo(speed))
    table = Table(title="simulated meters read over their own protocols")
    for column in ("URL", "meter", "import Wh", "export Wh", "power W", "V", "A", "relay cut: W"):
        table.add_column(column)
    for url, first, cut in results:
        table.add_row(
            url,
            first.meter_id,
            f"{first.import_wh:,.0f}",
            f"{first.export_wh:,.0f}",
            f"{first.power_w:,.0f}",
            f"{first.voltage_v:.1f}",
            f"{first.current_a:.2f}",
            f"{cut.power_w:,.0f} ({cut.relay.value})",
        )
    console.print(table)


demo_command = user_errors(demo)
