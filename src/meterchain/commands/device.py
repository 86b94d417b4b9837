"""`meterchain device …`: read and set a battery, PV inverter or switched load; simulate them.

Like `meter`, this module imports at module level only what the parser needs; the drivers
(pymodbus) and the simulators are imported by the command that uses them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from meterchain.commands.errors import USER_ERRORS, OptionError, user_errors
from meterchain.commands.meter import Protocol, simulator_clock
from meterchain.devices.errors import DeviceError
from meterchain.meters.errors import MeterError

if TYPE_CHECKING:
    from meterchain.clock import ScaledClock
    from meterchain.devices.base import DeviceState

USER_ERRORS.extend([DeviceError, MeterError])

app = typer.Typer(
    help="Read and set batteries, PV inverters and switched loads; serve simulated ones.",
    no_args_is_help=True,
)
console = Console(highlight=False)


class Kind(StrEnum):
    battery = "battery"
    pv = "pv"
    load = "load"


class OnOff(StrEnum):
    on = "on"
    off = "off"


UrlArgument = Annotated[
    str,
    typer.Argument(
        help="Device URL: sunspec+tcp://HOST:PORT?unit=1, sunspec+rtu:///dev/ttyUSB0?unit=1 "
        "(add kind=battery or kind=pv for a hybrid inverter), relay+tcp://HOST:PORT?unit=3&coil=0."
    ),
]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for each answer.")]


async def _read(url: str, timeout_s: float) -> DeviceState:
    from meterchain.devices.registry import detect_kind, open_device

    kind = await detect_kind(url, timeout_s=timeout_s)
    device = open_device(url, kind, timeout_s=timeout_s)
    try:
        return await device.read_state()
    finally:
        await device.close()


def _print_state(state: DeviceState) -> None:
    from rich.table import Table

    table = Table(title=f"{state.as_json()['kind']} {state.device_id}", show_header=False)
    for key, value in state.as_json().items():
        if key not in ("kind", "device_id"):
            table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    console.print(table)


@app.command()
@user_errors
def read(
    url: UrlArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: Timeout = 2.0,
) -> None:
    """Read a device's state once."""
    import asyncio
    import json

    state = asyncio.run(_read(url, timeout))
    if as_json:
        print(json.dumps(state.as_json()))
    else:
        _print_state(state)


async def _set(
    url: str,
    battery_w: float | None,
    pv_limit_pct: float | None,
    load: OnOff | None,
    timeout_s: float,
) -> dict[str, object]:
    from meterchain.devices.base import BatteryInverter, PvInverter, SwitchedLoad
    from meterchain.devices.registry import detect_kind, open_device

    wanted = "battery" if battery_w is not None else "pv" if pv_limit_pct is not None else "load"
    kind = await detect_kind(url, timeout_s=timeout_s)
    if kind != wanted:
        option = {"battery": "--battery-w", "pv": "--pv-limit-pct", "load": "--load"}[wanted]
        raise OptionError(f"{option} sets a {wanted}, but {url} is a {kind}")
    device = open_device(url, kind, timeout_s=timeout_s)
    try:
        if battery_w is not None:
            assert isinstance(device, BatteryInverter)
            return {"kind": kind, "battery_w": await device.set_power_w(battery_w)}
        if pv_limit_pct is not None:
            assert isinstance(device, PvInverter)
            return {"kind": kind, "pv_limit_pct": await device.set_limit_pct(pv_limit_pct)}
        assert isinstance(device, SwitchedLoad) and load is not None
        on = await device.switch(load is OnOff.on)
        return {"kind": kind, "load": "on" if on else "off"}
    finally:
        await device.close()


@app.command(name="set")
@user_errors
def set_(
    url: UrlArgument,
    battery_w: Annotated[
        float | None,
        typer.Option("--battery-w", help="Battery power in W: + charges, - discharges."),
    ] = None,
    pv_limit_pct: Annotated[
        float | None,
        typer.Option("--pv-limit-pct", help="PV output limit in percent of the rated power."),
    ] = None,
    load: Annotated[OnOff | None, typer.Option("--load", help="Switch the load on or off.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: Timeout = 2.0,
) -> None:
    """Give a device one set-point, clamped to its limits; prints what it confirmed."""
    import asyncio
    import json

    options = {"--battery-w": battery_w, "--pv-limit-pct": pv_limit_pct, "--load": load}
    given = [name for name, value in options.items() if value is not None]
    if len(given) != 1:
        raise OptionError(
            "give exactly one of --battery-w W, --pv-limit-pct P or --load on|off"
            + (f" (got {', '.join(given)})" if given else "")
        )
    result = asyncio.run(_set(url, battery_w, pv_limit_pct, load, timeout))
    if as_json:
        print(json.dumps(result))
    elif "battery_w" in result:
        print(f"battery set-point {result['battery_w']:g} W (confirmed)")
    elif "pv_limit_pct" in result:
        print(f"PV limit {result['pv_limit_pct']:g} % (confirmed)")
    else:
        print(f"load {result['load']} (confirmed)")


@app.command()
@user_errors
def serve(
    kind: Annotated[
        list[Kind],
        typer.Option(help="Device to simulate; repeat for several on one link (units 1, 2, 3)."),
    ],
    site_id: Annotated[str, typer.Option("--site-id", help="Names the site's devices.")] = "sim",
    host: Annotated[str, typer.Option(help="Address to listen on (loopback).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 0,
    serial: Annotated[
        str | None, typer.Option(help="Serve Modbus RTU on this serial device instead of TCP.")
    ] = None,
    pty: Annotated[
        bool,
        typer.Option(help="Serve on a new pseudo-terminal pair; URLs name the client end."),
    ] = False,
    meter: Annotated[
        Protocol | None,
        typer.Option(help="Also serve the site's meter over this protocol (TCP, a free port)."),
    ] = None,
    load_w: Annotated[float, typer.Option(help="Power of the relay-switched load, W.")] = 2000.0,
    speed: Annotated[float, typer.Option(help="How many times faster than real time.")] = 1.0,
    clock_start: Annotated[
        str | None, typer.Option(help="Wall-clock anchor shared with the agents (ISO 8601).")
    ] = None,
    virtual_start: Annotated[
        str | None, typer.Option(help="The site's time at --clock-start (ISO 8601).")
    ] = None,
) -> None:
    """Serve simulated devices of one site (PV 4 kWp, battery 10 kWh / 3 kW, a house load)
    until SIGINT or SIGTERM; they act on the same physical model as the site's meter."""
    import asyncio

    if serial and pty:
        raise OptionError("give --serial DEVICE or --pty, not both")
    if not load_w >= 0:
        raise OptionError(f"--load-w must be 0 W or more, got {load_w:g}")
    clock = simulator_clock(speed, clock_start, virtual_start)
    asyncio.run(
        _serve([k.value for k in kind], site_id, host, port, serial, pty, meter, load_w, clock)
    )


async def _serve(
    kinds: list[str],
    site_id: str,
    host: str,
    port: int,
    serial: str | None,
    pty: bool,
    meter_protocol: Protocol | None,
    load_w: float,
    clock: ScaledClock,
) -> None:
    import asyncio
    import contextlib
    import signal

    from meterchain.devices.sim.site import (
        SWITCHED_LOAD,
        serve_site_serial,
        serve_site_tcp,
        site_units,
    )
    from meterchain.meters.sim.physical import build_profile_meter
    from meterchain.meters.sim.registry import client_url, start_simulator
    from meterchain.meters.sim.serial_link import VirtualSerialLink

    model = build_profile_meter(site_id, "pv-house", clock)
    model.add_switched_load(SWITCHED_LOAD, load_w)
    units = site_units(model, kinds, pv_rated_w=4000.0)
    with contextlib.ExitStack() as stack:
        servers = []
        if pty:
            link = stack.enter_context(VirtualSerialLink())
            server, urls = await serve_site_serial(units, link.meter_end, link.client_end)
        elif serial:
            server, urls = await serve_site_serial(units, serial)
        else:
            server, urls = await serve_site_tcp(units, host, port)
        servers.append(server)
        for kind_name, url in urls.items():
            print(f"serving {kind_name} of site {site_id} (x{clock.speed:g}) on {url}", flush=True)
        if meter_protocol is not None:
            meter_server = await start_simulator(meter_protocol.value, model, host, 0)
            servers.append(meter_server)
            url = client_url(meter_protocol.value, meter_server.port, host)
            print(f"serving meter of site {site_id} on {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        for running in servers:
            await running.close()
        print("stopped", flush=True)
