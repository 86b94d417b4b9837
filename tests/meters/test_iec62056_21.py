"""IEC 62056-21 mode C over a real TCP socket: the driver against the simulator, an independent
hand-built exchange, and every error path against misbehaving meters."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterchain.clock import ManualClock
from meterchain.meters.errors import (
    FrameError,
    InvalidMeterUrl,
    MeterError,
    MeterRejected,
    MeterTimeout,
    UnsupportedCommand,
)
from meterchain.meters.iec62056_21 import Iec62056Meter, ModeNotSupported
from meterchain.meters.iec62056_21_codec import (
    CommandMessage,
    DataMessage,
    DataSet,
    encode_readout,
)
from meterchain.meters.registry import open_meter
from meterchain.meters.sim import iec62056_21_server
from meterchain.meters.sim.iec62056_21_server import readout_lines
from meterchain.meters.sim.physical import PhysicalMeter, build_profile_meter
from meterchain.meters.sim.server import RunningServer
from meterchain.meters.url import parse_meter_url
from meterchain.model import RelayState, SetBatteryPower, SetRelay

METER_ID = "30010001"
NOON = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


@pytest.fixture
def physical(clock: ManualClock) -> PhysicalMeter:
    return build_profile_meter(METER_ID, "pv-house", clock)


@pytest.fixture
async def server(physical: PhysicalMeter) -> AsyncIterator[RunningServer]:
    running = await iec62056_21_server.start_tcp(physical, "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture
async def meter(server: RunningServer) -> AsyncIterator[Iec62056Meter]:
    driver = Iec62056Meter(
        parse_meter_url(f"iec62056-21+tcp://127.0.0.1:{server.port}"), timeout_s=1.0
    )
    yield driver
    await driver.close()


def within_one_wh(read_wh: float, true_wh: float) -> bool:
    """The readout shows kWh with three decimals, truncated: at most 1 Wh below the truth."""
    return true_wh - 1.0 < read_wh <= true_wh


# --- reading ---------------------------------------------------------------------------------


async def test_reading_matches_the_physical_meter(
    meter: Iec62056Meter, physical: PhysicalMeter
) -> None:
    reading = await meter.read()
    truth = physical.state()
    assert reading.meter_id == METER_ID
    assert reading.timestamp == truth.timestamp.replace(microsecond=0)
    assert within_one_wh(reading.import_wh, truth.import_wh)
    assert within_one_wh(reading.export_wh, truth.export_wh)
    assert reading.power_w == pytest.approx(truth.power_w, abs=0.5)
    assert reading.voltage_v == pytest.approx(truth.voltage_v, abs=0.05)
    assert reading.current_a == pytest.approx(truth.current_a, abs=0.005)
    assert reading.relay is RelayState.ON


async def test_counters_grow_by_the_integrated_power(
    meter: Iec62056Meter, physical: PhysicalMeter, clock: ManualClock
) -> None:
    before = await meter.read()
    power_w = physical.state().power_w
    clock.advance(900)
    after = await meter.read()
    exported_wh = after.export_wh - before.export_wh
    assert power_w < 0  # noon in Fortaleza: the PV house exports
    assert exported_wh == pytest.approx(-power_w * 900 / 3600, abs=1.0)
    assert after.import_wh == before.import_wh
    assert after.timestamp - before.timestamp == (clock.now() - before.timestamp)


async def test_the_meter_id_comes_from_the_data_block(clock: ManualClock) -> None:
    long_id = "BR-CE-FORTALEZA-000123"  # longer than the 16 characters of the identification
    running = await iec62056_21_server.start_tcp(
        build_profile_meter(long_id, "house", clock), "127.0.0.1", 0
    )
    driver = open_meter(f"iec62056-21+tcp://127.0.0.1:{running.port}")
    try:
        assert (await driver.read()).meter_id == long_id
    finally:
        await driver.close()
        await running.close()


async def test_a_hand_built_exchange_reads_the_simulator(
    server: RunningServer, physical: PhysicalMeter
) -> None:
    """An independent client: raw bytes on a socket, the BCC and 1.8.0 checked by hand."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"/?!\r\n")
        identification = await asyncio.wait_for(reader.readuntil(b"\r\n"), 2)
        match = re.fullmatch(rb"/([A-Za-z]{3})([0-6])(.{1,16})\r\n", identification)
        assert match is not None, identification
        writer.write(b"\x06" + b"0" + match.group(2) + b"0" + b"\r\n")  # ACK 0 Z 0: readout
        block = await asyncio.wait_for(reader.readuntil(b"\x03"), 2)
        block += await asyncio.wait_for(reader.readexactly(1), 2)
    finally:
        writer.close()
        await writer.wait_closed()
    assert block[0] == 0x02 and block.endswith(b"!\r\n\x03" + block[-1:])
    check = 0
    for byte in block[1:-1]:  # everything after STX up to and including ETX
        check ^= byte
    assert check == block[-1]
    energy = re.search(rb"\r?\n?1\.8\.0\((\d+\.\d{3})\*kWh\)\r\n", block)
    assert energy is not None, block
    assert within_one_wh(float(energy.group(1)) * 1000, physical.state().import_wh)
    assert f"C.1.0({METER_ID})".encode() in block


async def test_a_device_address_in_the_sign_on_selects_the_meter(server: RunningServer) -> None:
    url = f"iec62056-21+tcp://127.0.0.1:{server.port}?address={METER_ID}"
    driver = Iec62056Meter(parse_meter_url(url), timeout_s=1.0)
    try:
        assert (await driver.read()).meter_id == METER_ID
    finally:
        await driver.close()


async def test_a_sign_on_for_another_address_goes_unanswered(server: RunningServer) -> None:
    url = f"iec62056-21+tcp://127.0.0.1:{server.port}?address=99999999"
    driver = Iec62056Meter(parse_meter_url(url), timeout_s=0.2, retries=1)
    try:
        with pytest.raises(MeterTimeout, match=r"no answer from .* while reading"):
            await driver.read()
    finally:
        await driver.close()


async def test_bytes_exchanged_counts_every_byte_on_the_wire(
    meter: Iec62056Meter, physical: PhysicalMeter
) -> None:
    await meter.read()
    identification = f"/MCH5{METER_ID}\r\n".encode()
    data_block = encode_readout(readout_lines(physical.state()))
    assert meter.bytes_exchanged == len(b"/?!\r\n") + len(identification) + 6 + len(data_block)
    first = meter.bytes_exchanged
    await meter.read()
    assert meter.bytes_exchanged == 2 * first


async def test_the_driver_reconnects_after_the_meter_restarts(physical: PhysicalMeter) -> None:
    first = await iec62056_21_server.start_tcp(physical, "127.0.0.1", 0)
    driver = Iec62056Meter(
        parse_meter_url(f"iec62056-21+tcp://127.0.0.1:{first.port}"), timeout_s=0.5
    )
    try:
        await driver.read()
        await first.close()
        second = await iec62056_21_server.start_tcp(physical, "127.0.0.1", first.port)
        try:
            assert (await driver.read()).meter_id == METER_ID
        finally:
            await second.close()
    finally:
        await driver.close()


# --- the relay -------------------------------------------------------------------------------


async def test_relay_off_cuts_import_and_freezes_counters_then_on_restores(
    clock: ManualClock,
) -> None:
    physical = build_profile_meter(METER_ID, "house", clock)
    running = await iec62056_21_server.start_tcp(physical, "127.0.0.1", 0)
    driver = open_meter(f"iec62056-21+tcp://127.0.0.1:{running.port}", timeout_s=1.0)
    try:
        assert await driver.command(SetRelay(RelayState.OFF)) is RelayState.OFF
        assert physical.relay is RelayState.OFF
        off = await driver.read()
        clock.advance(1800)
        still_off = await driver.read()
        assert (off.power_w, off.current_a, off.relay) == (0.0, 0.0, RelayState.OFF)
        assert (still_off.import_wh, still_off.export_wh) == (off.import_wh, off.export_wh)
        assert await driver.command(SetRelay(RelayState.ON)) is RelayState.ON
        on = await driver.read()
        assert on.relay is RelayState.ON and on.power_w > 0
    finally:
        await driver.close()
        await running.close()


async def test_a_wrong_password_is_rejected_and_the_relay_stays(
    physical: PhysicalMeter,
) -> None:
    running = await iec62056_21_server.start_tcp(physical, "127.0.0.1", 0, password="S3CRET42")
    driver = open_meter(f"iec62056-21+tcp://127.0.0.1:{running.port}", timeout_s=1.0)
    try:
        with pytest.raises(MeterRejected, match=r"broke off the session \(B0\).*password"):
            await driver.command(SetRelay(RelayState.OFF))
        assert physical.relay is RelayState.ON
        assert (await driver.read()).relay is RelayState.ON  # the session recovers
    finally:
        await driver.close()
        await running.close()


async def test_the_password_in_the_url_opens_programming_mode(physical: PhysicalMeter) -> None:
    running = await iec62056_21_server.start_tcp(physical, "127.0.0.1", 0, password="S3CRET42")
    driver = open_meter(f"iec62056-21+tcp://127.0.0.1:{running.port}?password=S3CRET42")
    try:
        assert await driver.command(SetRelay(RelayState.OFF)) is RelayState.OFF
        assert physical.relay is RelayState.OFF
    finally:
        await driver.close()
        await running.close()


async def test_commands_other_than_the_relay_are_unsupported(meter: Iec62056Meter) -> None:
    with pytest.raises(UnsupportedCommand, match="SetBatteryPower"):
        await meter.command(SetBatteryPower(1000.0))


# --- misbehaving meters ----------------------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
IDENTIFICATION = b"/MCH5FAKE\r\n"
GOOD_BLOCK = encode_readout(
    [
        DataSet("C.1.0", "FAKE"),
        DataSet("1.8.0", "000001.000", "kWh"),
        DataSet("1.7.0", "00.100", "kW"),
        DataSet("32.7.0", "230.0", "V"),
        DataSet("31.7.0", "000.43", "A"),
    ]
)


@contextlib.asynccontextmanager
async def fake_meter(script: Script) -> AsyncIterator[str]:
    """A TCP 'meter' running `script` for each connection; yields its URL."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
            await reader.read()  # then wait for the client to hang up
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield f"iec62056-21+tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def identify(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Answer the sign-on and return the option select the client sent."""
    await reader.readuntil(b"\r\n")
    writer.write(IDENTIFICATION)
    return await reader.readexactly(6)


async def programming_mode(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    option = await identify(reader, writer)
    assert option.endswith(b"1\r\n")
    writer.write(CommandMessage("P", "0", (DataSet("", "FAKE"),)).encode())


async def read_command(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\x03") + await reader.readexactly(1)


def driver_for(url: str, retries: int = 2) -> Iec62056Meter:
    return Iec62056Meter(parse_meter_url(url), timeout_s=0.2, retries=retries)


async def test_a_silent_meter_times_out_naming_url_and_tries() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return

    async with fake_meter(silent) as url:
        driver = driver_for(url)
        with pytest.raises(MeterTimeout) as caught:
            await driver.read()
        await driver.close()
    message = str(caught.value)
    assert f"no answer from {url} while reading, after 2 tries (0.2 s each)" in message
    assert "no identification message within 0.2 s" in message


async def test_a_bcc_mismatch_is_a_frame_error() -> None:
    async def bad_bcc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await identify(reader, writer)
            writer.write(GOOD_BLOCK[:-1] + bytes([GOOD_BLOCK[-1] ^ 0x20]))

    async with fake_meter(bad_bcc) as url:
        driver = driver_for(url)
        with pytest.raises(FrameError, match="BCC mismatch in the readout data block"):
            await driver.read()
        await driver.close()


async def test_a_block_cut_short_by_a_hang_up_is_a_frame_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await identify(reader, writer)
        writer.write(GOOD_BLOCK[:30])
        await writer.drain()
        writer.close()

    async with fake_meter(hang_up) as url:
        driver = driver_for(url)
        with pytest.raises(FrameError, match="connection closed after 30 bytes"):
            await driver.read()
        await driver.close()


async def test_a_block_cut_short_by_silence_is_a_frame_error() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await identify(reader, writer)
        writer.write(GOOD_BLOCK[:30])

    async with fake_meter(stall) as url:
        driver = driver_for(url, retries=1)
        with pytest.raises(FrameError, match=r"truncated: 30 bytes .* then nothing for 0\.2 s"):
            await driver.read()
        await driver.close()


async def test_garbage_instead_of_an_identification_is_a_frame_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n")
        writer.write(b"\x00\xff HELLO \x7f" * 20)

    async with fake_meter(garbage) as url:
        driver = driver_for(url, retries=1)
        with pytest.raises(FrameError, match="identification message"):
            await driver.read()
        await driver.close()


async def test_a_mode_b_meter_is_rejected_as_unsupported() -> None:
    async def mode_b(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n")
        writer.write(b"/ABCEmeter\r\n")

    async with fake_meter(mode_b) as url:
        driver = driver_for(url)
        with pytest.raises(ModeNotSupported, match="mode A/B meter"):
            await driver.read()
        await driver.close()


async def test_a_meter_that_naks_the_password_rejects_the_command() -> None:
    async def nak(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await programming_mode(reader, writer)
        for _ in range(3):
            await read_command(reader)
            writer.write(b"\x15")

    async with fake_meter(nak) as url:
        driver = driver_for(url)
        with pytest.raises(MeterRejected, match=r"NAK to the password \(P1\) 3 times"):
            await driver.command(SetRelay(RelayState.OFF))
        await driver.close()


async def test_an_error_message_to_the_relay_write_rejects_the_command() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await programming_mode(reader, writer)
        await read_command(reader)  # P1
        writer.write(b"\x06")
        assert b"96.3.10(0)" in await read_command(reader)  # W1
        writer.write(DataMessage((DataSet("", "ER01"),)).encode())

    async with fake_meter(refuse) as url:
        driver = driver_for(url)
        with pytest.raises(MeterRejected, match=r"error \(ER01\) to the relay write"):
            await driver.command(SetRelay(RelayState.OFF))
        await driver.close()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("iec62056-21+tcp://127.0.0.1:5021?pasword=x", "unknown option pasword"),
        ("iec62056-21+tcp://127.0.0.1:5021?baud=115200", "baud=115200 is not a mode C"),
        ("iec62056-21+rtu:///dev/ttyUSB0", "not 'rtu'"),
        ("iec62056-21+tcp://127.0.0.1:5021?password=a(b", "forbids"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(InvalidMeterUrl, match=re.escape(complaint)):
        open_meter(url)


# --- the simulator keeps serving whatever it is sent ----------------------------------------


async def test_the_simulator_survives_garbage_and_then_answers(server: RunningServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"\x01\x02garbage/?x\x06\x01W1\x02(1)\x03\xff" + bytes(range(256)) + b"\n")
        writer.write(b"/?!\r\n")
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 3)
        assert answer == f"/MCH5{METER_ID}\r\n".encode()
    finally:
        writer.close()
        await writer.wait_closed()


@settings(max_examples=30, deadline=None)
@given(noise=st.binary(max_size=300))
def test_the_simulator_answers_a_sign_on_after_any_noise(noise: bytes) -> None:
    """Whatever arrives first, a sign-on after the noise's last message has ended is answered."""

    async def scenario() -> None:
        physical = PhysicalMeter(METER_ID, ManualClock(NOON))
        running = await iec62056_21_server.start_tcp(physical, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:
            # ETX and a BCC end a half-sent command; the LF ends a half-sent sign-on.
            writer.write(noise + b"\x03\x00\r\n" + b"/?!\r\n")
            answer = await asyncio.wait_for(reader.readuntil(f"{METER_ID}\r\n".encode()), 3)
            assert answer.endswith(f"/MCH5{METER_ID}\r\n".encode())
        finally:
            writer.close()
            await running.close()

    asyncio.run(scenario())


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(answer=st.binary(min_size=0, max_size=200), block=st.binary(min_size=0, max_size=300))
def test_a_meter_answering_random_bytes_raises_only_meter_errors(
    answer: bytes, block: bytes
) -> None:
    async def scenario() -> None:
        async def random_meter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n")
            writer.write(answer)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(reader.readexactly(6), 0.1)
            writer.write(block)
            await writer.drain()
            writer.close()

        async with fake_meter(random_meter) as url:
            driver = Iec62056Meter(parse_meter_url(url), timeout_s=0.1, retries=1)
            try:
                await asyncio.wait_for(driver.read(), 5)
            except MeterError:
                pass
            finally:
                await driver.close()

    asyncio.run(scenario())
