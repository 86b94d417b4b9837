"""Meter URLs: `PROTOCOL[+TRANSPORT]://HOST:PORT?opts` or `PROTOCOL[+rtu|+hdlc]:///dev/tty…`.

Device URLs (`devices/url.py`) have the same shape; `EndpointUrl` and `split_endpoint` are the
parts both parse with, so a host, a port, a device path and an option mean the same in each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import SplitResult, parse_qsl, urlsplit

from meterchain.meters.errors import InvalidMeterUrl

PROTOCOLS = ("modbus", "dlms", "iec62056-21", "nbr14522")
SERIAL_TRANSPORTS = ("rtu", "hdlc", "serial")


@dataclass(frozen=True)
class EndpointUrl:
    """What meter and device URLs share: a TCP endpoint or a serial device path, and options.

    Each kind of URL raises its own error type (`invalid`), so a bad option in a device URL is
    a device error and one in a meter URL a meter error, while the checks are written once.
    """

    invalid: ClassVar[type[Exception]]

    protocol: str
    transport: str
    host: str = ""
    port: int = 0
    device: str = ""
    options: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    @property
    def is_serial(self) -> bool:
        return self.transport != "tcp"

    @property
    def where(self) -> str:
        """The link the URL reaches: host:port, or the serial device path."""
        return self.device if self.is_serial else f"{self.host}:{self.port}"

    def option(self, name: str, default: str) -> str:
        return self.options.get(name, default)

    def int_option(self, name: str, default: int) -> int:
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return int(value, 0)
        except ValueError:
            raise self.invalid(f"{self.raw}: option {name}={value!r} is not an integer") from None

    def float_option(self, name: str, default: float) -> float:
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise self.invalid(f"{self.raw}: option {name}={value!r} is not a number") from None

    def reject_unknown_options(self, known: Iterable[str]) -> None:
        """A misspelt option must not be silently ignored: name it and the known ones."""
        allowed = sorted(known)
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise self.invalid(
                f"{self.raw}: unknown option {', '.join(unknown)}; known: {', '.join(allowed)}"
            )

    def unit(self) -> int:
        """The Modbus unit id (1 by default; 1..247 on a serial line, 0..255 on TCP)."""
        unit = self.int_option("unit", 1)
        low, high = (1, 247) if self.is_serial else (0, 255)
        if not low <= unit <= high:
            raise self.invalid(f"{self.raw}: unit={unit} is outside {low}..{high}")
        return unit

    def __str__(self) -> str:
        return self.raw


@dataclass(frozen=True)
class MeterUrl(EndpointUrl):
    """A parsed meter URL. `transport` is "tcp" or a serial transport; serial URLs have `device`."""

    invalid: ClassVar[type[Exception]] = InvalidMeterUrl


def split_endpoint(
    text: str,
    parts: SplitResult,
    tcp: bool,
    *,
    kind: str,
    example_port: int,
    invalid: Callable[[str], Exception],
) -> tuple[str, int, str]:
    """(host, port, device path) of a split URL: a TCP one needs both host and port, a serial
    one a path and no host. `kind` ("meter", "device") and `example_port` word the errors."""
    scheme = parts.scheme.lower()
    if tcp:
        if not parts.hostname:
            raise invalid(
                f"{text}: a TCP {kind} URL needs a host, e.g. {scheme}://127.0.0.1:{example_port}"
            )
        try:
            port = parts.port
        except ValueError:
            raise invalid(f"{text}: the port is not a number from 0 to 65535") from None
        if port is None:
            raise invalid(
                f"{text}: a TCP {kind} URL needs a port, e.g. {scheme}://127.0.0.1:{example_port}"
            )
        return parts.hostname, port, ""
    if parts.hostname or not parts.path:
        raise invalid(
            f"{text}: a serial {kind} URL names a device path, e.g. {scheme}:///dev/ttyUSB0"
        )
    return "", 0, parts.path


def parse_meter_url(text: str) -> MeterUrl:
    """Parse a meter URL, naming what is wrong when it cannot be used."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidMeterUrl(
            f"{text!r} has no scheme; write e.g. modbus+tcp://127.0.0.1:5020?unit=1&map=sdm630"
        )
    protocol, _, transport = scheme.partition("+")
    if protocol not in PROTOCOLS:
        raise InvalidMeterUrl(
            f"{text}: unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if not transport:
        transport = "tcp" if parts.hostname else "serial"
    if transport == "tcp" or transport in SERIAL_TRANSPORTS:
        host, port, device = split_endpoint(
            text,
            parts,
            transport == "tcp",
            kind="meter",
            example_port=5020,
            invalid=InvalidMeterUrl,
        )
        return MeterUrl(protocol, transport, host, port, device, options, text)
    raise InvalidMeterUrl(
        f"{text}: unknown transport {transport!r}; use tcp or one of {', '.join(SERIAL_TRANSPORTS)}"
    )
