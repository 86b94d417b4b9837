"""One Modbus TCP connection or RTU serial port: the transaction engine of every Modbus driver.

The meter driver (`meters/modbus.py`) and the device drivers (`devices/modbus_link.py`) both
talk through a `ModbusConnection`: it opens the link, does one request at a time and turns
every failure into a typed, one-line `MeterError` (`ConnectionFailed`, `MeterTimeout`,
`FrameError`, `MeterRejected`). pymodbus does the framing; every incoming buffer also passes
`modbus_frames.check_response`, which turns bad CRCs, strangers' unit ids and garbled headers
into `FrameError` at once (pymodbus itself would drop such a frame silently and wait for its
timeout). Retrying is the caller's: it knows what one try is (`meters/retry.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from meterchain.meters.errors import FrameError, MeterError, MeterRejected, MeterTimeout
from meterchain.meters.modbus_frames import (
    Expected,
    check_response,
    describe_exception,
    expected_response,
    function_name,
)
from meterchain.meters.url import EndpointUrl

# pymodbus logs each failure it meets (refused connections, timeouts) at WARNING/ERROR; the
# drivers raise every one of them as a typed error, so by default those lines are only noise
# on the command line. An application that wants them sets the "pymodbus" logger's level.
_PYMODBUS_LOG = logging.getLogger("pymodbus")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)

READ_COILS, READ_HOLDING, READ_INPUT, WRITE_COIL, WRITE_REGISTERS = 1, 3, 4, 5, 16
MAX_WRITE_REGISTERS = 123  # Modbus limit for function 16
SERIAL_OPTIONS = ("baud", "parity", "stopbits")


class ConnectionFailed(MeterError):
    """The TCP connection or the serial port could not be opened, or it was lost."""


@dataclass(frozen=True)
class LinkSettings:
    """Where a link goes and, on a serial line, how its bytes are framed."""

    framing: str  # "tcp" or "rtu"
    host: str
    port: int
    device: str
    baud: int
    parity: str
    stopbits: int

    @property
    def serial(self) -> bool:
        return self.framing == "rtu"

    @property
    def where(self) -> str:
        """host:port, or the serial device path."""
        return self.device if self.serial else f"{self.host}:{self.port}"


def link_settings(url: EndpointUrl) -> LinkSettings:
    """The link a meter or device URL asks for; bad serial options raise the URL's own error."""
    baud = url.int_option("baud", 9600)
    parity = url.option("parity", "N").upper()
    stopbits = url.int_option("stopbits", 1)
    if baud <= 0 or parity not in ("N", "E", "O") or stopbits not in (1, 2):
        raise url.invalid(
            f"{url}: serial settings baud={baud}, parity={parity}, "
            f"stopbits={stopbits} are not valid (e.g. baud=9600&parity=N&stopbits=1)"
        )
    framing = "rtu" if url.is_serial else "tcp"
    return LinkSettings(framing, url.host, url.port, url.device, baud, parity, stopbits)


class ModbusConnection:
    """One link, opened by `connect` and closed by `drop`; `transact` does one request.

    `peer` ("meter", "device") and `name` (the URL, or where the link goes) word the errors.
    Callers serialise transactions (one lock per driver or per shared link).
    """

    def __init__(self, settings: LinkSettings, *, timeout_s: float, peer: str, name: str) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.peer = peer
        self.name = name
        #: Bytes sent and received since construction, all framing included.
        self.bytes_exchanged = 0
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        # The transaction in flight (at most one):
        self._expected: Expected | None = None
        self._problem: asyncio.Future[None] | None = None
        self._sent_bytes = 0
        self._received = b""

    @property
    def connected(self) -> bool:
        return self._client is not None

    # ---------------------------------------------------------------------------- connection

    async def connect(self) -> None:
        """(Re)open the link; `ConnectionFailed` when the port or the server is not there."""
        await self.drop()
        link = self.settings
        common: dict[str, Any] = {
            "timeout": self.timeout_s,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_packet": self._trace_packet,
            "trace_connect": self._trace_connect,
        }
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if not link.serial:
            client = AsyncModbusTcpClient(link.host, port=link.port, **common)
        else:
            if not os.path.exists(link.device):
                raise ConnectionFailed(f"could not connect to {link.device}: no such serial port")
            client = AsyncModbusSerialClient(
                link.device,
                framer=FramerType.RTU,
                baudrate=link.baud,
                bytesize=8,
                parity=link.parity,
                stopbits=link.stopbits,
                **common,
            )
        if not await client.connect():
            client.close()
            raise ConnectionFailed(f"could not connect to {link.where}")
        self._client = client
        if link.serial:
            await asyncio.sleep(0.01)  # let bytes still queued on the line arrive, then drop

    async def drop(self) -> None:
        """Close the link (after an error a fresh one starts clean)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
            await asyncio.sleep(0)

    # ---------------------------------------------------------------------------- operations

    async def read_registers(self, unit: int, table: str, address: int, count: int) -> list[int]:
        """`count` words of the "input" or "holding" table."""
        function = READ_INPUT if table == "input" else READ_HOLDING
        response = await self.transact(unit, function, address, count)
        words = list(response.registers)
        if len(words) != count:
            raise FrameError(f"asked for {count} registers at {address}, got {len(words)}")
        return words

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        response = await self.transact(unit, READ_COILS, address, count)
        bits = [bool(bit) for bit in response.bits[:count]]
        if len(bits) != count:
            raise FrameError(f"asked for {count} coils at {address}, got {len(bits)}")
        return bits

    async def write_coil(self, unit: int, address: int, value: bool) -> bool:
        """Write one coil; returns the value the peer echoed."""
        response = await self.transact(unit, WRITE_COIL, address, 1, value)
        if not response.bits:
            raise FrameError("the answer to write single coil carried no coil value")
        return bool(response.bits[0])

    async def write_registers(self, unit: int, address: int, words: list[int]) -> None:
        if not 1 <= len(words) <= MAX_WRITE_REGISTERS:
            raise ValueError(f"a Modbus write takes 1..{MAX_WRITE_REGISTERS} registers")
        await self.transact(unit, WRITE_REGISTERS, address, len(words), words)

    # ---------------------------------------------------------------------------- one transaction

    async def transact(
        self, unit: int, function: int, address: int, count: int, value: Any = None
    ) -> ModbusPDU:
        """One request and its answer; errors come out typed."""
        client = self._client
        if client is None:
            raise ConnectionFailed("not connected")
        expected = expected_response(self.settings.framing, unit, function, count)
        problem: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._expected, self._problem = expected, problem
        self._sent_bytes, self._received = 0, b""
        call: Awaitable[ModbusPDU]
        if function == READ_INPUT:
            call = client.read_input_registers(address, count=count, device_id=unit)
        elif function == READ_HOLDING:
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
            raise ConnectionFailed(f"lost the connection: {error}")
        if isinstance(error, ModbusIOException):
            raise self._silence(what, expected)
        if error is not None:
            raise FrameError(f"pymodbus could not decode the answer to {what}: {error}")
        response = task.result()
        if response.isError():
            meaning = describe_exception(response.exception_code).replace("meter", self.peer)
            raise MeterRejected(
                f"{self.name}: the {self.peer} (unit {unit}) rejected {function_name(function)} "
                f"(function {function}) of {count} at address {address} ({address:#06x}) with "
                f"exception {meaning}"
            )
        return response

    def _silence(self, what: str, expected: Expected) -> MeterError:
        """The error for an answer that did not complete in time: none at all, or a part."""
        if self._received:
            return FrameError(
                f"truncated answer to {what}: {len(self._received)} of "
                f"{expected.frame_size(False)} bytes arrived within {self.timeout_s} s "
                f"({self._received[:32].hex(' ')})"
            )
        return MeterTimeout(f"no answer to {what} within {self.timeout_s} s")

    def hint(self, error: MeterError, unit: int) -> str:
        """What to check after the last try failed with `error`."""
        link, peer = self.settings, self.peer
        if isinstance(error, ConnectionFailed):
            if link.serial:
                return "check the device path and that no other program holds the port"
            return f"is the {peer} (or its Modbus gateway) running and listening there?"
        if isinstance(error, FrameError):
            if link.serial:
                return (
                    f"answers arrive garbled: check baud ({link.baud}), parity "
                    f"({link.parity}), stop bits and the RS-485 wiring and termination"
                )
            return "answers arrive garbled: is this a Modbus TCP server?"
        if link.serial:
            return (
                f"is the {peer} powered, wired to {link.device}, set to unit id "
                f"{unit} and {link.baud} baud?"
            )
        return f"is the {peer} powered and set to unit id {unit}?"

    # ---------------------------------------------------------------------------- pymodbus hooks

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Count every byte and vet every incoming buffer (pymodbus calls it for both)."""
        expected = self._expected
        if expected is None:
            return data  # stale bytes between transactions: pymodbus drops them at the next send
        if sending:
            self._sent_bytes += len(data)
            if not self.settings.serial and len(data) >= 2:
                self._expected = replace(expected, transaction_id=int.from_bytes(data[:2], "big"))
            return data
        self._received = data  # pymodbus passes the whole buffer received so far
        try:
            check_response(data, expected)
        except FrameError as exc:
            if self._problem is not None and not self._problem.done():
                self._problem.set_exception(exc)
            return b""  # keep pymodbus from decoding it
        return data

    def _trace_connect(self, connected: bool) -> None:
        if connected or self._problem is None or self._problem.done():
            return
        self._problem.set_exception(ConnectionFailed(f"the {self.peer} closed the connection"))
