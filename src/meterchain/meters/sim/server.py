"""Serving a stream protocol's handler on loopback TCP or on a serial device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from meterchain.meters.errors import MeterError
from meterchain.meters.transport import ByteStream, SerialSettings, open_serial

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 2.0
CANCEL_POLL_S = 0.05

StreamHandler = Callable[[ByteStream], Awaitable[None]]


class RunningServer:
    """A simulator that is serving; `close()` stops it and waits for its connections."""

    def __init__(self, where: str, port: int, stopper: Callable[[], Awaitable[None]]) -> None:
        self.where = where
        self.port = port
        self._stopper = stopper

    async def close(self) -> None:
        await self._stopper()


async def cancel_until_done(tasks: set[asyncio.Task[None]], timeout_s: float) -> None:
    """Cancel `tasks` and wait for them, cancelling again while any is still running.

    Python 3.11's `asyncio.wait_for` can swallow a cancellation that arrives just as the
    awaited read completes; a handler would then read on and a single cancel() never stop it.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < end:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=CANCEL_POLL_S)
    if pending:
        log.warning("%d simulator connection(s) did not stop within %s s", len(pending), timeout_s)


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
        await cancel_until_done(set(tasks), STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT_S)

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
        await cancel_until_done({task}, STOP_TIMEOUT_S)
        if task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()
        await stream.close()

    return RunningServer(device, 0, stop)
