"""Reads per second for each meter protocol over loopback TCP and over a serial line made of two
pseudo-terminals (RTU for Modbus, HDLC for DLMS, plain serial for IEC 62056-21 and NBR 14522),
beside the time one read would take on a 9600-baud line (bytes on the wire × 10 bits / 9600).

The 9600-baud figure uses the bytes of the serial framing, which is what such a line carries.
A pseudo-terminal has no baud rate: its reads/s are the software's limit plus the protocol's own
waits (IEC 62056-21's pause before switching baud rate, NBR 14522's wait for the meter's ENQ).

Then the slow-meter attacks: how long one read (default tries) lasts against a meter that keeps
every wait just inside the timeout, beside the driver's overall deadline:
- drip: every byte the meter sends comes 0.8 × timeout after the one before (timeout 0.3 s);
- slow answers: every answer starts 0.8 × timeout late (timeout 0.3 s);
- NBR 14522 WAIT/NAK storm: per command 12 WAITs, then 6 responses with a bad CRC, each
  0.8 × timeout after the last (the default timeout, 2 s), all within the protocol's limits.

Writes bench/results/meters.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.common import write_result
from meterchain.clock import ScaledClock
from meterchain.meters import nbr14522_codec as nbr
from meterchain.meters.errors import MeterError
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.nbr14522_server import Nbr14522Simulator
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
ATTACK_TIMEOUT_S = 0.3  # the review's IEC 62056-21 case
STORM_TIMEOUT_S = 2.0  # the drivers' default: the review's NBR 14522 case
JUST_INSIDE = 0.8  # each wait lasts this fraction of the timeout
GIVE_UP_S = 600.0  # a read still running after this is reported as unbounded


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


# --- slow meters -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def slow_line(
    upstream_port: int, byte_delay_s: float = 0.0, answer_delay_s: float = 0.0
) -> AsyncIterator[int]:
    """A TCP relay to a simulator that delays every byte, or every answer, the meter sends."""
    tasks: set[asyncio.Task[None]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)

        async def client_to_meter() -> None:
            while data := await reader.read(4096):
                up_writer.write(data)

        forward = asyncio.create_task(client_to_meter())
        try:
            while chunk := await up_reader.read(4096):
                await asyncio.sleep(answer_delay_s)
                for piece in [bytes((byte,)) for byte in chunk] if byte_delay_s else [chunk]:
                    if writer.is_closing():  # the driver gave up and hung up
                        return
                    writer.write(piece)
                    await asyncio.sleep(byte_delay_s)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            forward.cancel()
            up_writer.close()
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()


@contextlib.asynccontextmanager
async def nbr_storm(timeout_s: float) -> AsyncIterator[int]:
    """An NBR 14522 meter that answers each command after 12 WAITs and 6 bad-CRC responses."""
    model = build_profile_meter("30010001", "pv-house", ScaledClock(speed=60))
    simulator = Nbr14522Simulator(model)
    pause_s = JUST_INSIDE * timeout_s

    async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        received = b""
        while len(received) < nbr.COMMAND_SIZE:
            if writer.is_closing():
                raise ConnectionResetError
            writer.write(bytes((nbr.ENQ,)))
            with contextlib.suppress(TimeoutError):
                piece = await asyncio.wait_for(reader.read(nbr.COMMAND_SIZE - len(received)), 0.05)
                if not piece:
                    raise ConnectionResetError
                received += piece
        return received

    async def storm(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await command(reader, writer)
                for _ in range(nbr.MAX_WAITS):
                    await asyncio.sleep(pause_s)
                    writer.write(bytes((nbr.WAIT,)))
                await asyncio.sleep(pause_s)
                response = simulator.respond(nbr.decode_command(await command(reader, writer)))
                for _ in range(nbr.MAX_NAKS - 1):
                    await asyncio.sleep(pause_s)
                    writer.write(response[:-1] + bytes((response[-1] ^ 0xFF,)))
                    await reader.readexactly(1)
                await asyncio.sleep(pause_s)
                writer.write(response)
                await reader.readexactly(1)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(storm, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def _attacked_read(url: str, timeout_s: float) -> dict[str, Any]:
    meter: Any = open_meter(url, timeout_s=timeout_s)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(meter.read(), GIVE_UP_S)
        outcome = "reading"
    except MeterError as exc:
        outcome = type(exc).__name__
    except TimeoutError:
        outcome = f"still running after {GIVE_UP_S:g} s"
    finally:
        await meter.close()
    return {
        "timeout_s": timeout_s,
        "tries": getattr(meter, "retries", None),
        "read_s": time.perf_counter() - started,
        "deadline_s": getattr(meter, "deadline_s", None),  # None: the driver had no deadline
        "outcome": outcome,
    }


async def measure_slow_meters() -> dict[str, Any]:
    """Every attack on every protocol at once (they are waits, not work)."""
    model = build_profile_meter("30010001", "pv-house", ScaledClock(speed=60))
    servers = {protocol: await start_simulator(protocol, model) for protocol in SIMULATORS}
    jobs: dict[str, Any] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            for protocol, server in servers.items():
                for attack, delays in (
                    ("drip", {"byte_delay_s": JUST_INSIDE * ATTACK_TIMEOUT_S}),
                    ("slow answers", {"answer_delay_s": JUST_INSIDE * ATTACK_TIMEOUT_S}),
                ):
                    port = await stack.enter_async_context(slow_line(server.port, **delays))
                    url = client_url(protocol, port)
                    jobs[f"{protocol}/{attack}"] = _attacked_read(url, ATTACK_TIMEOUT_S)
            storm_port = await stack.enter_async_context(nbr_storm(STORM_TIMEOUT_S))
            jobs["nbr14522/WAIT-NAK storm"] = _attacked_read(
                client_url("nbr14522", storm_port), STORM_TIMEOUT_S
            )
            outcomes = await asyncio.gather(*jobs.values())
    finally:
        for server in servers.values():
            await server.close()
    return dict(zip(jobs, outcomes, strict=True))


def print_slow_meters(attacks: dict[str, Any]) -> None:
    table = Table(title="one read against a slow meter (default tries)")
    for column in ("protocol / attack", "timeout s", "read lasted s", "deadline s", "outcome"):
        table.add_column(column, justify="right")
    for name, row in attacks.items():
        deadline = row["deadline_s"]
        table.add_row(
            name,
            f"{row['timeout_s']:g}",
            f"{row['read_s']:.1f}",
            "none" if deadline is None else f"{deadline:g}",
            row["outcome"],
        )
    Console(width=140).print(table)


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
    attacks = asyncio.run(measure_slow_meters())
    print_slow_meters(attacks)
    path = write_result(
        "meters",
        {"duration_s": DURATION_S, "baud": BAUD, "protocols": results, "slow_meters": attacks},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
