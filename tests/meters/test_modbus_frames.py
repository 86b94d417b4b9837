"""Modbus response frames: golden frames, every way a frame can be wrong, and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.meters.errors import FrameError
from meterchain.meters.modbus_frames import (
    Expected,
    check_response,
    crc16,
    describe_exception,
    expected_response,
    rtu_frame,
    tcp_frame,
)

# Read 2 input registers at 0x0048 from unit 1; the answer holds 1234.5 kWh as float32.
READ_RTU = expected_response("rtu", 1, 4, 2)
READ_TCP = expected_response("tcp", 1, 4, 2, transaction_id=7)
ANSWER_PDU = bytes.fromhex("04 04 44 9a 50 00")
ANSWER_RTU = rtu_frame(1, ANSWER_PDU)


def test_crc_matches_the_modbus_specification_example() -> None:
    # "01 03 00 00 00 0A" is sent as "01 03 00 00 00 0A C5 CD" (CRC low byte first).
    assert crc16(bytes.fromhex("01 03 00 00 00 0a")).to_bytes(2, "little") == bytes.fromhex("c5 cd")
    assert rtu_frame(1, bytes.fromhex("04 00 00 00 4c")).hex(" ") == "01 04 00 00 00 4c f1 ff"


def test_a_whole_rtu_answer_is_accepted_with_its_size() -> None:
    assert ANSWER_RTU.hex(" ") == "01 04 04 44 9a 50 00 " + ANSWER_RTU[-2:].hex(" ")
    assert check_response(ANSWER_RTU, READ_RTU) == 9


def test_a_partial_answer_asks_for_more_bytes() -> None:
    for cut in range(len(ANSWER_RTU)):
        assert check_response(ANSWER_RTU[:cut], READ_RTU) is None


def test_a_bad_crc_is_a_frame_error_naming_both_values() -> None:
    damaged = ANSWER_RTU[:-1] + bytes([ANSWER_RTU[-1] ^ 0xFF])
    with pytest.raises(FrameError, match=r"CRC mismatch: the frame says 0x.*, its bytes give"):
        check_response(damaged, READ_RTU)


def test_an_answer_from_another_unit_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="from unit 2 where unit 1 was asked"):
        check_response(rtu_frame(2, ANSWER_PDU), READ_RTU)


def test_an_answer_to_another_function_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="function code 3 where 4"):
        check_response(rtu_frame(1, bytes.fromhex("03 04 44 9a 50 00")), READ_RTU)


def test_a_wrong_byte_count_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="byte count is 6, expected 4"):
        check_response(rtu_frame(1, bytes.fromhex("04 06 44 9a 50 00 00 00")), READ_RTU)


def test_an_exception_answer_is_five_bytes_on_rtu() -> None:
    assert check_response(rtu_frame(1, bytes.fromhex("84 02")), READ_RTU) == 5


def test_a_tcp_answer_is_mbap_and_pdu() -> None:
    frame = tcp_frame(7, 1, ANSWER_PDU)
    assert frame.hex(" ") == "00 07 00 00 00 07 01 04 04 44 9a 50 00"
    assert check_response(frame, READ_TCP) == 13
    assert check_response(frame[:12], READ_TCP) is None
    assert check_response(tcp_frame(7, 1, bytes.fromhex("84 0b")), READ_TCP) == 9


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (tcp_frame(8, 1, ANSWER_PDU), "transaction 8 where 7"),
        (b"\x00\x07\x00\x01" + tcp_frame(7, 1, ANSWER_PDU)[4:], "protocol id 1"),
        (tcp_frame(7, 9, ANSWER_PDU), "from unit 9"),
        (tcp_frame(7, 1, ANSWER_PDU)[:5] + b"\x09" + tcp_frame(7, 1, ANSWER_PDU)[6:], "MBAP"),
    ],
)
def test_a_wrong_tcp_header_is_a_frame_error(frame: bytes, complaint: str) -> None:
    with pytest.raises(FrameError, match=complaint):
        check_response(frame, READ_TCP)


def test_exception_codes_are_explained() -> None:
    assert describe_exception(2).startswith("2 (illegal data address: ")
    assert "gateway" in describe_exception(11)
    assert describe_exception(99).startswith("99 (unknown exception")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([READ_RTU, READ_TCP]))
def test_random_bytes_are_accepted_awaited_or_a_frame_error(
    data: bytes, expected: Expected
) -> None:
    try:
        size = check_response(data, expected)
    except FrameError:
        return
    assert size is None or 0 < size <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"\x01\x04", b"\x01\x84", b"\x00\x07\x00\x00"]), st.binary(max_size=40))
def test_plausible_starts_with_random_tails_never_crash(start: bytes, tail: bytes) -> None:
    expected = READ_RTU if start.startswith(b"\x01") else READ_TCP
    try:
        size = check_response(start + tail, expected)
    except FrameError:
        return
    assert size is None or size <= len(start + tail)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(ANSWER_RTU) - 1), st.integers(1, 255))
def test_a_damaged_rtu_frame_is_never_accepted(position: int, flip: int) -> None:
    damaged = bytearray(ANSWER_RTU)
    damaged[position] ^= flip
    with contextlib.suppress(FrameError):
        assert check_response(bytes(damaged), READ_RTU) is None
