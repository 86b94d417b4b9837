"""Shared by the hostile-input tests: simulators in their own process, fake meters on loopback.

A simulator under attack runs as `meterchain meter serve`, exactly as a user starts it, with its
address space capped: a request that makes it loop or allocate without bound ends that process
(and fails the test) instead of the machine's memory. On exit it must stop on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MAIN = Path(sys.executable).parent / "meterchain"
SIMULATOR_MEMORY_BYTES = 1 << 30  # far above what a simulator needs (~80 MB)
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServedSimulator:
    """A simulator process: its TCP port (0 on a serial line) or the serial path clients open."""

    process: subprocess.Popen[str]
    port: int
    device: str

    def alive(self) -> bool:
        return self.process.poll() is None


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SIMULATOR_MEMORY_BYTES, SIMULATOR_MEMORY_BYTES))


@contextlib.contextmanager
def served_simulator(protocol: str, *options: str, pty: bool = False) -> Iterator[ServedSimulator]:
    """`meterchain meter serve --protocol PROTOCOL` in a process of its own, memory capped."""
    where = ["--pty"] if pty else ["--port", "0"]
    process = subprocess.Popen(
        [
            str(MAIN),
            "meter",
            "serve",
            "--protocol",
            protocol,
            "--meter-id",
            "HOSTILE-1",
            *where,
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_cap_memory,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        if pty:
            found = re.search(r"clients open (\S+)\)", first)
            assert found, f"serve printed {first!r}"
            yield ServedSimulator(process, 0, found.group(1))
        else:
            found = re.search(r"on 127\.0\.0\.1:(\d+)", first)
            assert found, f"serve printed {first!r}"
            yield ServedSimulator(process, int(found.group(1)), "")
    finally:
        alive = process.poll() is None
        if alive:
            process.send_signal(signal.SIGTERM)
        try:
            _out, err = process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError(f"the {protocol} simulator ignored SIGTERM") from None
    assert alive, f"the {protocol} simulator died: {err[-2000:]}"
    assert process.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]


async def send_frame(port: int, frame: bytes, answer_wait_s: float = 0.0) -> bytes:
    """Connect, send `frame`, collect what comes back within `answer_wait_s`, hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        writer.write(frame)
        await writer.drain()
        if answer_wait_s > 0:
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(4096), answer_wait_s)
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return answer


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (RST), as a meter's TCP bridge does when it reboots."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_meter(script: Script) -> AsyncIterator[int]:
    """A TCP 'meter' that runs `script` for every connection; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.sleep(0)


# --- a seeded mutator: the same frames every run --------------------------------------------

INTERESTING = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x84\x7f\xff\xff\xff",  # an A-XDR length of 2^31 - 1
    b"\x82\xff\xff",
    b"\x81\x80",
    b"\x7e",  # an HDLC flag
    b"\r\n",
)


def mutate(rng: random.Random, frame: bytes, corpus: Sequence[bytes] = ()) -> bytes:
    """`frame` with one to four random edits: bit flips, new, inserted or deleted bytes, a cut,
    a length-like value, or a splice with another frame of `corpus`."""
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        operation = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if operation == 0 and data:
            data[at % len(data)] ^= 1 << rng.randrange(8)
        elif operation == 1 and data:
            data[at % len(data)] = rng.randrange(256)
        elif operation == 2:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif operation == 3 and len(data) > 1:
            del data[at : at + rng.randint(1, 8)]
        elif operation == 4 and len(data) > 1:
            del data[max(at, 1) :]
        elif operation == 5:
            data[at:at] = rng.choice(INTERESTING)
        elif operation == 6 and corpus:
            other = rng.choice(corpus)
            data = data[:at] + other[rng.randrange(len(other) + 1) :]
    return bytes(data)
