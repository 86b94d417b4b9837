"""One Modbus link (a TCP connection or an RS-485 serial port) shared by the devices on it.

A board's battery inverter, PV inverter and relay board often hang on one RS-485 bus with
different unit ids; each device driver talks through the link of its URL, and the link does
one transaction at a time. The transactions themselves are the meters' Modbus engine
(`meters/modbus_link.py`), retried by the meters' retry loop (`meters/retry.py`): timeouts,
garbled answers and lost connections are tried again (`tries` in all, with back-off and a
fresh connection, within an overall deadline); an exception answer (the device refused) is
not. What comes out is a device error (`devices/errors.py`), never a meter error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from meterchain.devices.errors import (
    DeviceConnectionFailed,
    DeviceError,
    DeviceFrameError,
    DeviceRejected,
    DeviceTimeout,
    InvalidDeviceUrl,
)
from meterchain.devices.url import DeviceUrl
from meterchain.meters.errors import FrameError, MeterError, MeterRejected, MeterTimeout
from meterchain.meters.modbus_link import (
    MAX_WRITE_REGISTERS,
    SERIAL_OPTIONS,
    ModbusConnection,
    link_settings,
)
from meterchain.meters.retry import (
    DEADLINE_OPTION,
    RetryPolicy,
    check_retry_settings,
    default_deadline_s,
    tries_text,
    with_retries,
)

T = TypeVar("T")

LINK_OPTIONS = (*SERIAL_OPTIONS, DEADLINE_OPTION)
# One try: at most a connection and one answer, each within the timeout; the deadline leaves
# room for one more, so it only ever cuts a try that drags on past what a timeout allows.
ANSWERS_PER_TRY = 3
# A device error for each meter error the engine raises; any other (a line that failed) is
# a lost connection.
_DEVICE_ERRORS: tuple[tuple[type[MeterError], type[DeviceError]], ...] = (
    (MeterRejected, DeviceRejected),
    (MeterTimeout, DeviceTimeout),
    (FrameError, DeviceFrameError),
)

__all__ = ["LINK_OPTIONS", "MAX_WRITE_REGISTERS", "LinkPool", "ModbusLink", "link_key"]


def as_device_error(error: MeterError) -> DeviceError:
    """The device error with the same meaning and message as the engine's `error`."""
    for meter_type, device_type in _DEVICE_ERRORS:
        if isinstance(error, meter_type):
            return device_type(str(error))
    return DeviceConnectionFailed(str(error))


class ModbusLink:
    """A Modbus TCP connection or RTU serial port; connects on first use, reconnects on error."""

    def __init__(self, url: DeviceUrl, *, timeout_s: float = 2.0, tries: int = 3) -> None:
        check_retry_settings(timeout_s, tries)
        self.url = url
        self.timeout_s = timeout_s
        self.tries = tries
        settings = link_settings(url)
        self.framing = settings.framing
        self.baud, self.parity, self.stopbits = settings.baud, settings.parity, settings.stopbits
        # A URL's `deadline_s=` bounds one operation, every try included, as for meters.
        deadline_s = url.float_option(
            DEADLINE_OPTION, default_deadline_s(tries, timeout_s, ANSWERS_PER_TRY)
        )
        if not 0 < deadline_s < float("inf"):
            raise InvalidDeviceUrl(
                f"{url}: {DEADLINE_OPTION}={deadline_s:g} must be a positive number of seconds"
            )
        self.policy = RetryPolicy(tries, timeout_s, deadline_s)
        self._connection = ModbusConnection(
            settings, timeout_s=timeout_s, peer="device", name=url.where
        )
        self._lock = asyncio.Lock()

    @property
    def key(self) -> tuple[str, ...]:
        """Devices whose URLs give the same key share this link."""
        return link_key(self.url)

    @property
    def bytes_exchanged(self) -> int:
        """Bytes sent and received since the link was made, framing included."""
        return self._connection.bytes_exchanged

    # ------------------------------------------------------------------ public operations

    async def read_holding(self, unit: int, address: int, count: int) -> list[int]:
        connection = self._connection
        return await self._run(
            unit,
            f"read {count} registers at {address}",
            lambda: connection.read_registers(unit, "holding", address, count),
        )

    async def write_registers(self, unit: int, address: int, words: list[int]) -> None:
        if not 1 <= len(words) <= MAX_WRITE_REGISTERS:
            raise ValueError(f"a Modbus write takes 1..{MAX_WRITE_REGISTERS} registers")
        connection = self._connection
        await self._run(
            unit,
            f"write {len(words)} registers at {address}",
            lambda: connection.write_registers(unit, address, words),
        )

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        connection = self._connection
        return await self._run(
            unit, f"read coil {address}", lambda: connection.read_coils(unit, address, count)
        )

    async def write_coil(self, unit: int, address: int, value: bool) -> bool:
        """Write one coil; returns the value the device echoed."""
        connection = self._connection
        return await self._run(
            unit, f"write coil {address}", lambda: connection.write_coil(unit, address, value)
        )

    async def close(self) -> None:
        async with self._lock:
            await self._connection.drop()

    # ------------------------------------------------------------------ retries

    async def _run(self, unit: int, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        connection = self._connection

        async def attempt() -> T:
            if not connection.connected:
                await connection.connect()
            return await operation()

        async def reset(error: MeterError) -> None:
            if not isinstance(error, MeterRejected):  # a refusal leaves the link sound
                await connection.drop()

        def gave_up(last: MeterError) -> MeterError:
            return type(last)(
                f"{last}; could not {what} of unit {unit} on {self.url.where} after "
                f"{tries_text(self.tries)} ({self.timeout_s} s each); "
                f"{connection.hint(last, unit)}"
            )

        async with self._lock:
            try:
                return await with_retries(
                    what, self.url.where, attempt, self.policy, reset=reset, gave_up=gave_up
                )
            except MeterError as exc:
                raise as_device_error(exc) from None


def link_key(url: DeviceUrl) -> tuple[str, ...]:
    """Which link a device URL uses: its TCP endpoint, or its serial port and settings."""
    if url.transport == "tcp":
        return ("tcp", url.host, str(url.port))
    return (
        "rtu",
        url.device,
        url.option("baud", "9600"),
        url.option("parity", "N").upper(),
        url.option("stopbits", "1"),
    )


class LinkPool:
    """The links of one board: devices on the same TCP endpoint or serial port share one."""

    def __init__(self, *, timeout_s: float = 2.0, tries: int = 3) -> None:
        self.timeout_s = timeout_s
        self.tries = tries
        self._links: dict[tuple[str, ...], ModbusLink] = {}

    def link(self, url: DeviceUrl) -> ModbusLink:
        key = link_key(url)
        link = self._links.get(key)
        if link is None:
            link = ModbusLink(url, timeout_s=self.timeout_s, tries=self.tries)
            self._links[key] = link
        return link

    @property
    def bytes_exchanged(self) -> int:
        """Bytes sent and received on all the pool's links, framing included."""
        return sum(link.bytes_exchanged for link in self._links.values())

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
        self._links.clear()
