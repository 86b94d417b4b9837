"""ByteStream's block reads: `read_some` and `read_until` take what has arrived in one piece,
stop exactly at the message's end, and count every byte they consume."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.meters.errors import MeterError, MeterTimeout
from meterchain.meters.transport import ByteStream, open_tcp


class Pair:
    """Two ends of a real loopback TCP connection: `peer` writes, `stream` reads."""

    stream: ByteStream
    peer: ByteStream


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    accepted: asyncio.Future[ByteStream] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(ByteStream(reader, writer, "peer"))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ends = Pair()
    ends.stream = await open_tcp("127.0.0.1", port, 1.0)
    ends.peer = await asyncio.wait_for(accepted, 1.0)
    yield ends
    await ends.stream.close()
    await ends.peer.close()
    server.close()
    await server.wait_closed()


async def arrived(stream: ByteStream, count: int) -> None:
    """Wait until `count` unread bytes sit in the stream's buffer."""
    for _ in range(200):
        if len(vars(stream._reader)["_buffer"]) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{count} bytes did not arrive")


async def test_read_some_takes_everything_that_arrived_in_one_piece(pair: Pair) -> None:
    await pair.peer.write(b"hello world")
    await arrived(pair.stream, 11)
    assert await pair.stream.read_some(100, timeout_s=1) == b"hello world"
    assert pair.stream.bytes_read == 11


async def test_read_some_stops_after_the_stop_byte_and_leaves_the_rest(pair: Pair) -> None:
    await pair.peer.write(b"one\x03Btwo")
    await arrived(pair.stream, 8)
    assert await pair.stream.read_some(100, timeout_s=1, stop_at=0x03) == b"one\x03"
    assert pair.stream.bytes_read == 4
    assert await pair.stream.read_some(100, timeout_s=1) == b"Btwo"
    assert pair.stream.bytes_read == 8


async def test_read_some_takes_no_more_than_asked(pair: Pair) -> None:
    await pair.peer.write(b"abcdef")
    await arrived(pair.stream, 6)
    assert await pair.stream.read_some(4, timeout_s=1) == b"abcd"
    assert await pair.stream.read_exactly(2, timeout_s=1) == b"ef"


async def test_read_some_on_a_silent_line_is_a_timeout(pair: Pair) -> None:
    with pytest.raises(
        MeterTimeout, match=r"no complete answer from 127\.0\.0\.1:\d+ within 0\.1 s"
    ):
        await pair.stream.read_some(10, timeout_s=0.1)


async def test_read_until_finds_a_separator_split_across_packets(pair: Pair) -> None:
    await pair.peer.write(b"a\nb\r")
    await arrived(pair.stream, 4)
    reading = asyncio.ensure_future(pair.stream.read_until(b"\r\n", timeout_s=1))
    await asyncio.sleep(0.02)
    assert not reading.done()  # a lone \n and a lone \r are not the separator
    await pair.peer.write(b"\nnext")
    assert await reading == b"a\nb\r\n"
    assert pair.stream.bytes_read == 5
    assert await pair.stream.read_exactly(4, timeout_s=1) == b"next"


async def test_read_until_refuses_more_than_the_limit_naming_it(pair: Pair) -> None:
    await pair.peer.write(b"0123456789")
    with pytest.raises(MeterError, match=r"sent 8 bytes without b'\\n'; the line is noisy"):
        await pair.stream.read_until(b"\n", timeout_s=1, limit=8)
    assert pair.stream.bytes_read == 8


async def test_read_until_without_the_separator_is_a_timeout(pair: Pair) -> None:
    await pair.peer.write(b"abc")
    with pytest.raises(MeterTimeout):
        await pair.stream.read_until(b"\n", timeout_s=0.1)
    assert pair.stream.bytes_read == 3  # consumed and counted, as byte by byte it was


async def test_read_until_on_a_closed_connection_says_so(pair: Pair) -> None:
    await pair.peer.write(b"ab")
    await pair.peer.close()
    with pytest.raises(MeterError, match="closed the connection"):
        await pair.stream.read_until(b"\n", timeout_s=1)


def read_until_byte_by_byte(data: bytes, separator: bytes, limit: int) -> bytes | str:
    """What `read_until` returns, by its definition: one byte at a time until the separator."""
    buffer = bytearray()
    for byte in data:
        if buffer.endswith(separator):
            break
        if len(buffer) >= limit:
            return "limit"
        buffer.append(byte)
    if buffer.endswith(separator):
        return bytes(buffer)
    return "limit" if len(buffer) >= limit else "closed"


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b"b", b"x", b"\r", b"\n", b"\x03"]), max_size=60).map(
        b"".join
    ),
    separator=st.sampled_from([b"\n", b"\r\n", b"\x03", b"ab", b"aab"]),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6),
    limit=st.integers(min_value=1, max_value=70),
)
def test_read_until_in_pieces_equals_reading_byte_by_byte(
    data: bytes, separator: bytes, cuts: list[int], limit: int
) -> None:
    """However the bytes are cut into packets, the result, the error and the count are the same."""
    expected = read_until_byte_by_byte(data, separator, limit)
    bounds = sorted({0, len(data), *(min(cut, len(data)) for cut in cuts)})

    async def scenario() -> tuple[bytes | str, int, bytes]:
        reader = asyncio.StreamReader()
        stream = ByteStream(reader, None, "memory")  # type: ignore[arg-type]  # reads only

        async def feed() -> None:
            for start, end in itertools.pairwise(bounds):
                reader.feed_data(data[start:end])
                await asyncio.sleep(0)
            reader.feed_eof()

        feeder = asyncio.ensure_future(feed())
        try:
            result: bytes | str = await stream.read_until(separator, timeout_s=1, limit=limit)
        except MeterError as exc:
            result = "limit" if "without" in str(exc) else "closed"
        await feeder
        return result, stream.bytes_read, await reader.read()

    result, counted, rest = asyncio.run(scenario())
    assert result == expected
    if isinstance(expected, bytes):
        assert (counted, rest) == (len(expected), data[len(expected) :])
    elif expected == "limit":
        assert (counted, rest) == (limit, data[limit:])
    else:
        assert (counted, rest) == (len(data), b"")
