"""Meter URLs: `PROTOCOL[+TRANSPORT]://HOST:PORT?opts` or `PROTOCOL[+rtu|+hdlc]:///dev/tty…`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from meterchain.meters.errors import InvalidMeterUrl

PROTOCOLS = ("modbus", "dlms", "iec62056-21", "nbr14522")
SERIAL_TRANSPORTS = ("rtu", "hdlc", "serial")


@dataclass(frozen=True)
class MeterUrl:
    """A parsed meter URL. `transport` is "tcp" or a serial transport; serial URLs have `device`."""

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

    def option(self, name: str, default: str) -> str:
        return self.options.get(name, default)

    def int_option(self, name: str, default: int) -> int:
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return int(value, 0)
        except ValueError:
            raise InvalidMeterUrl(
                f"{self.raw}: option {name}={value!r} is not an integer"
            ) from None

    def float_option(self, name: str, default: float) -> float:
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise InvalidMeterUrl(f"{self.raw}: option {name}={value!r} is not a number") from None

    def reject_unknown_options(self, known: Iterable[str]) -> None:
        """A misspelt option must not be silently ignored: name it and the known ones."""
        allowed = sorted(known)
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise InvalidMeterUrl(
                f"{self.raw}: unknown option {', '.join(unknown)}; known: {', '.join(allowed)}"
            )

    def __str__(self) -> str:
        return self.raw


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
    if transport == "tcp":
        if not parts.hostname:
            raise InvalidMeterUrl(
                f"{text}: a TCP meter URL needs a host, e.g. {scheme}://127.0.0.1:5020"
            )
        try:
            port = parts.port
        except ValueError:
            raise InvalidMeterUrl(f"{text}: the port is not a number from 0 to 65535") from None
        if port is None:
            raise InvalidMeterUrl(
                f"{text}: a TCP meter URL needs a port, e.g. {scheme}://127.0.0.1:5020"
            )
        return MeterUrl(protocol, "tcp", parts.hostname, port, "", options, text)
    if transport in SERIAL_TRANSPORTS:
        if parts.hostname or not parts.path:
            raise InvalidMeterUrl(
                f"{text}: a serial meter URL names a device path, e.g. {scheme}:///dev/ttyUSB0"
            )
        return MeterUrl(protocol, transport, "", 0, parts.path, options, text)
    raise InvalidMeterUrl(
        f"{text}: unknown transport {transport!r}; use tcp or one of {', '.join(SERIAL_TRANSPORTS)}"
    )
