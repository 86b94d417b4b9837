"""Serving a stream protocol's handler on loopback TCP or on a serial device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from meterchain.meters.errors import MeterError
from meterchain.meters.transport import ByteStream, SerialSettings, open_serial

log = logging.getLogger(__name__)

StreamHandler = Callable[[ByteStream], Awaitable[None]]


class RunningServer:
    """A simulator that is serving; `close()` stops it and waits for its connections."""

    def __init__(self, where: str, port: int, stopper: Callable[[], Awaitable[None]]) -> None:
        self.where = where
        self.port = port
        self._stopper = stopper

    async def close(self) -> None:
        await self._stopper()


async def _run_handler(handler: StreamHandler, stream: ByteStream) -> None:
    try:
        await handler(stream)
    except (MeterError, ConnectionError):
        log.debug("connection on %s ended", stream.where)
    finally:
        await stream.close()


async def start_tcp_server(handler: StreamHandler, host: str, port: int) -> RunningServer:
    """Serve `handler` to every TCP client that connects to host:port (port 0 picks one)."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await _run_handler(handler, ByteStream(reader, writer, f"client {peer}"))
        except asyncio.CancelledError:
            pass  # stop() ends open connections; Python 3.11 logs a cancelled handler as an error
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, host, port)
    bound_port = int(server.sockets[0].getsockname()[1])

    async def stop() -> None:
        server.close()
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)

    return RunningServer(f"{host}:{bound_port}", bound_port, stop)


async def start_serial_server(
    handler: StreamHandler, device: str, settings: SerialSettings | None = None
) -> RunningServer:
    """Serve `handler` on a serial device, one conversation after another."""
    stream = await open_serial(device, settings or SerialSettings())

    async def serve_forever() -> None:
        while True:
            try:
                await handler(stream)
            except MeterError as exc:  # bad input: drop it and listen for the next request
                log.debug("serial simulator on %s: %s", device, exc)
                stream.discard_pending()

    task = asyncio.create_task(serve_forever())

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await stream.close()

    return RunningServer(device, 0, stop)
