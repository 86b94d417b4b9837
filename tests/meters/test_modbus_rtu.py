"""Modbus RTU over a virtual serial cable: the simulator on one end, the driver on the other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from meterchain.clock import ManualClock
from meterchain.meters.errors import FrameError, MeterRejected, MeterTimeout
from meterchain.meters.modbus import ConnectionFailed, ModbusMeter
from meterchain.meters.modbus_frames import rtu_frame
from meterchain.meters.modbus_maps import MAPS_DIR
from meterchain.meters.sim.modbus_server import start_serial
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.serial_link import VirtualSerialLink
from meterchain.meters.transport import SerialSettings, open_serial
from meterchain.meters.url import parse_meter_url
from meterchain.model import RelayState, SetRelay

FLOAT32_REL = 2**-23


@pytest.fixture
def meter(clock: ManualClock) -> PhysicalMeter:
    return PhysicalMeter("rtu-42", clock, load_w=flat_load_w(2000.0), import_wh=12_345.0)


@asynccontextmanager
async def rtu(
    link: VirtualSerialLink,
    meter: PhysicalMeter | None = None,
    map: str = "sdm630",
    timeout_s: float = 1.0,
    **options: str,
) -> AsyncIterator[ModbusMeter]:
    """The simulator (unless `meter` is None) on the meter end, the driver on the client end."""
    server = await start_serial(meter, link.meter_end, map=map) if meter is not None else None
    query = "&".join(
        f"{k}={v}" for k, v in {"baud": "9600", "unit": "1", "map": map, **options}.items()
    )
    modbus = ModbusMeter(
        parse_meter_url(f"modbus+rtu://{link.client_end}?{query}"), timeout_s=timeout_s, retries=2
    )
    try:
        yield modbus
    finally:
        await modbus.close()
        if server is not None:
            await server.close()


async def test_an_rtu_reading_matches_the_physical_meter(
    serial_link: VirtualSerialLink, meter: PhysicalMeter
) -> None:
    async with rtu(serial_link, meter) as modbus:
        reading = await modbus.read()
    state = meter.state()
    assert reading.meter_id == "rtu-42"
    assert reading.import_wh == pytest.approx(state.import_wh, rel=FLOAT32_REL)
    assert reading.power_w == pytest.approx(2000.0, rel=FLOAT32_REL)
    assert reading.voltage_v == pytest.approx(state.voltage_v, rel=FLOAT32_REL)
    assert reading.current_a == pytest.approx(state.current_a, rel=FLOAT32_REL)


async def test_the_relay_switches_over_rtu_and_cuts_the_flow(
    clock: ManualClock, serial_link: VirtualSerialLink, meter: PhysicalMeter
) -> None:
    async with rtu(serial_link, meter) as modbus:
        assert await modbus.command(SetRelay(RelayState.OFF)) is RelayState.OFF
        off = await modbus.read()
        clock.advance(900)
        assert (await modbus.read()).import_wh == off.import_wh
        assert await modbus.command(SetRelay(RelayState.ON)) is RelayState.ON
        clock.advance(900)
        on = await modbus.read()
    assert (off.relay, off.power_w) == (RelayState.OFF, 0.0)
    assert on.import_wh - off.import_wh == pytest.approx(500.0, abs=0.01)  # 2 kW x 15 min


async def test_a_sunspec_meter_over_rtu(
    serial_link: VirtualSerialLink, meter: PhysicalMeter
) -> None:
    async with rtu(serial_link, meter, map="sunspec203") as modbus:
        reading = await modbus.read()
    assert reading.meter_id == "rtu-42"
    assert reading.import_wh == pytest.approx(meter.state().import_wh, abs=1)
    assert reading.power_w == pytest.approx(2000.0, abs=0.5)


async def test_bytes_exchanged_counts_address_pdu_and_crc(
    serial_link: VirtualSerialLink, meter: PhysicalMeter
) -> None:
    async with rtu(serial_link, meter) as modbus:
        await modbus.read()
        before = modbus.bytes_exchanged
        await modbus.read()
        per_read = modbus.bytes_exchanged - before
    # Requests: address, function, start, count, CRC = 8 bytes. Answers: address, function,
    # byte count, data, CRC. Registers 0x0000-0x0007 and 0x0034-0x004B, then the relay coil:
    # 104 bytes, i.e. 104 x 10 / 9600 = 0.108 s of line time at 9600 baud.
    assert per_read == (8 + 5 + 2 * 8) + (8 + 5 + 2 * 24) + (8 + 6) == 104


async def test_registers_the_meter_lacks_are_rejected_over_rtu(
    serial_link: VirtualSerialLink, meter: PhysicalMeter, tmp_path: Path
) -> None:
    wrong_map = tmp_path / "wrong.toml"
    wrong_map.write_text(
        (MAPS_DIR / "sdm630.toml").read_text().replace("address = 0x004A", "address = 0x0100")
    )
    server = await start_serial(meter, serial_link.meter_end)
    modbus = ModbusMeter(
        parse_meter_url(f"modbus+rtu://{serial_link.client_end}?unit=1&map={wrong_map}")
    )
    try:
        with pytest.raises(MeterRejected, match=r"at address 256 \(0x0100\) with exception 2"):
            await modbus.read()
    finally:
        await modbus.close()
        await server.close()


async def test_an_unknown_unit_on_a_serial_line_gets_silence(
    serial_link: VirtualSerialLink, meter: PhysicalMeter
) -> None:
    async with rtu(serial_link, meter, unit="9", timeout_s=0.2) as modbus:
        with pytest.raises(MeterTimeout, match=r"no answer .* within 0\.2 s.*unit id 9"):
            await modbus.read()


@asynccontextmanager
async def fake_rtu_meter(device: str, answer: Callable[[bytes], bytes]) -> AsyncIterator[None]:
    """A meter end that answers each 8-byte request with `answer(request)`."""
    stream = await open_serial(device, SerialSettings())

    async def serve() -> None:
        while True:
            request = await stream.read_exactly(8, timeout_s=60)
            await stream.write(answer(request))

    task = asyncio.create_task(serve())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await stream.close()


def identity_answer(request: bytes) -> bytes:
    assert request[:2] == b"\x01\x03"  # the driver asks for the meter's identity first
    return rtu_frame(1, b"\x03\x20" + b"rtu-42".ljust(32, b"\x00"))


async def test_a_bad_crc_is_a_frame_error(serial_link: VirtualSerialLink) -> None:
    def damaged(request: bytes) -> bytes:
        frame = identity_answer(request)
        return frame[:-1] + bytes([frame[-1] ^ 0x55])

    async with fake_rtu_meter(serial_link.meter_end, damaged), rtu(serial_link) as modbus:
        with pytest.raises(FrameError) as caught:
            await modbus.read()
    message = str(caught.value)
    assert "CRC mismatch" in message and "after 2 tries" in message and "baud (9600)" in message


async def test_noise_on_the_line_is_a_frame_error(serial_link: VirtualSerialLink) -> None:
    noise = b"\xff\x00\x13\x37" * 3
    async with fake_rtu_meter(serial_link.meter_end, lambda _r: noise), rtu(serial_link) as modbus:
        with pytest.raises(FrameError, match="answer from unit 255 where unit 1"):
            await modbus.read()


async def test_a_truncated_rtu_answer_is_a_frame_error(serial_link: VirtualSerialLink) -> None:
    def cut_short(request: bytes) -> bytes:
        return identity_answer(request)[:10]

    async with (
        fake_rtu_meter(serial_link.meter_end, cut_short),
        rtu(serial_link, timeout_s=0.2) as modbus,
    ):
        with pytest.raises(FrameError, match=r"truncated answer .*: 10 of 37 bytes"):
            await modbus.read()


async def test_a_missing_serial_port_is_a_connection_error() -> None:
    modbus = ModbusMeter(parse_meter_url("modbus+rtu:///dev/no-such-tty?unit=1"), retries=1)
    with pytest.raises(ConnectionFailed, match="could not connect to /dev/no-such-tty"):
        await modbus.read()
