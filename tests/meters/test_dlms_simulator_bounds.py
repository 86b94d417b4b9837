"""A DLMS simulator answers every request in bounded time and memory, associated or not.

dlms-cosem's A-XDR decoders trust element counts and can run past the end of their input: a
28-byte GET with a forged selective-access descriptor once made the simulator allocate without
bound and ignore SIGTERM. The simulator now checks the association before it decodes anything,
and every request passes meterchain's bounded decoder before the library sees it.
"""

from __future__ import annotations

import asyncio

import pytest
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.security import NoSecurityAuthentication
from meter_harness import served_simulator

from meterchain.meters.dlms_codec import (
    REQUEST_TAGS,
    check_request,
    decode_wrapper_header,
    encode_wrapper,
)
from meterchain.meters.errors import FrameError
from meterchain.meters.registry import open_meter

# The frame from the review, as it went on the wire: wrapper header, then a get-request-normal
# for a profile's buffer with a range descriptor whose structure announces 2^31 - 1 elements.
REVIEW_FRAME = bytes.fromhex("0001001000010014c001c100070100630100ff02010101847fffffff")
# Two more shapes the library cannot survive: a range descriptor cut short (its decoder runs
# past the end and never stops), and a get-with-list whose second attribute carries the
# forged descriptor.
TRUNCATED_DESCRIPTOR = bytes.fromhex("c001c100030100010800ff020101020402")
FORGED_IN_A_LIST = bytes.fromhex(
    "c003c102" + "00030100010800ff0200" + "00080000010000ff020101" + "01847fffffff"
)
HOSTILE_APDUS = [REVIEW_FRAME[8:], TRUNCATED_DESCRIPTOR, FORGED_IN_A_LIST]
PUBLIC_CLIENT, MANAGEMENT = 16, 1
ANSWER_WAIT_S = 5.0


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, apdu: bytes
) -> bytes:
    writer.write(encode_wrapper(PUBLIC_CLIENT, MANAGEMENT, apdu))
    await writer.drain()
    header = decode_wrapper_header(await asyncio.wait_for(reader.readexactly(8), ANSWER_WAIT_S))
    return await asyncio.wait_for(reader.readexactly(header.length), ANSWER_WAIT_S)


async def _read_works(port: int) -> None:
    meter = open_meter(f"dlms+tcp://127.0.0.1:{port}?client=16&server=1", timeout_s=2.0)
    try:
        assert (await meter.read()).meter_id == "HOSTILE-1"
    finally:
        await meter.close()


@pytest.mark.parametrize("apdu", HOSTILE_APDUS, ids=["review", "truncated", "in-a-list"])
def test_the_library_never_sees_a_request_our_decoder_refuses(apdu: bytes) -> None:
    with pytest.raises(FrameError):
        check_request(apdu, REQUEST_TAGS)


def test_hostile_requests_without_an_association_are_refused_and_the_meter_keeps_serving() -> None:
    async def scenario(port: int) -> None:
        for apdu in HOSTILE_APDUS:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                answer = await _exchange(reader, writer, apdu)
            finally:
                writer.close()
            assert answer[0] == 0xD8, answer.hex()  # exception-response: no association
        await _read_works(port)

    with served_simulator("dlms") as simulator:
        asyncio.run(scenario(simulator.port))


def test_hostile_requests_inside_an_association_are_answered_and_the_meter_keeps_serving() -> None:
    aarq = bytes(
        DlmsConnection(authentication=NoSecurityAuthentication(), client_system_title=None)
        .get_aarq()
        .to_bytes()
    )

    async def scenario(port: int) -> None:
        for apdu in HOSTILE_APDUS:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                aare = await _exchange(reader, writer, aarq)
                assert aare[0] == 0x61
                answer = await _exchange(reader, writer, apdu)
            finally:
                writer.close()
            assert answer[0] in (0xC4, 0xD8), answer.hex()  # a get-response or an exception
        await _read_works(port)

    with served_simulator("dlms") as simulator:
        asyncio.run(scenario(simulator.port))
