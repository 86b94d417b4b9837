"""`meterchain meter …`: read a meter, switch its relay, serve a simulated one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meterchain.clock import ScaledClock
from meterchain.commands.errors import USER_ERRORS, user_errors
from meterchain.meters.errors import MeterError
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import PROFILES, build_profile_meter
from meterchain.meters.sim.registry import start_serial_simulator, start_simulator
from meterchain.meters.sim.serial_link import VirtualSerialLink
from meterchain.model import Reading, RelayState, SetRelay

USER_ERRORS.append(MeterError)

app = typer.Typer(
    help="Read meters, switch relays and serve simulated meters.", no_args_is_help=True
)
console = Console(highlight=False)


class Protocol(StrEnum):
    modbus = "modbus"
    dlms = "dlms"
    iec62056_21 = "iec62056-21"
    nbr14522 = "nbr14522"


class Profile(StrEnum):
    house = "house"
    pv_house = "pv-house"
    flat = "flat"


assert {p.value for p in Profile} == set(PROFILES)


async def _read(url: str, timeout_s: float) -> Reading:
    meter = open_meter(url, timeout_s=timeout_s)
    try:
        return await meter.read()
    finally:
        await meter.close()


async def _switch(url: str, state: RelayState, timeout_s: float) -> RelayState:
    meter = open_meter(url, timeout_s=timeout_s)
    try:
        return await meter.command(SetRelay(state))
    finally:
        await meter.close()


def _print_reading(reading: Reading) -> None:
    table = Table(title=f"meter {reading.meter_id}", show_header=False)
    table.add_row("time (UTC)", reading.timestamp.isoformat())
    table.add_row("import", f"{reading.import_wh:,.1f} Wh")
    table.add_row("export", f"{reading.export_wh:,.1f} Wh")
    table.add_row("power", f"{reading.power_w:,.1f} W")
    table.add_row("voltage", f"{reading.voltage_v:.1f} V")
    table.add_row("current", f"{reading.current_a:.2f} A")
    table.add_row("relay", reading.relay.value)
    console.print(table)


@app.command()
@user_errors
def read(
    url: Annotated[str, typer.Argument(help="Meter URL, e.g. modbus+tcp://127.0.0.1:5020?unit=1")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 2.0,
) -> None:
    """Read a meter once."""
    reading = asyncio.run(_read(url, timeout))
    if as_json:
        print(json.dumps(reading.as_json()))
    else:
        _print_reading(reading)


@app.command()
@user_errors
def relay(
    url: Annotated[str, typer.Argument(help="Meter URL.")],
    state: Annotated[RelayState, typer.Option(help="on connects the load, off disconnects it.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 2.0,
) -> None:
    """Switch the meter's relay and print the new state."""
    print(asyncio.run(_switch(url, state, timeout)).value)


@app.command()
@user_errors
def serve(
    protocol: Annotated[Protocol, typer.Option(help="Protocol to speak.")],
    meter_id: Annotated[str, typer.Option("--meter-id", help="The meter's id.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 0,
    profile: Annotated[Profile, typer.Option(help="What sits behind the meter.")] = Profile.house,
    speed: Annotated[float, typer.Option(help="How many times faster than real time.")] = 1.0,
    serial: Annotated[
        str | None, typer.Option(help="Serve on this serial device instead of TCP.")
    ] = None,
    pty: Annotated[
        bool, typer.Option(help="Serve on a new pseudo-terminal pair; prints the client's path.")
    ] = False,
) -> None:
    """Serve one simulated meter until SIGINT or SIGTERM."""
    asyncio.run(_serve(protocol.value, meter_id, host, port, profile.value, speed, serial, pty))


async def _serve(
    protocol: str,
    meter_id: str,
    host: str,
    port: int,
    profile: str,
    speed: float,
    serial: str | None,
    pty: bool,
) -> None:
    meter = build_profile_meter(meter_id, profile, ScaledClock(speed=speed))
    with contextlib.ExitStack() as stack:
        if pty:
            link = stack.enter_context(VirtualSerialLink())
            serial = link.meter_end
        if serial:
            server = await start_serial_simulator(protocol, meter, serial)
            where = f"serial {serial}" + (f" (clients open {link.client_end})" if pty else "")
        else:
            server = await start_simulator(protocol, meter, host, port)
            where = f"{host}:{server.port}"
        print(f"serving {protocol} meter {meter_id} ({profile}, x{speed:g}) on {where}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.close()
        print("stopped", flush=True)
