"""Meter URLs, and the byte streams the stream protocols run on."""

from __future__ import annotations

import asyncio

import pytest

from meterchain.meters.errors import InvalidMeterUrl, MeterTimeout
from meterchain.meters.sim.serial_link import VirtualSerialLink
from meterchain.meters.transport import SerialSettings, open_serial
from meterchain.meters.url import parse_meter_url


def test_tcp_url_keeps_host_port_and_options() -> None:
    url = parse_meter_url("modbus+tcp://127.0.0.1:5020?unit=1&map=sdm630")
    assert (url.protocol, url.transport, url.host, url.port) == ("modbus", "tcp", "127.0.0.1", 5020)
    assert url.int_option("unit", 0) == 1
    assert url.option("map", "") == "sdm630"


def test_serial_url_names_the_device() -> None:
    url = parse_meter_url("modbus+rtu:///dev/ttyUSB0?baud=9600&unit=1")
    assert url.is_serial and url.device == "/dev/ttyUSB0" and url.int_option("baud", 0) == 9600
    assert parse_meter_url("nbr14522:///dev/ttyS1").transport == "serial"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("127.0.0.1:5020", "no scheme"),
        ("zigbee+tcp://127.0.0.1:1", "unknown protocol 'zigbee'"),
        ("modbus+tcp://127.0.0.1", "needs a port"),
        ("modbus+tcp://127.0.0.1:99999", "port is not a number"),
        ("modbus+carrierpigeon://x:1", "unknown transport"),
        ("dlms+hdlc://host:1", "device path"),
    ],
)
def test_bad_urls_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(InvalidMeterUrl, match=complaint):
        parse_meter_url(text)


def test_bad_integer_option_is_named() -> None:
    with pytest.raises(InvalidMeterUrl, match="unit='x'"):
        parse_meter_url("modbus+tcp://127.0.0.1:1?unit=x").int_option("unit", 1)


async def test_bytes_cross_the_virtual_serial_link_both_ways(
    serial_link: VirtualSerialLink,
) -> None:
    meter_side = await open_serial(serial_link.meter_end, SerialSettings())
    client_side = await open_serial(serial_link.client_end, SerialSettings())
    try:
        await client_side.write(b"/?!\r\n")
        assert await meter_side.read_until(b"\r\n", timeout_s=2) == b"/?!\r\n"
        await meter_side.write(bytes(range(256)))
        assert await client_side.read_exactly(256, timeout_s=2) == bytes(range(256))
    finally:
        await client_side.close()
        await meter_side.close()


async def test_silence_on_the_line_is_a_timeout(serial_link: VirtualSerialLink) -> None:
    client_side = await open_serial(serial_link.client_end, SerialSettings())
    try:
        with pytest.raises(MeterTimeout, match=r"within 0\.2 s"):
            await client_side.read_exactly(4, timeout_s=0.2)
    finally:
        await client_side.close()
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    "text",
    [
        "modbus+tcp://127.0.0.1:502?unti=1",
        "dlms+tcp://127.0.0.1:4059?pasword=x",
        "iec62056-21+tcp://127.0.0.1:5021?pasword=x",
        "nbr14522+tcp://127.0.0.1:5022?reeder=1",
    ],
)
def test_every_driver_names_a_misspelt_option(text: str) -> None:
    from meterchain.meters.registry import open_meter

    with pytest.raises(InvalidMeterUrl, match=r"unknown option .*; known: "):
        open_meter(text)
