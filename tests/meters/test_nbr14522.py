"""The NBR 14522 driver against its simulator, over real sockets and a virtual serial cable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterchain.clock import ManualClock
from meterchain.meters import nbr14522_codec as codec
from meterchain.meters.errors import (
    FrameError,
    InvalidMeterUrl,
    MeterError,
    MeterRejected,
    MeterTimeout,
    UnsupportedCommand,
)
from meterchain.meters.nbr14522 import Nbr14522Meter
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.nbr14522_server import Nbr14522Simulator, serve_tcp
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w, pv_w
from meterchain.meters.sim.registry import start_serial_simulator
from meterchain.meters.sim.serial_link import VirtualSerialLink
from meterchain.meters.sim.server import RunningServer
from meterchain.meters.transport import ByteStream, open_tcp
from meterchain.meters.url import parse_meter_url
from meterchain.model import RelayState, SetBatteryPower, SetRelay

METER_ID = "12345678"
BYTES_PER_EXCHANGE = 1 + codec.COMMAND_SIZE + codec.RESPONSE_SIZE + 1  # ENQ, command, answer, ACK
BYTES_PER_READ = 3 * BYTES_PER_EXCHANGE
MESSAGE = "serving nbr14522 meter"


@pytest.fixture
def meter(clock: ManualClock) -> PhysicalMeter:
    """A 1 kW load: import grows by exactly 1000 Wh per hour."""
    return PhysicalMeter(METER_ID, clock, load_w=flat_load_w(1000.0), import_wh=100_000.4)


@pytest.fixture
def simulator(meter: PhysicalMeter) -> Nbr14522Simulator:
    return Nbr14522Simulator(meter, enq_interval_s=0.1)


@contextlib.asynccontextmanager
async def served(simulator: Nbr14522Simulator) -> AsyncIterator[RunningServer]:
    running = await serve_tcp(simulator, "127.0.0.1", 0)
    try:
        yield running
    finally:
        await asyncio.sleep(0.05)  # let handlers see their clients leave before stopping
        await running.close()


@pytest.fixture
async def server(simulator: Nbr14522Simulator) -> AsyncIterator[RunningServer]:
    async with served(simulator) as running:
        yield running


@contextlib.asynccontextmanager
async def driver(
    url: str, timeout_s: float = 1.0, retries: int = 2
) -> AsyncIterator[Nbr14522Meter]:
    meter = open_meter(url, timeout_s=timeout_s, retries=retries)
    assert isinstance(meter, Nbr14522Meter)
    try:
        yield meter
    finally:
        await meter.close()


def tcp_url(server: RunningServer, query: str = "") -> str:
    return f"nbr14522+tcp://127.0.0.1:{server.port}{query}"


@contextlib.asynccontextmanager
async def raw_server(handler: Callable[[ByteStream], Awaitable[None]]) -> AsyncIterator[int]:
    """A TCP server that runs `handler` for each client: a meter that misbehaves on purpose."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        with contextlib.suppress(MeterError, ConnectionError, asyncio.CancelledError):
            await handler(ByteStream(reader, writer, "test client"))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.sleep(0)


async def stay_silent(stream: ByteStream) -> None:
    await asyncio.sleep(30)


async def enq_until_command(stream: ByteStream) -> bytes:
    """Idle like a meter: ENQ every 50 ms until a whole command has arrived."""
    while True:
        await stream.write(bytes((codec.ENQ,)))
        with contextlib.suppress(MeterTimeout):
            return await stream.read_exactly(codec.COMMAND_SIZE, 0.05)


# --- Reading through the simulator ---------------------------------------------------------------


async def test_reading_matches_the_physical_meter(
    server: RunningServer, meter: PhysicalMeter
) -> None:
    async with driver(tcp_url(server)) as nbr:
        reading = await nbr.read()
    state = meter.state()
    assert reading.meter_id == METER_ID
    assert reading.timestamp == state.timestamp
    assert reading.import_wh == 100_000.0  # whole Wh: the register truncates 100 000.4
    assert reading.export_wh == 0.0
    assert reading.power_w == pytest.approx(state.power_w, rel=1e-6)
    assert reading.voltage_v == pytest.approx(state.voltage_v, rel=1e-6)
    assert reading.current_a == pytest.approx(state.current_a, rel=1e-6)
    assert reading.relay is RelayState.ON


async def test_counters_grow_by_the_integrated_power(
    server: RunningServer, clock: ManualClock
) -> None:
    async with driver(tcp_url(server)) as nbr:
        before = await nbr.read()
        clock.advance(3600)
        after = await nbr.read()
    assert after.import_wh - before.import_wh == 1000.0
    assert (after.timestamp - before.timestamp).total_seconds() == 3600


async def test_export_register_follows_the_pv_surplus(clock: ManualClock) -> None:
    meter = PhysicalMeter("87654321", clock, load_w=flat_load_w(500.0), pv_w=pv_w(3000.0))
    simulator = Nbr14522Simulator(meter, enq_interval_s=0.1)
    async with served(simulator) as running, driver(tcp_url(running)) as nbr:
        before = await nbr.read()
        clock.advance(900)
        after = await nbr.read()
    assert before.power_w < 0  # exporting at noon
    assert after.export_wh - before.export_wh == pytest.approx(-before.power_w / 4, abs=1.0)
    assert after.import_wh == before.import_wh


async def test_a_non_numeric_meter_id_reads_as_its_stable_serial(clock: ManualClock) -> None:
    meter = PhysicalMeter("house-1", clock)
    simulator = Nbr14522Simulator(meter, enq_interval_s=0.1)
    async with served(simulator) as running, driver(tcp_url(running)) as nbr:
        reading = await nbr.read()
    assert reading.meter_id == codec.serial_for_meter_id("house-1")


async def test_meter_clock_offset_is_turned_into_utc(
    server: RunningServer, meter: PhysicalMeter
) -> None:
    async with driver(tcp_url(server, "?utc_offset_h=-3")) as nbr:
        reading = await nbr.read()
    assert (reading.timestamp - meter.state().timestamp).total_seconds() == 3 * 3600


async def test_reading_over_a_serial_line(
    serial_link: VirtualSerialLink, meter: PhysicalMeter, clock: ManualClock
) -> None:
    running = await start_serial_simulator("nbr14522", meter, serial_link.meter_end)
    try:
        async with driver(f"nbr14522://{serial_link.client_end}?baud=9600") as nbr:
            first = await nbr.read()
            clock.advance(1800)
            assert await nbr.command(SetRelay(RelayState.OFF)) is RelayState.OFF
            second = await nbr.read()
    finally:
        await running.close()
    assert first.meter_id == METER_ID
    assert first.import_wh == 100_000.0
    assert first.power_w == pytest.approx(1000.0, rel=1e-6)
    assert second.import_wh == 100_500.0
    assert (second.power_w, second.relay) == (0.0, RelayState.OFF)


async def test_addressed_commands_reach_the_meter_with_that_serial(server: RunningServer) -> None:
    async with driver(tcp_url(server, f"?address={METER_ID}")) as nbr:
        reading = await nbr.read()
    assert reading.meter_id == METER_ID


async def test_a_meter_with_another_serial_ignores_addressed_commands(
    server: RunningServer,
) -> None:
    async with driver(tcp_url(server, "?address=87654321"), timeout_s=0.3, retries=1) as nbr:
        with pytest.raises(MeterTimeout, match="no answer to command 0x23"):
            await nbr.read()


async def test_bytes_exchanged_counts_every_byte_of_a_read(server: RunningServer) -> None:
    async with driver(tcp_url(server)) as nbr:
        await nbr.read()
        assert nbr.bytes_exchanged == BYTES_PER_READ
        await nbr.command(SetRelay(RelayState.ON))
        assert nbr.bytes_exchanged == BYTES_PER_READ + BYTES_PER_EXCHANGE


# --- The relay --------------------------------------------------------------------------------


async def test_relay_off_cuts_import_and_freezes_the_counters(
    server: RunningServer, clock: ManualClock, meter: PhysicalMeter
) -> None:
    async with driver(tcp_url(server)) as nbr:
        assert await nbr.command(SetRelay(RelayState.OFF)) is RelayState.OFF
        cut = await nbr.read()
        clock.advance(3600)
        still_cut = await nbr.read()
        assert await nbr.command(SetRelay(RelayState.ON)) is RelayState.ON
        clock.advance(3600)
        back = await nbr.read()
    assert (cut.relay, cut.power_w, cut.current_a) == (RelayState.OFF, 0.0, 0.0)
    assert still_cut.import_wh == cut.import_wh
    assert meter.relay is RelayState.ON
    assert back.relay is RelayState.ON
    assert back.import_wh - still_cut.import_wh == 1000.0


async def test_a_battery_set_point_is_not_an_nbr14522_command(server: RunningServer) -> None:
    async with driver(tcp_url(server)) as nbr:
        with pytest.raises(UnsupportedCommand, match="only switches its relay"):
            await nbr.command(SetBatteryPower(1000.0))


# --- Flow control: NAK, WAIT, CRC errors --------------------------------------------------------


async def test_a_corrupt_response_is_nakked_and_the_resent_one_accepted(
    server: RunningServer, simulator: Nbr14522Simulator
) -> None:
    simulator.corrupt_responses = 2
    async with driver(tcp_url(server)) as nbr:
        reading = await nbr.read()
        assert nbr.bytes_exchanged == BYTES_PER_READ + 2 * (codec.RESPONSE_SIZE + 1)
    assert reading.meter_id == METER_ID


async def test_a_response_that_never_passes_its_crc_is_a_frame_error_with_both_crcs(
    server: RunningServer, simulator: Nbr14522Simulator
) -> None:
    simulator.corrupt_responses = 1000
    async with driver(tcp_url(server), retries=2) as nbr:
        with pytest.raises(FrameError) as caught:
            await nbr.read()
    message = str(caught.value)
    assert re.search(r"carries 0x[0-9A-F]{4}, its bytes give 0x[0-9A-F]{4}", message)
    assert "gave up after 7 NAKs" in message
    assert tcp_url(server) in message and "after 2 tries" in message


async def test_the_command_is_resent_when_the_meter_naks_it(
    server: RunningServer, simulator: Nbr14522Simulator
) -> None:
    simulator.nak_commands = 3
    async with driver(tcp_url(server)) as nbr:
        await nbr.read()
        assert nbr.bytes_exchanged == BYTES_PER_READ + 3 * (1 + codec.COMMAND_SIZE)


async def test_seven_naks_from_the_meter_are_a_rejection(
    server: RunningServer, simulator: Nbr14522Simulator
) -> None:
    simulator.nak_commands = 7
    async with driver(tcp_url(server)) as nbr:
        with pytest.raises(MeterRejected, match="NAK 7 times"):
            await nbr.read()


async def test_wait_delays_the_answer(server: RunningServer, simulator: Nbr14522Simulator) -> None:
    simulator.waits_per_command = 12
    async with driver(tcp_url(server)) as nbr:
        reading = await nbr.read()
    assert reading.meter_id == METER_ID


async def test_more_than_twelve_waits_are_a_rejection(
    server: RunningServer, simulator: Nbr14522Simulator
) -> None:
    simulator.waits_per_command = 13
    async with driver(tcp_url(server)) as nbr:
        with pytest.raises(MeterRejected, match="WAIT 13 times"):
            await nbr.read()


# --- A meter that misbehaves ------------------------------------------------------------------


async def test_silence_is_a_timeout_naming_the_url_and_the_tries() -> None:
    async with raw_server(stay_silent) as port:
        url = f"nbr14522+tcp://127.0.0.1:{port}"
        async with driver(url, timeout_s=0.2, retries=2) as nbr:
            with pytest.raises(MeterTimeout) as caught:
                await nbr.read()
    message = str(caught.value)
    assert url in message and "after 2 tries" in message and "no ENQ within 0.2 s" in message


async def test_a_truncated_response_is_a_frame_error() -> None:
    async def half_answer(stream: ByteStream) -> None:
        await enq_until_command(stream)
        registers = codec.Registers(datetime(2026, 1, 1), 1, 2)
        await stream.write(codec.encode_registers(METER_ID, registers)[:100])
        await asyncio.sleep(30)

    async with (
        raw_server(half_answer) as port,
        driver(f"nbr14522+tcp://127.0.0.1:{port}", timeout_s=0.2, retries=1) as nbr,
    ):
        with pytest.raises(FrameError, match="truncated response: 100 of 258 bytes"):
            await nbr.read()


async def test_garbage_instead_of_an_answer_is_a_frame_error() -> None:
    async def garbage(stream: ByteStream) -> None:
        await enq_until_command(stream)
        await stream.write(b"\xee" * 300)
        await asyncio.sleep(30)

    async with (
        raw_server(garbage) as port,
        driver(f"nbr14522+tcp://127.0.0.1:{port}", timeout_s=0.2, retries=1) as nbr,
    ):
        with pytest.raises(FrameError, match="unexpected byte 0xEE"):
            await nbr.read()


async def test_a_line_without_enq_is_a_frame_error() -> None:
    async def chatter(stream: ByteStream) -> None:
        while True:
            await stream.write(b"/ISK5MT174-0001\r\n")
            await asyncio.sleep(0.01)

    async with (
        raw_server(chatter) as port,
        driver(f"nbr14522+tcp://127.0.0.1:{port}", timeout_s=0.2, retries=1) as nbr,
    ):
        with pytest.raises(FrameError, match="is it an NBR 14522 meter"):
            await nbr.read()


async def test_command_not_implemented_is_a_rejection() -> None:
    async def refuses_everything(stream: ByteStream) -> None:
        while True:
            command = codec.decode_command(await enq_until_command(stream))
            await stream.write(codec.not_implemented_response(METER_ID, command.code))
            await stream.read_byte(5)

    async with (
        raw_server(refuses_everything) as port,
        driver(f"nbr14522+tcp://127.0.0.1:{port}") as nbr,
    ):
        with pytest.raises(MeterRejected, match="does not implement command 0x23"):
            await nbr.read()


async def test_connection_refused_is_a_meter_error_with_advice() -> None:
    async with raw_server(stay_silent) as port:
        pass  # the port is free again
    async with driver(f"nbr14522+tcp://127.0.0.1:{port}", timeout_s=0.2, retries=1) as nbr:
        with pytest.raises(MeterError, match="could not connect"):
            await nbr.read()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("nbr14522+tcp://127.0.0.1:1?reader=12ab", "reader='12ab' must be 1 to 6 decimal digits"),
        ("nbr14522+tcp://127.0.0.1:1?address=123456789", "address='123456789'"),
        ("nbr14522+tcp://127.0.0.1:1?utc_offset_h=30", "utc_offset_h=30.0"),
        ("nbr14522+rtu:///dev/ttyUSB0", "TCP or a plain serial line"),
    ],
)
def test_bad_url_options_are_named(url: str, complaint: str) -> None:
    with pytest.raises(InvalidMeterUrl, match=re.escape(complaint)):
        Nbr14522Meter(parse_meter_url(url))


# --- The simulator as an independent client sees it ----------------------------------------------


async def _exchange_raw(port: int, frame: bytes) -> codec.Response:
    stream = await open_tcp("127.0.0.1", port, 2)
    try:
        while await stream.read_byte(2) != codec.ENQ:
            pass
        await stream.write(frame)
        first = await stream.read_byte(2)
        while first == codec.ENQ:
            first = await stream.read_byte(2)
        response = codec.decode_response(bytes((first,)) + await stream.read_exactly(257, 2))
        await stream.write(bytes((codec.ACK,)))
        return response
    finally:
        await stream.close()


async def test_simulator_answers_unknown_codes_with_not_implemented(server: RunningServer) -> None:
    response = await _exchange_raw(server.port, codec.encode_command(0x52, "000001"))
    assert (response.code, response.meter_serial, response.octet(5)) == (0x39, METER_ID, 0x52)


async def test_simulator_reports_an_invalid_relay_parameter_as_an_occurrence(
    server: RunningServer, meter: PhysicalMeter
) -> None:
    frame = bytearray(codec.encode_relay_command("000001", RelayState.OFF))
    frame[codec.RELAY_CMD_STATE] = 0x07
    crc = codec.crc16(bytes(frame[:-2]))
    frame[-2:] = bytes((crc & 0xFF, crc >> 8))
    response = await _exchange_raw(server.port, bytes(frame))
    assert (response.code, response.octet(5)) == (0x40, codec.OCCURRENCE_INVALID_PARAMETER)
    assert meter.relay is RelayState.ON


async def test_simulator_survives_garbage_and_serves_the_next_reader(
    server: RunningServer,
) -> None:
    stream = await open_tcp("127.0.0.1", server.port, 2)
    await stream.write(bytes(range(256)) * 3)
    await stream.close()
    async with driver(tcp_url(server)) as nbr:
        assert (await nbr.read()).meter_id == METER_ID


# --- Fuzzing the driver's stream handling: typed errors only, never a hang -----------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=1, max_size=600))
def test_random_answers_raise_only_meter_errors(answer: bytes) -> None:
    async def scenario() -> None:
        async def babble(stream: ByteStream) -> None:
            await enq_until_command(stream)
            await stream.write(answer)
            await asyncio.sleep(30)

        async with raw_server(babble) as port:
            url = f"nbr14522+tcp://127.0.0.1:{port}"
            async with driver(url, timeout_s=0.1, retries=1) as nbr:
                with contextlib.suppress(MeterError):
                    await asyncio.wait_for(nbr.read(), 10)

    asyncio.run(scenario())


# --- The command line ----------------------------------------------------------------------------

METERCHAIN = str(Path(sys.executable).with_name("meterchain"))


def test_cli_serves_and_reads_an_nbr14522_meter() -> None:
    serve = subprocess.Popen(
        [
            METERCHAIN,
            "meter",
            "serve",
            "--protocol",
            "nbr14522",
            "--port",
            "0",
            "--meter-id",
            METER_ID,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        first_line = serve.stdout.readline()
        assert MESSAGE in first_line
        port = int(first_line.rsplit(":", 1)[1])
        read = subprocess.run(
            [METERCHAIN, "meter", "read", f"nbr14522+tcp://127.0.0.1:{port}", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert read.returncode == 0, read.stderr
        reading = json.loads(read.stdout)
        assert reading["meter_id"] == METER_ID
        assert {"timestamp", "import_wh", "export_wh", "power_w", "voltage_v", "current_a"} <= set(
            reading
        )
        assert reading["relay"] == "on"
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=10) == 0


def test_cli_read_of_a_bad_url_fails_with_a_message_and_no_traceback() -> None:
    read = subprocess.run(
        [METERCHAIN, "meter", "read", "nbr14522+tcp://127.0.0.1:1?reader=abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert read.returncode != 0
    assert "reader='abc' must be 1 to 6 decimal digits" in read.stderr
    assert "Traceback" not in read.stderr + read.stdout
