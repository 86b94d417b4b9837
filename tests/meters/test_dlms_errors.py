"""Every way a DLMS meter on TCP can fail ends in a typed error that says what went wrong.

The misbehaving meters are real TCP servers on loopback that answer with silence, noise, cut
frames or protocol refusals.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from meterchain.clock import ManualClock
from meterchain.meters.dlms import DlmsMeter
from meterchain.meters.dlms_codec import encode_wrapper
from meterchain.meters.dlms_link import read_wrapper_frame
from meterchain.meters.errors import FrameError, MeterError, MeterRejected, MeterTimeout
from meterchain.meters.sim import dlms_server
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.server import RunningServer, start_tcp_server
from meterchain.meters.transport import ByteStream
from meterchain.meters.url import parse_meter_url

Handler = Callable[[ByteStream], Awaitable[None]]
EXCEPTION_RESPONSE = bytes.fromhex("d80101")  # service-not-allowed, operation-not-possible


@pytest.fixture
async def fake_meter() -> AsyncIterator[Callable[[Handler], Awaitable[RunningServer]]]:
    servers: list[RunningServer] = []

    async def start(handler: Handler) -> RunningServer:
        server = await start_tcp_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def meter_for(server: RunningServer, retries: int = 1) -> DlmsMeter:
    url = parse_meter_url(f"dlms+tcp://127.0.0.1:{server.port}?client=16&server=1")
    return DlmsMeter(url, timeout_s=0.2, retries=retries)


def answering(answer: bytes) -> Handler:
    """A meter that reads one request and sends `answer`, then waits for the client to leave."""

    async def handler(stream: ByteStream) -> None:
        await read_wrapper_frame(stream, 5.0)
        await stream.write(answer)
        await asyncio.sleep(5)

    return handler


async def test_a_silent_meter_times_out_naming_url_and_tries(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]],
) -> None:
    async def silent(stream: ByteStream) -> None:
        await asyncio.sleep(5)

    server = await fake_meter(silent)
    meter = meter_for(server, retries=2)
    with pytest.raises(
        MeterTimeout, match=r"no answer to read from dlms\+tcp://.* after 2 tries \(0\.2 s each\)"
    ):
        await meter.read()
    await meter.close()


async def test_noise_instead_of_a_wrapper_frame_is_a_frame_error(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]],
) -> None:
    server = await fake_meter(answering(b"HTTP/1.1 400 Bad Request\r\n\r\n"))
    with pytest.raises(FrameError, match="wrapper version 18516"):
        await meter_for(server).read()


async def test_a_frame_cut_short_by_the_meter_is_a_frame_error(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]],
) -> None:
    async def truncating(stream: ByteStream) -> None:
        await read_wrapper_frame(stream, 5.0)
        await stream.write(encode_wrapper(1, 16, bytes(40))[:13])  # header says 40, 5 follow

    server = await fake_meter(truncating)
    with pytest.raises(FrameError, match=r"truncated DLMS wrapper frame.*announced 40 bytes"):
        await meter_for(server).read()


async def test_a_frame_that_stops_midway_is_a_frame_error(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]],
) -> None:
    server = await fake_meter(answering(encode_wrapper(1, 16, bytes(40))[:13]))
    with pytest.raises(FrameError, match=r"did not all arrive within 0\.2 s"):
        await meter_for(server).read()


async def test_an_exception_response_is_a_rejection(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]],
) -> None:
    server = await fake_meter(answering(encode_wrapper(1, 16, EXCEPTION_RESPONSE)))
    with pytest.raises(MeterRejected, match=r"exception-response.*service-not-allowed"):
        await meter_for(server).read()


async def test_an_apdu_that_is_no_answer_is_a_frame_error(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]],
) -> None:
    server = await fake_meter(answering(encode_wrapper(1, 16, b"\x99\x00\x01")))
    with pytest.raises(FrameError, match="unexpected DLMS APDU tag 0x99"):
        await meter_for(server).read()


async def test_a_malformed_aare_is_a_frame_error(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]],
) -> None:
    server = await fake_meter(answering(encode_wrapper(1, 16, bytes.fromhex("6105a1030201"))))
    with pytest.raises(FrameError, match="malformed DLMS AARE"):
        await meter_for(server).read()


async def test_an_answer_for_another_client_is_a_frame_error(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]],
) -> None:
    server = await fake_meter(answering(encode_wrapper(1, 99, EXCEPTION_RESPONSE)))
    with pytest.raises(FrameError, match="wPort 1 to wPort 99; expected from 1 to 16"):
        await meter_for(server).read()


async def test_nobody_listening_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    meter = DlmsMeter(parse_meter_url(f"dlms+tcp://127.0.0.1:{port}"), timeout_s=0.2, retries=1)
    with pytest.raises(MeterError, match=r"could not connect.*is the meter"):
        await meter.read()


async def test_one_corrupt_answer_is_retried_on_a_new_connection(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]], clock: ManualClock
) -> None:
    objects = dlms_server.SimulatedObjects(
        PhysicalMeter("ELT-0001", clock, load_w=flat_load_w(1.0))
    )
    honest = dlms_server.wrapper_handler(objects, b"12345678")
    connections = 0

    async def flaky(stream: ByteStream) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await answering(b"\x00\x01\x00\x01\x00\x10\x00\x02\xff\xff")(stream)
        else:
            await honest(stream)

    server = await fake_meter(flaky)
    meter = meter_for(server, retries=2)
    assert (await meter.read()).meter_id == "ELT-0001"
    assert connections == 2
    await meter.close()


async def test_after_an_exception_response_the_next_read_associates_afresh(
    fake_meter: Callable[[Handler], Awaitable[RunningServer]], clock: ManualClock
) -> None:
    objects = dlms_server.SimulatedObjects(
        PhysicalMeter("ELT-0001", clock, load_w=flat_load_w(1.0))
    )
    refused = False

    async def refuses_the_first_get(stream: ByteStream) -> None:
        nonlocal refused
        session = dlms_server.CosemServer(objects, b"12345678", 16)
        while True:
            header, apdu = await read_wrapper_frame(stream, 5.0)
            answer = session.handle(apdu)
            if apdu[0] == 0xC0 and not refused:
                refused, answer = True, EXCEPTION_RESPONSE
            await stream.write(encode_wrapper(1, header.source_wport, answer))

    server = await fake_meter(refuses_the_first_get)
    meter = meter_for(server)
    with pytest.raises(MeterRejected, match="exception-response"):
        await meter.read()
    assert (await meter.read()).meter_id == "ELT-0001"
    await meter.close()
