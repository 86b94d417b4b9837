"""One Modbus link (a TCP connection or an RS-485 serial port) shared by the devices on it.

A board's battery inverter, PV inverter and relay board often hang on one RS-485 bus with
different unit ids; each device driver talks through the link of its URL, and the link does
one transaction at a time. pymodbus does the framing; every incoming buffer also passes the
meters' `modbus_frames.check_response`, so a bad CRC, a stranger's unit id or a garbled
header is a `DeviceFrameError` at once instead of a silent wait for the timeout.

Timeouts, garbled answers and lost connections are retried (`tries` in all, with back-off
and a fresh connection); an exception answer (the device refused) is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from meterchain.devices.errors import (
    DeviceConnectionFailed,
    DeviceError,
    DeviceFrameError,
    DeviceRejected,
    DeviceTimeout,
    InvalidDeviceUrl,
)
from meterchain.devices.url import DeviceUrl
from meterchain.meters.errors import FrameError
from meterchain.meters.modbus_frames import (
    Expected,
    check_response,
    describe_exception,
    expected_response,
    function_name,
)
from meterchain.meters.retry import check_retry_settings, tries_text

T = TypeVar("T")

_PYMODBUS_LOG = logging.getLogger("pymodbus")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)  # every failure is raised typed; no double report

READ_COILS, READ_HOLDING, WRITE_COIL, WRITE_REGISTERS = 1, 3, 5, 16
MAX_WRITE_REGISTERS = 123  # Modbus limit for function 16
LINK_OPTIONS = ("baud", "parity", "stopbits")
_RETRIED = (DeviceTimeout, DeviceFrameError, DeviceConnectionFailed)


class ModbusLink:
    """A Modbus TCP connection or RTU serial port; connects on first use, reconnects on error."""

    def __init__(self, url: DeviceUrl, *, timeout_s: float = 2.0, tries: int = 3) -> None:
        check_retry_settings(timeout_s, tries)
        self.url = url
        self.timeout_s = timeout_s
        self.tries = tries
        self.framing = "tcp" if url.transport == "tcp" else "rtu"
        self.baud = url.int_option("baud", 9600)
        self.parity = url.option("parity", "N").upper()
        self.stopbits = url.int_option("stopbits", 1)
        if self.baud <= 0 or self.parity not in ("N", "E", "O") or self.stopbits not in (1, 2):
            raise InvalidDeviceUrl(
                f"{url}: serial settings baud={self.baud}, parity={self.parity}, "
                f"stopbits={self.stopbits} are not valid (e.g. baud=9600&parity=N&stopbits=1)"
            )
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._expected: Expected | None = None
        self._problem: asyncio.Future[None] | None = None
        self._received = b""
        self._sent_bytes = 0
        #: Bytes sent and received since the link was made, framing included.
        self.bytes_exchanged = 0

    @property
    def key(self) -> tuple[str, ...]:
        """Devices whose URLs give the same key share this link."""
        return link_key(self.url)

    # ------------------------------------------------------------------ public operations

    async def read_holding(self, unit: int, address: int, count: int) -> list[int]:
        async def once() -> list[int]:
            response = await self._transact(unit, READ_HOLDING, address, count)
            words = list(response.registers)
            if len(words) != count:
                raise DeviceFrameError(
                    f"asked for {count} registers at {address}, got {len(words)}"
                )
            return words

        return await self._run(unit, f"read {count} registers at {address}", once)

    async def write_registers(self, unit: int, address: int, words: list[int]) -> None:
        if not 1 <= len(words) <= MAX_WRITE_REGISTERS:
            raise ValueError(f"a Modbus write takes 1..{MAX_WRITE_REGISTERS} registers")

        async def once() -> None:
            await self._transact(unit, WRITE_REGISTERS, address, len(words), words)

        await self._run(unit, f"write {len(words)} registers at {address}", once)

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        async def once() -> list[bool]:
            response = await self._transact(unit, READ_COILS, address, count)
            bits = [bool(bit) for bit in response.bits[:count]]
            if len(bits) != count:
                raise DeviceFrameError(f"asked for {count} coils at {address}, got {len(bits)}")
            return bits

        return await self._run(unit, f"read coil {address}", once)

    async def write_coil(self, unit: int, address: int, value: bool) -> bool:
        """Write one coil; returns the value the device echoed."""

        async def once() -> bool:
            response = await self._transact(unit, WRITE_COIL, address, 1, value)
            if not response.bits:
                raise DeviceFrameError("the answer to write single coil carried no coil value")
            return bool(response.bits[0])

        return await self._run(unit, f"write coil {address}", once)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    # ------------------------------------------------------------------ retries

    async def _run(self, unit: int, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            last: DeviceError | None = None
            for attempt in range(self.tries):
                if attempt:
                    await asyncio.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                try:
                    if self._client is None:
                        await self._connect()
                    return await operation()
                except _RETRIED as exc:
                    last = exc
                    await self._drop()
            assert last is not None
            raise type(last)(
                f"{last}; could not {what} of unit {unit} on {self.url.where} after "
                f"{tries_text(self.tries)} ({self.timeout_s} s each); {self._hint(last, unit)}"
            ) from None

    def _hint(self, error: DeviceError, unit: int) -> str:
        serial = self.framing == "rtu"
        if isinstance(error, DeviceConnectionFailed):
            if serial:
                return "check the device path and that no other program holds the port"
            return "is the device (or its Modbus gateway) running and listening there?"
        if isinstance(error, DeviceFrameError):
            if serial:
                return (
                    f"answers arrive garbled: check baud ({self.baud}), parity ({self.parity}), "
                    "stop bits and the RS-485 wiring and termination"
                )
            return "answers arrive garbled: is this a Modbus TCP server?"
        return f"is the device powered and set to unit id {unit}?"

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> None:
        await self._drop()
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        common: dict[str, Any] = {
            "timeout": self.timeout_s,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_packet": self._trace_packet,
            "trace_connect": self._trace_connect,
        }
        if self.framing == "tcp":
            client = AsyncModbusTcpClient(self.url.host, port=self.url.port, **common)
        else:
            if not os.path.exists(self.url.device):
                raise DeviceConnectionFailed(
                    f"could not connect to {self.url.device}: no such serial port"
                )
            client = AsyncModbusSerialClient(
                self.url.device,
                framer=FramerType.RTU,
                baudrate=self.baud,
                bytesize=8,
                parity=self.parity,
                stopbits=self.stopbits,
                **common,
            )
        if not await client.connect():
            client.close()
            raise DeviceConnectionFailed(f"could not connect to {self.url.where}")
        self._client = client
        if self.framing == "rtu":
            await asyncio.sleep(0.01)  # let bytes still on the line arrive, then drop them

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ one transaction

    async def _transact(
        self, unit: int, function: int, address: int, count: int, value: Any = None
    ) -> ModbusPDU:
        client = self._client
        if client is None:
            raise DeviceConnectionFailed("not connected")
        expected = expected_response(self.framing, unit, function, count)
        problem: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._expected, self._problem, self._received = expected, problem, b""
        self._sent_bytes = 0
        call: Awaitable[ModbusPDU]
        if function == READ_HOLDING:
            call = client.read_holding_registers(address, count=count, device_id=unit)
        elif function == READ_COILS:
            call = client.read_coils(address, count=count, device_id=unit)
        elif function == WRITE_COIL:
            call = client.write_coil(address, bool(value), device_id=unit)
        else:
            call = client.write_registers(address, list(value), device_id=unit)
        task = asyncio.ensure_future(call)
        try:
            waiters: list[asyncio.Future[Any]] = [task, problem]
            await asyncio.wait(waiters, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.bytes_exchanged += self._sent_bytes + len(self._received)
            self._expected, self._problem = None, None
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ModbusException):
                    await task
        if problem.done():
            error = problem.exception()
            assert error is not None
            raise error
        what = f"{function_name(function)} at address {address}"
        if not task.done() or task.cancelled():
            raise self._silence(what, expected)
        error = task.exception()
        if isinstance(error, ConnectionException):
            raise DeviceConnectionFailed(f"lost the connection: {error}")
        if isinstance(error, ModbusIOException):
            raise self._silence(what, expected)
        if error is not None:
            raise DeviceFrameError(f"pymodbus could not decode the answer to {what}: {error}")
        response = task.result()
        if response.isError():
            meaning = describe_exception(response.exception_code).replace("meter", "device")
            raise DeviceRejected(
                f"unit {unit} on {self.url.where} rejected {what} (function {function}) with "
                f"exception {meaning}"
            )
        return response

    def _silence(self, what: str, expected: Expected) -> DeviceError:
        if self._received:
            return DeviceFrameError(
                f"truncated answer to {what}: {len(self._received)} of "
                f"{expected.frame_size(False)} bytes arrived within {self.timeout_s} s "
                f"({self._received[:32].hex(' ')})"
            )
        return DeviceTimeout(f"no answer to {what} within {self.timeout_s} s")

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Vet every incoming buffer before pymodbus decodes it (pymodbus calls it for both)."""
        expected = self._expected
        if expected is None:
            return data
        if sending:
            self._sent_bytes += len(data)
            if self.framing == "tcp" and len(data) >= 2:
                self._expected = replace(expected, transaction_id=int.from_bytes(data[:2], "big"))
            return data
        self._received = data
        try:
            check_response(data, expected)
        except FrameError as exc:
            if self._problem is not None and not self._problem.done():
                self._problem.set_exception(DeviceFrameError(str(exc)))
            return b""
        return data

    def _trace_connect(self, connected: bool) -> None:
        if connected or self._problem is None or self._problem.done():
            return
        self._problem.set_exception(DeviceConnectionFailed("the device closed the connection"))


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
