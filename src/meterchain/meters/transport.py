"""Byte streams over TCP or a serial line, with timeouts that raise `MeterTimeout`.

Drivers and simulators of the stream protocols (DLMS, IEC 62056-21, NBR 14522) share this;
Modbus uses pymodbus's own transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from dataclasses import dataclass
from typing import Any

import serial

from meterchain.meters.errors import MeterError, MeterTimeout


@dataclass(frozen=True)
class SerialSettings:
    """Line settings for a serial port."""

    baud: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1


class ByteStream:
    """A bidirectional byte stream with deadline-bound reads."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        where: str,
        on_close: Any = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.where = where
        self._on_close = on_close
        self.bytes_written = 0
        self.bytes_read = 0

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            self.bytes_written += len(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:  # reset, broken pipe, a transport already closed
            raise self._lost(exc) from None

    async def read_exactly(self, count: int, timeout_s: float) -> bytes:
        """Exactly `count` bytes, or `MeterTimeout` naming how many arrived."""
        try:
            data = await asyncio.wait_for(self._reader.readexactly(count), timeout_s)
        except TimeoutError:
            raise MeterTimeout(
                f"no complete answer from {self.where} within {timeout_s} s "
                f"(expected {count} bytes)"
            ) from None
        except asyncio.IncompleteReadError as exc:
            raise MeterError(
                f"{self.where} closed the connection after {len(exc.partial)} of {count} bytes"
            ) from None
        except OSError as exc:  # a reset (ConnectionResetError), a serial port unplugged
            raise self._lost(exc) from None
        self.bytes_read += len(data)
        return data

    def _lost(self, exc: BaseException) -> MeterError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return MeterError(
            f"the connection to {self.where} was lost ({reason or type(exc).__name__}); "
            "did the meter or its serial server restart?"
        )

    async def read_some(
        self, max_count: int, timeout_s: float, stop_at: int | None = None
    ) -> bytes:
        """What has arrived: at least one byte, at most `max_count`, none past `stop_at`.

        Waits up to `timeout_s` for the first byte only (`MeterTimeout`, as `read_exactly`
        raises it); everything else is taken from what is already buffered, in one piece.
        Reading stops right after the first `stop_at` byte, so nothing of a following message
        is consumed. A message read with it costs one wake-up per network packet or serial
        burst instead of one per byte.
        """
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, not {max_count}")
        first = b""
        if not self._pending():
            first = await self.read_exactly(1, timeout_s)
            if max_count == 1 or first[0] == stop_at:
                return first
            max_count -= 1
        return first + await self._take(max_count, stop_at)

    async def read_until(self, separator: bytes, timeout_s: float, limit: int = 4096) -> bytes:
        """Bytes up to and including `separator`, at most `limit` of them, within `timeout_s`."""
        buffer = bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # Every occurrence of the separator ends with its last byte: stop there and look back.
        last = separator[-1] if separator else None
        while not buffer.endswith(separator):
            if len(buffer) >= limit:
                raise MeterError(
                    f"{self.where} sent {len(buffer)} bytes without {separator!r}; "
                    "the line is noisy or it is not the expected protocol"
                )
            remaining = max(deadline - loop.time(), 0.0)
            buffer += await self.read_some(limit - len(buffer), remaining, stop_at=last)
        return bytes(buffer)

    def _pending(self) -> bytearray:
        """The bytes that arrived but were not read yet (asyncio has no public peek)."""
        buffer: bytearray = vars(self._reader)["_buffer"]
        return buffer

    async def _take(self, max_count: int, stop_at: int | None) -> bytes:
        """Up to `max_count` already buffered bytes, through the first `stop_at`; no waiting."""
        pending = self._pending()
        count = min(len(pending), max_count)
        if stop_at is not None:
            end = pending.find(stop_at, 0, count)
            if end >= 0:
                count = end + 1
        if count == 0:
            return b""
        # StreamReader.read returns at once while its buffer holds data, and lets a paused
        # transport resume, which a direct slice of the buffer would not.
        try:
            data = await self._reader.read(count)
        except OSError as exc:
            raise self._lost(exc) from None
        self.bytes_read += len(data)
        return data

    async def read_byte(self, timeout_s: float) -> int:
        return (await self.read_exactly(1, timeout_s))[0]

    def discard_pending(self) -> int:
        """Drop whatever arrived but was not read (after an error, to resynchronise)."""
        buffer = self._pending()
        pending = len(buffer)
        buffer.clear()
        return pending

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        if self._on_close is not None:
            self._on_close()


async def open_tcp(host: str, port: int, timeout_s: float) -> ByteStream:
    where = f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except TimeoutError:
        raise MeterTimeout(f"could not connect to {where} within {timeout_s} s") from None
    except OSError as exc:
        raise MeterError(
            f"could not connect to {where}: {exc.strerror or exc}; is the meter (or its "
            "serial server) running and listening there?"
        ) from None
    return ByteStream(reader, writer, where)


async def open_serial(device: str, settings: SerialSettings) -> ByteStream:
    """Open a serial device (a real port or a pseudo-terminal) as an asyncio stream."""
    try:
        port = serial.Serial(
            device,
            baudrate=settings.baud,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            timeout=0,
        )
    except (serial.SerialException, OSError, ValueError, termios.error) as exc:
        raise MeterError(
            f"could not open serial port {device}: {exc}; check the path and permissions"
        ) from None
    return await stream_over_fd(port.fileno(), device, on_close=port.close)


async def stream_over_fd(fd: int, where: str, on_close: Any = None) -> ByteStream:
    """Wrap a character-device file descriptor (tty, pty) in a `ByteStream`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 16)
    read_file = os.fdopen(os.dup(fd), "rb", buffering=0)
    write_file = os.fdopen(os.dup(fd), "wb", buffering=0)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), read_file
    )
    write_transport, write_protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, write_file
    )
    writer = asyncio.StreamWriter(write_transport, write_protocol, reader, loop)

    def close_all() -> None:
        read_transport.close()
        if on_close is not None:
            on_close()

    return ByteStream(reader, writer, where, on_close=close_all)
