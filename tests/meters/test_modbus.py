"""Modbus TCP: the driver reads the simulated meter over a real socket, and fails in words."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from meterchain.clock import ManualClock
from meterchain.meters.errors import (
    FrameError,
    ImplausibleReading,
    InvalidMeterUrl,
    MeterError,
    MeterRejected,
    MeterTimeout,
    UnsupportedCommand,
)
from meterchain.meters.modbus import ConnectionFailed, ModbusMeter
from meterchain.meters.modbus_frames import tcp_frame
from meterchain.meters.modbus_maps import MAPS_DIR, MapMismatch, RegisterMapError
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.modbus_server import start_tcp
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.server import RunningServer
from meterchain.meters.url import parse_meter_url
from meterchain.model import RelayState, SetBatteryPower, SetRelay

FLOAT32_REL = 2**-23  # float32 keeps 24 significant bits


@pytest.fixture
def meter(clock: ManualClock) -> PhysicalMeter:
    """A house drawing a steady 1 kW, with 5 kWh already on its import register."""
    return PhysicalMeter("house-7", clock, load_w=flat_load_w(1000.0), import_wh=5_000.0)


@pytest.fixture
async def sdm630(meter: PhysicalMeter) -> AsyncIterator[RunningServer]:
    server = await start_tcp(meter, "127.0.0.1", 0)
    yield server
    await server.close()


@pytest.fixture
async def sunspec(meter: PhysicalMeter) -> AsyncIterator[RunningServer]:
    server = await start_tcp(meter, "127.0.0.1", 0, map="sunspec203")
    yield server
    await server.close()


@asynccontextmanager
async def driver(url: str, timeout_s: float = 1.0, retries: int = 2) -> AsyncIterator[ModbusMeter]:
    meter = ModbusMeter(parse_meter_url(url), timeout_s=timeout_s, retries=retries)
    try:
        yield meter
    finally:
        await meter.close()


def tcp_url(server: RunningServer | int, **options: str | int) -> str:
    port = server if isinstance(server, int) else server.port
    query = "&".join(f"{key}={value}" for key, value in {"unit": 1, **options}.items())
    return f"modbus+tcp://127.0.0.1:{port}?{query}"


def close_to(value: float, exact: float, rel: float = FLOAT32_REL) -> bool:
    return math.isclose(value, exact, rel_tol=rel, abs_tol=1e-6)


# ---------------------------------------------------------------------------------- reading


async def test_a_reading_matches_the_physical_meter(
    meter: PhysicalMeter, sdm630: RunningServer
) -> None:
    async with driver(tcp_url(sdm630)) as modbus:
        reading = await modbus.read()
    state = meter.state()
    assert reading.meter_id == "house-7"
    assert close_to(reading.import_wh, state.import_wh)
    assert close_to(reading.export_wh, state.export_wh)
    assert close_to(reading.power_w, state.power_w)
    assert close_to(reading.voltage_v, state.voltage_v)
    assert close_to(reading.current_a, state.current_a)
    assert reading.relay is RelayState.ON
    assert reading.timestamp.tzinfo is not None


async def test_open_meter_gives_the_modbus_driver(sdm630: RunningServer) -> None:
    modbus = open_meter(tcp_url(sdm630, map="sdm630"), timeout_s=1.0)
    try:
        assert isinstance(modbus, ModbusMeter)
        assert (await modbus.read()).meter_id == "house-7"
    finally:
        await modbus.close()


async def test_counters_grow_by_the_power_integrated_over_time(
    clock: ManualClock, sdm630: RunningServer
) -> None:
    async with driver(tcp_url(sdm630)) as modbus:
        before = await modbus.read()
        clock.advance(1800)
        after = await modbus.read()
    assert after.import_wh - before.import_wh == pytest.approx(500.0, abs=0.01)  # 1 kW x 0.5 h
    assert after.export_wh == before.export_wh


async def test_switching_the_relay_off_stops_import_and_freezes_the_counters(
    clock: ManualClock, meter: PhysicalMeter, sdm630: RunningServer
) -> None:
    async with driver(tcp_url(sdm630)) as modbus:
        assert await modbus.command(SetRelay(RelayState.OFF)) is RelayState.OFF
        assert meter.relay is RelayState.OFF
        off = await modbus.read()
        clock.advance(3600)
        still_off = await modbus.read()
        assert (off.relay, off.power_w, off.current_a) == (RelayState.OFF, 0.0, 0.0)
        assert still_off.import_wh == off.import_wh
        assert await modbus.command(SetRelay(RelayState.ON)) is RelayState.ON
        clock.advance(3600)
        on_again = await modbus.read()
    assert on_again.relay is RelayState.ON
    assert on_again.power_w == pytest.approx(1000.0)
    assert on_again.import_wh - still_off.import_wh == pytest.approx(1000.0, abs=0.01)


async def test_a_sunspec_meter_is_read_through_its_scale_factors(
    meter: PhysicalMeter, sunspec: RunningServer
) -> None:
    async with driver(tcp_url(sunspec, map="sunspec203")) as modbus:
        reading = await modbus.read()
        state = meter.state()
        assert await modbus.command(SetRelay(RelayState.OFF)) is RelayState.OFF
    assert reading.meter_id == "house-7"
    assert state.import_wh - 1 < reading.import_wh <= state.import_wh  # TotWh_SF = 0: 1 Wh
    assert reading.voltage_v == pytest.approx(state.voltage_v, abs=0.05)  # V_SF = -1
    assert reading.current_a == pytest.approx(state.current_a, abs=0.005)  # A_SF = -2
    assert reading.power_w == pytest.approx(state.power_w, abs=0.5)  # W_SF = 0
    assert meter.relay is RelayState.OFF


def _sunspec_variant(tmp_path: Path, old: str, new: str) -> str:
    text = (MAPS_DIR / "sunspec203.toml").read_text()
    assert old in text
    path = tmp_path / "variant.toml"
    path.write_text(text.replace(old, new))
    return str(path)


async def test_the_driver_finds_model_203_wherever_the_device_put_it(
    tmp_path: Path, meter: PhysicalMeter
) -> None:
    # The device puts a vendor model (64001, 10 registers) between the common model and 203.
    device_map = _sunspec_variant(
        tmp_path,
        "{ id = 1, length = 66 }, ",
        "{ id = 1, length = 66 }, { id = 64001, length = 10 }, ",
    )
    server = await start_tcp(meter, "127.0.0.1", 0, map=device_map)
    try:
        async with driver(tcp_url(server, map="sunspec203")) as modbus:
            reading = await modbus.read()
    finally:
        await server.close()
    assert reading.import_wh == pytest.approx(meter.state().import_wh, abs=1)
    assert reading.voltage_v == pytest.approx(meter.state().voltage_v, abs=0.05)


async def test_reading_an_sdm630_with_the_sunspec_map_is_a_map_mismatch(
    sdm630: RunningServer,
) -> None:
    async with driver(tcp_url(sdm630, map="sunspec203")) as modbus:
        with pytest.raises(MapMismatch, match=r"address 40000 .*keeps the marker 'SunS'"):
            await modbus.read()


async def test_a_device_without_model_203_is_a_map_mismatch(
    tmp_path: Path, meter: PhysicalMeter
) -> None:
    device_map = _sunspec_variant(tmp_path, "id = 203", "id = 213")
    device_map_text = Path(device_map).read_text().replace("model = 203", "model = 213")
    Path(device_map).write_text(device_map_text)
    server = await start_tcp(meter, "127.0.0.1", 0, map=device_map)
    try:
        async with driver(tcp_url(server, map="sunspec203")) as modbus:
            with pytest.raises(
                MapMismatch, match=r"model\(s\) \[203\] not found.*offers \[1, 213\]"
            ):
                await modbus.read()
    finally:
        await server.close()


# ----------------------------------------------------------------------- independent client


async def test_an_independent_client_reads_the_sdm630_simulator(
    meter: PhysicalMeter, sdm630: RunningServer
) -> None:
    """pymodbus's plain client and struct, no meterchain code: import and export kWh."""
    client = AsyncModbusTcpClient("127.0.0.1", port=sdm630.port, timeout=2)
    await client.connect()
    try:
        response = await client.read_input_registers(0x0048, count=4, device_id=1)
    finally:
        client.close()
    assert not response.isError()
    raw = struct.pack(">4H", *response.registers)
    import_kwh, export_kwh = struct.unpack(">ff", raw)
    state = meter.state()
    assert import_kwh == pytest.approx(state.import_wh / 1000, rel=FLOAT32_REL)
    assert export_kwh == pytest.approx(state.export_wh / 1000, rel=FLOAT32_REL)


async def test_an_independent_client_finds_the_sunspec_header(sunspec: RunningServer) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=sunspec.port, timeout=2)
    await client.connect()
    try:
        header = await client.read_holding_registers(40000, count=4, device_id=1)
        model_203 = await client.read_holding_registers(40070, count=2, device_id=1)
        end = await client.read_holding_registers(40177, count=2, device_id=1)
    finally:
        client.close()
    assert struct.pack(">2H", *header.registers[:2]) == b"SunS"
    assert header.registers[2:] == [1, 66]
    assert model_203.registers == [203, 105]
    assert end.registers == [0xFFFF, 0]


# ----------------------------------------------------------------------------- rejections


async def test_an_unknown_unit_id_gets_the_gateway_exception(sdm630: RunningServer) -> None:
    async with driver(tcp_url(sdm630, unit=7)) as modbus:
        with pytest.raises(MeterRejected) as caught:
            await modbus.read()
    message = str(caught.value)
    assert "read holding registers (function 3) of 16 at address 64512 (0xfc00)" in message
    assert "exception 11 (gateway target device failed to respond" in message


def _map_with(tmp_path: Path, old: str, new: str) -> str:
    text = (MAPS_DIR / "sdm630.toml").read_text()
    assert old in text
    path = tmp_path / "changed.toml"
    path.write_text(text.replace(old, new))
    return str(path)


async def test_registers_the_meter_does_not_have_are_an_illegal_address(
    tmp_path: Path, sdm630: RunningServer
) -> None:
    wrong_map = _map_with(tmp_path, "address = 0x004A", "address = 0x0100")
    async with driver(tcp_url(sdm630, map=wrong_map)) as modbus:
        with pytest.raises(MeterRejected) as caught:
            await modbus.read()
    message = str(caught.value)
    assert "read input registers (function 4) of 2 at address 256 (0x0100)" in message
    assert "exception 2 (illegal data address: the meter has no such registers" in message


async def test_nan_in_a_float_register_is_an_implausible_reading(
    tmp_path: Path, meter: PhysicalMeter
) -> None:
    # The device does not measure voltage: its float register holds NaN.
    device_map = _map_with(tmp_path, 'unit = "V", quantity = "voltage_v"', 'unit = "V"')
    server = await start_tcp(meter, "127.0.0.1", 0, map=device_map)
    try:
        async with driver(tcp_url(server)) as modbus:
            with pytest.raises(ImplausibleReading, match="voltage_v is not a finite number"):
                await modbus.read()
    finally:
        await server.close()


async def test_an_id_in_the_url_must_match_the_meter_there(sdm630: RunningServer) -> None:
    async with driver(tcp_url(sdm630, id="house-8")) as modbus:
        with pytest.raises(MapMismatch, match="the meter there is 'house-7', not 'house-8'"):
            await modbus.read()


async def test_a_map_without_identity_takes_the_id_from_the_url(
    tmp_path: Path, sdm630: RunningServer
) -> None:
    anonymous = _map_with(tmp_path, 'identity = "serial"', "")
    with pytest.raises(InvalidMeterUrl, match="add id=METER_ID"):
        ModbusMeter(parse_meter_url(tcp_url(sdm630, map=anonymous)))
    async with driver(tcp_url(sdm630, map=anonymous, id="board-3")) as modbus:
        assert (await modbus.read()).meter_id == "board-3"


async def test_only_relay_commands_are_supported(sdm630: RunningServer) -> None:
    async with driver(tcp_url(sdm630)) as modbus:
        with pytest.raises(UnsupportedCommand, match="takes SetRelay, not SetBatteryPower"):
            await modbus.command(SetBatteryPower(500.0))


# ----------------------------------------------------------------------- broken meters


@asynccontextmanager
async def fake_meter(answer: Callable[[bytes], bytes | None]) -> AsyncIterator[int]:
    """A TCP server that reads each 12-byte request and sends `answer(request)` (None: hang up)."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while True:
                reply = answer(await reader.readexactly(12))
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the driver went away, or the test is over
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def test_a_silent_meter_times_out_naming_the_url_and_the_tries() -> None:
    async with (
        fake_meter(lambda _request: b"") as port,
        driver(tcp_url(port), timeout_s=0.2, retries=2) as modbus,
    ):
        with pytest.raises(MeterTimeout) as caught:
            await modbus.read()
    message = str(caught.value)
    assert "no answer to read holding registers at address 64512 within 0.2 s" in message
    assert f"modbus+tcp://127.0.0.1:{port}" in message and "after 2 tries" in message


async def test_garbage_instead_of_an_answer_is_a_frame_error() -> None:
    async with (
        fake_meter(lambda request: b"HTTP/1.1 400 Bad Request\r\n\r\n") as port,
        driver(tcp_url(port), timeout_s=0.5, retries=2) as modbus,
    ):
        with pytest.raises(FrameError, match="is this a Modbus TCP server"):
            await modbus.read()


async def test_a_truncated_answer_is_a_frame_error() -> None:
    def half_answer(request: bytes) -> bytes:
        whole = tcp_frame(int.from_bytes(request[:2], "big"), 1, b"\x03\x20" + b"A" * 32)
        return whole[:20]

    async with (
        fake_meter(half_answer) as port,
        driver(tcp_url(port), timeout_s=0.2, retries=1) as modbus,
    ):
        with pytest.raises(FrameError, match=r"truncated answer .*: 20 of 41 bytes"):
            await modbus.read()


async def test_a_meter_that_hangs_up_is_a_connection_error() -> None:
    async with (
        fake_meter(lambda _request: None) as port,
        driver(tcp_url(port), timeout_s=1.0, retries=2) as modbus,
    ):
        with pytest.raises(ConnectionFailed, match="closed the connection"):
            await modbus.read()


async def test_nobody_listening_is_a_connection_error() -> None:
    async with fake_meter(lambda _request: None) as port:
        pass  # the port is free again
    async with driver(tcp_url(port), timeout_s=0.5, retries=2) as modbus:
        with pytest.raises(ConnectionFailed) as caught:
            await modbus.read()
    assert f"could not connect to 127.0.0.1:{port}" in str(caught.value)
    assert "running and listening" in str(caught.value)


async def test_the_driver_reconnects_after_the_meter_restarts(meter: PhysicalMeter) -> None:
    server = await start_tcp(meter, "127.0.0.1", 0)
    port = server.port
    async with driver(tcp_url(server), timeout_s=0.5, retries=2) as modbus:
        first = await modbus.read()
        await server.close()
        with pytest.raises(MeterError):
            await modbus.read()
        server = await start_tcp(meter, "127.0.0.1", port)
        try:
            again = await modbus.read()
        finally:
            await server.close()
    assert again.meter_id == first.meter_id and again.import_wh >= first.import_wh


# ----------------------------------------------------------------------- bytes on the wire


async def test_bytes_exchanged_counts_every_mbap_header_and_pdu(sdm630: RunningServer) -> None:
    async with driver(tcp_url(sdm630)) as modbus:
        await modbus.read()
        before = modbus.bytes_exchanged
        await modbus.read()
        per_read = modbus.bytes_exchanged - before
    # Each request is MBAP (7) + PDU (5). Answers: MBAP + function, byte count and data.
    # One SDM630 reading: registers 0x0000-0x0007 and 0x0034-0x004B, then the relay coil.
    registers = (7 + 2 + 2 * 8) + (7 + 2 + 2 * 24)
    coil = 7 + 2 + 1
    assert per_read == 3 * 12 + registers + coil


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("url", "error", "complaint"),
    [
        ("modbus+tcp://127.0.0.1:502?unti=1", InvalidMeterUrl, "unknown option"),
        ("modbus+tcp://127.0.0.1:502?unit=300", InvalidMeterUrl, "unit=300 is outside 0..255"),
        ("modbus+rtu:///dev/ttyUSB0?unit=0", InvalidMeterUrl, "outside 1..247"),
        ("modbus+rtu:///dev/ttyUSB0?parity=X", InvalidMeterUrl, "parity=X"),
        ("modbus+hdlc:///dev/ttyUSB0", InvalidMeterUrl, "not hdlc"),
        ("modbus+tcp://127.0.0.1:502?map=nope", RegisterMapError, "shipped maps: "),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, error: type[Exception], complaint: str) -> None:
    with pytest.raises(error, match=complaint):
        ModbusMeter(parse_meter_url(url))
