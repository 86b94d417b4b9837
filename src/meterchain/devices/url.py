"""Device URLs, in the style of meter URLs.

`sunspec+tcp://HOST:PORT?unit=1` and `sunspec+rtu:///dev/ttyUSB0?unit=1&baud=9600` reach a
SunSpec inverter (battery or PV) over Modbus; `relay+tcp://HOST:PORT?unit=3&coil=0` and
`relay+rtu:///dev/ttyUSB0?unit=3&coil=0` reach one coil of a Modbus relay board.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit

from meterchain.devices.errors import InvalidDeviceUrl
from meterchain.meters.url import EndpointUrl, split_endpoint

PROTOCOLS = ("sunspec", "relay")
TRANSPORTS = ("tcp", "rtu")
EXAMPLES = {
    "sunspec": "sunspec+tcp://127.0.0.1:1502?unit=1",
    "relay": "relay+tcp://127.0.0.1:1502?unit=3&coil=0",
}


@dataclass(frozen=True)
class DeviceUrl(EndpointUrl):
    """A parsed device URL: TCP ones have host and port, RTU ones a serial `device` path.

    Options, the unit id and `where` behave as in meter URLs; errors are `InvalidDeviceUrl`.
    """

    invalid: ClassVar[type[Exception]] = InvalidDeviceUrl


def parse_device_url(text: str) -> DeviceUrl:
    """Parse a device URL, naming what is wrong when it cannot be used."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    protocol, _, transport = scheme.partition("+")
    if protocol not in PROTOCOLS:
        raise InvalidDeviceUrl(
            f"{text!r}: unknown device protocol {protocol or '(none)'!r}; write e.g. "
            f"{EXAMPLES['sunspec']} or {EXAMPLES['relay']}"
        )
    if transport not in TRANSPORTS:
        raise InvalidDeviceUrl(
            f"{text}: {protocol} runs over tcp or rtu, not {transport or '(none)'!r}; write "
            f"{protocol}+tcp://HOST:PORT or {protocol}+rtu:///dev/ttyUSB0"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    host, port, device = split_endpoint(
        text, parts, transport == "tcp", kind="device", example_port=1502, invalid=InvalidDeviceUrl
    )
    return DeviceUrl(protocol, transport, host, port, device, options, text)
