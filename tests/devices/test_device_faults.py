"""Devices that answer garbage, answer nothing, or are not what the URL says: one clear line."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from device_site import serve_site

from meterchain.clock import ManualClock
from meterchain.devices.errors import (
    DeviceConnectionFailed,
    DeviceFrameError,
    DeviceMismatch,
    DeviceTimeout,
    WriteNotConfirmed,
)
from meterchain.devices.maps import MAPS_DIR
from meterchain.devices.registry import open_device
from meterchain.meters.sim.modbus_server import start_tcp as start_meter_tcp
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.serial_link import VirtualSerialLink
from meterchain.meters.transport import SerialSettings, open_serial


@asynccontextmanager
async def tcp_answering(answer: bytes | None) -> AsyncIterator[int]:
    """A TCP server that answers every request with `answer` (None: never answers)."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(256):
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message
    return message


async def test_garbage_over_tcp_is_a_frame_error() -> None:
    async with tcp_answering(b"HTTP/1.1 400 Bad Request\r\n\r\n") as port:
        battery = open_device(f"sunspec+tcp://127.0.0.1:{port}?unit=1", "battery", tries=2)
        with pytest.raises(DeviceFrameError) as caught:
            await battery.read_state()
    message = one_line(caught.value)
    assert "an answer to transaction" in message and "after 2 tries" in message
    assert "is this a Modbus TCP server?" in message


async def test_a_silent_device_is_a_timeout() -> None:
    async with tcp_answering(None) as port:
        pv = open_device(f"sunspec+tcp://127.0.0.1:{port}?unit=2", "pv", timeout_s=0.2, tries=1)
        with pytest.raises(DeviceTimeout, match=r"no answer .* within 0\.2 s.*unit id 2\?"):
            await pv.read_state()


async def test_nobody_listening_is_a_connection_error() -> None:
    async with tcp_answering(None) as port:
        pass
    load = open_device(f"relay+tcp://127.0.0.1:{port}?unit=3&coil=0", tries=1)
    with pytest.raises(DeviceConnectionFailed, match=r"is the device .* running and listening"):
        await load.read_state()


async def test_noise_on_the_serial_line_is_a_frame_error(serial_link: VirtualSerialLink) -> None:
    stream = await open_serial(serial_link.meter_end, SerialSettings())

    async def noisy() -> None:
        while True:
            await stream.read_exactly(8, timeout_s=60)
            await stream.write(b"\xff\x00\x13\x37" * 3)

    task = asyncio.create_task(noisy())
    try:
        url = f"sunspec+rtu://{serial_link.client_end}?unit=1&baud=9600"
        with pytest.raises(DeviceFrameError) as caught:
            await open_device(url, "battery", tries=2).read_state()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stream.close()
    message = one_line(caught.value)
    assert "answer from unit 255 where unit 1" in message and "baud (9600)" in message


async def test_an_unknown_unit_on_the_bus_gets_silence(clock: ManualClock) -> None:
    async for site in serve_site(clock, "rtu"):
        url = site.url("battery").replace("unit=1", "unit=9")
        device = open_device(url, "battery", links=site.links, timeout_s=0.2, tries=1)
        with pytest.raises(DeviceTimeout, match="unit id 9"):
            await device.read_state()


async def test_a_meter_is_not_a_sunspec_device(clock: ManualClock) -> None:
    meter = PhysicalMeter("m1", clock, load_w=flat_load_w(100.0))
    server = await start_meter_tcp(meter, "127.0.0.1", 0, map="sdm630")
    try:
        url = f"sunspec+tcp://127.0.0.1:{server.port}?unit=1"
        with pytest.raises(DeviceMismatch) as caught:
            await open_device(url, "battery", tries=1).read_state()
    finally:
        await server.close()
    assert "keeps 'SunS' at its base address (40000" in one_line(caught.value)


async def test_a_pv_url_on_a_battery_names_the_models_it_found(clock: ManualClock) -> None:
    async for site in serve_site(clock, "tcp"):
        url = site.url("battery")
        with pytest.raises(DeviceMismatch) as caught:
            await open_device(url, "pv", links=site.links).read_state()
        assert "a PV inverter needs SunSpec model(s) [101, 121, 123]; the device offers " in (
            one_line(caught.value)
        )
        assert "[1, 124, 802]" in str(caught.value)


async def test_an_impossible_scale_factor_is_garbage(clock: ManualClock, tmp_path: Path) -> None:
    text = (MAPS_DIR / "sunspec-storage.toml").read_text()
    broken = tmp_path / "broken.toml"
    broken.write_text(text.replace('"sunssf", value = -2 }\n', '"sunssf", value = 20 }\n'))
    async for site in serve_site(clock, "tcp", storage_map=str(broken)):
        device = site.open("battery")
        with pytest.raises(WriteNotConfirmed) as caught:
            await device.set_power_w(100)  # type: ignore[attr-defined]
        assert "scale factor" in one_line(caught.value) and "SunSpec allows -10..10" in str(
            caught.value
        )
