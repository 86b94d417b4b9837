"""Device URLs, in the style of meter URLs.

`sunspec+tcp://HOST:PORT?unit=1` and `sunspec+rtu:///dev/ttyUSB0?unit=1&baud=9600` reach a
SunSpec inverter (battery or PV) over Modbus; `relay+tcp://HOST:PORT?unit=3&coil=0` and
`relay+rtu:///dev/ttyUSB0?unit=3&coil=0` reach one coil of a Modbus relay board.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from meterchain.devices.errors import InvalidDeviceUrl

PROTOCOLS = ("sunspec", "relay")
TRANSPORTS = ("tcp", "rtu")
EXAMPLES = {
    "sunspec": "sunspec+tcp://127.0.0.1:1502?unit=1",
    "relay": "relay+tcp://127.0.0.1:1502?unit=3&coil=0",
}


@dataclass(frozen=True)
class DeviceUrl:
    """A parsed device URL: TCP ones have host and port, RTU ones a serial `device` path."""

    protocol: str
    transport: str
    host: str = ""
    port: int = 0
    device: str = ""
    options: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    def option(self, name: str, default: str) -> str:
        return self.options.get(name, default)

    def int_option(self, name: str, default: int) -> int:
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return int(value, 0)
        except ValueError:
            raise InvalidDeviceUrl(
                f"{self.raw}: option {name}={value!r} is not an integer"
            ) from None

    def reject_unknown_options(self, known: Iterable[str]) -> None:
        """A misspelt option must not be silently ignored: name it and the known ones."""
        allowed = sorted(known)
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise InvalidDeviceUrl(
                f"{self.raw}: unknown option {', '.join(unknown)}; known: {', '.join(allowed)}"
            )

    def unit(self) -> int:
        """The Modbus unit id (1 by default; 1..247 on a serial line, 0..255 on TCP)."""
        unit = self.int_option("unit", 1)
        low, high = (0, 255) if self.transport == "tcp" else (1, 247)
        if not low <= unit <= high:
            raise InvalidDeviceUrl(f"{self.raw}: unit={unit} is outside {low}..{high}")
        return unit

    @property
    def where(self) -> str:
        """The link the device hangs on: host:port, or the serial device path."""
        return f"{self.host}:{self.port}" if self.transport == "tcp" else self.device

    def __str__(self) -> str:
        return self.raw


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
    if transport == "tcp":
        if not parts.hostname:
            raise InvalidDeviceUrl(
                f"{text}: a TCP device URL needs a host, e.g. {scheme}://127.0.0.1:1502"
            )
        try:
            port = parts.port
        except ValueError:
            raise InvalidDeviceUrl(f"{text}: the port is not a number from 0 to 65535") from None
        if port is None:
            raise InvalidDeviceUrl(
                f"{text}: a TCP device URL needs a port, e.g. {scheme}://127.0.0.1:1502"
            )
        return DeviceUrl(protocol, "tcp", parts.hostname, port, "", options, text)
    if parts.hostname or not parts.path:
        raise InvalidDeviceUrl(
            f"{text}: a serial device URL names a device path, e.g. {scheme}:///dev/ttyUSB0"
        )
    return DeviceUrl(protocol, "rtu", "", 0, parts.path, options, text)
