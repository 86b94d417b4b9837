"""`meterchain meter …`: read a meter, switch its relay, serve a simulated one.

Every `meterchain` start imports this module, so at module level it imports only what the
command line's parser needs; asyncio, the drivers and the simulators are imported by the
command that uses them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from meterchain.clock import ScaledClock, anchored_clock
from meterchain.commands.errors import USER_ERRORS, OptionError, user_errors
from meterchain.meters.errors import MeterError
from meterchain.model import RelayState

if TYPE_CHECKING:
    from meterchain.model import Reading

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
    """The simulator's profiles (meters.sim.physical.PROFILES; a test keeps them equal)."""

    house = "house"
    pv_house = "pv-house"
    flat = "flat"


# What --password means for the protocols that have one.
PASSWORD_USES = {
    "dlms": "low-level security of client 17",
    "iec62056-21": "programming mode",
}


async def _read(url: str, timeout_s: float) -> Reading:
    from meterchain.meters.registry import open_meter

    meter = open_meter(url, timeout_s=timeout_s)
    try:
        return await meter.read()
    finally:
        await meter.close()


async def _switch(url: str, state: RelayState, timeout_s: float) -> RelayState:
    from meterchain.meters.registry import open_meter
    from meterchain.model import SetRelay

    meter = open_meter(url, timeout_s=timeout_s)
    try:
        return await meter.command(SetRelay(state))
    finally:
        await meter.close()


def _print_reading(reading: Reading) -> None:
    from rich.table import Table

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
    import asyncio
    import json

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
    import asyncio

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
    register_map: Annotated[
        str | None,
        typer.Option(
            "--map",
            help="Modbus only: the register map to serve, a shipped one (sdm630, sunspec203) "
            "or a .toml map file. Default sdm630.",
        ),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            help="DLMS and IEC 62056-21 only: the meter's password (DLMS low-level security "
            "for client 17, default 12345678; IEC 62056-21 programming mode, default 00000000).",
        ),
    ] = None,
    clock_start: Annotated[
        str | None,
        typer.Option(
            help="Wall-clock anchor (ISO 8601 with zone) shared with the agents' [clock] start, "
            "so meters and agents agree on virtual time. Default: now."
        ),
    ] = None,
    virtual_start: Annotated[
        str | None,
        typer.Option(
            help="The meter's time at --clock-start (ISO 8601 with zone), e.g. a sunny morning."
        ),
    ] = None,
) -> None:
    """Serve one simulated meter until SIGINT or SIGTERM."""
    import asyncio

    options = simulator_options(protocol.value, register_map, password)
    clock = simulator_clock(speed, clock_start, virtual_start)
    asyncio.run(
        _serve(protocol.value, meter_id, host, port, profile.value, clock, serial, pty, options)
    )


def _moment(option: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OptionError(f"{option} {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise OptionError(f"{option} {text!r} needs a time zone, e.g. 2026-11-24T13:00:00Z")
    return moment


def simulator_clock(
    speed: float, clock_start: str | None, virtual_start: str | None
) -> ScaledClock:
    """The simulated meter's clock: `speed` times real time, anchored like the agents' clock."""
    if speed <= 0:
        raise OptionError(f"--speed must be positive, got {speed:g}")
    now = datetime.now(UTC)
    if clock_start is None and virtual_start is None:
        return ScaledClock(now, speed)
    wall = _moment("--clock-start", clock_start) if clock_start else now
    virtual = _moment("--virtual-start", virtual_start) if virtual_start else None
    return anchored_clock(wall, virtual, speed, now)


def simulator_options(
    protocol: str, register_map: str | None, password: str | None
) -> dict[str, str]:
    """The simulator keyword options from --map and --password, refused where they mean nothing."""
    options: dict[str, str] = {}
    if register_map is not None:
        if protocol != "modbus":
            raise OptionError(
                f"--map chooses a Modbus register map; a {protocol} meter has none. "
                "Drop --map, or serve --protocol modbus"
            )
        if not register_map:
            raise OptionError("--map needs a map name (e.g. sdm630) or a .toml file")
        options["map"] = register_map
    if password is not None:
        if protocol not in PASSWORD_USES:
            raise OptionError(
                f"--password sets the password of DLMS low-level security or of IEC 62056-21 "
                f"programming mode; the {protocol} simulator has none. Drop --password"
            )
        if not password:
            raise OptionError(
                f"--password must not be empty (it is the {PASSWORD_USES[protocol]} password)"
            )
        options["password"] = password
    return options


async def _serve(
    protocol: str,
    meter_id: str,
    host: str,
    port: int,
    profile: str,
    clock: ScaledClock,
    serial: str | None,
    pty: bool,
    options: dict[str, str],
) -> None:
    import asyncio
    import contextlib
    import signal

    from meterchain.meters.sim.physical import build_profile_meter
    from meterchain.meters.sim.registry import start_serial_simulator, start_simulator
    from meterchain.meters.sim.serial_link import VirtualSerialLink

    meter = build_profile_meter(meter_id, profile, clock)
    details = f"{profile}, x{clock.speed:g}" + (
        f", map {options['map']}" if "map" in options else ""
    )
    with contextlib.ExitStack() as stack:
        if pty:
            link = stack.enter_context(VirtualSerialLink())
            serial = link.meter_end
        if serial:
            server = await start_serial_simulator(protocol, meter, serial, **options)
            where = f"serial {serial}" + (f" (clients open {link.client_end})" if pty else "")
        else:
            server = await start_simulator(protocol, meter, host, port, **options)
            where = f"{host}:{server.port}"
        print(f"serving {protocol} meter {meter_id} ({details}) on {where}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.close()
        print("stopped", flush=True)
