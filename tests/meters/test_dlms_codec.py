"""The pure DLMS/COSEM codecs: HDLC frames, the TCP wrapper, A-XDR data, date-time, APDU checks.

Golden frames: the SNRM is the standard's example (client 16 → server 1). The UA and the AARE
I-frame are a meter's answers (logical device 1, physical address 17) as quoted in dlms-cosem's
test suite (tests/test_hdlc/test_hdlc.py, "from device"), so our decoder is checked against CRCs
that another party computed, not only against our own encoder.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.meters import dlms_hdlc
from meterchain.meters.dlms_codec import (
    RESPONSE_TAGS,
    AccessError,
    decode_apdu,
    decode_data,
    decode_datetime,
    decode_wrapper_header,
    encode_datetime,
    encode_wrapper,
    get_normal_result,
    get_with_list_results,
    obis_bytes,
    result_name,
    scaled,
)
from meterchain.meters.dlms_hdlc import FrameKind, decode_frame
from meterchain.meters.errors import FrameError, MeterError
from meterchain.meters.sim.dlms_server import CosemServer, HdlcServerLink, SimulatedObjects
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w

METER_UA = bytes.fromhex("7EA01F21022373E6C781801205019A06019A070400000001080400000001CCA27E")
METER_AARE = bytes.fromhex(
    "7EA0382102233034E7E6E7006129A109060760857405080101A203020100A305A103020100BE10040E08"
    "00065F1F0400001E1D04C80007B86A7E"
)


def valid_frames() -> list[bytes]:
    server, client = dlms_hdlc.server_address(1), dlms_hdlc.client_address(16)
    return [
        dlms_hdlc.encode_snrm(1, 16),
        dlms_hdlc.encode_ua(16, 1),
        dlms_hdlc.encode_disc(1, 16),
        dlms_hdlc.encode_dm(16, 1),
        dlms_hdlc.encode_rr(server, client, 5),
        dlms_hdlc.encode_i(server, client, dlms_hdlc.LLC_REQUEST + bytes(range(60)), 3, 4, True),
        METER_UA,
        METER_AARE,
    ]


# --- HDLC -----------------------------------------------------------------------------------


def test_snrm_is_the_frame_of_the_standard() -> None:
    assert dlms_hdlc.encode_snrm(1, 16) == bytes.fromhex("7EA0070321930F017E")


def test_a_meters_ua_decodes_with_its_link_parameters() -> None:
    frame = decode_frame(METER_UA)
    assert (frame.kind, frame.destination, frame.source) == (FrameKind.UA, 16, 1)
    parameters = dlms_hdlc.decode_link_parameters(frame.information)
    assert (parameters.max_info_transmit, parameters.max_info_receive) == (154, 154)
    assert parameters.window_receive == 1


def test_a_meters_aare_information_frame_decodes() -> None:
    frame = decode_frame(METER_AARE)
    assert frame.kind is FrameKind.I
    assert (frame.send_sequence, frame.receive_sequence, frame.segmented) == (0, 1, False)
    assert frame.information.startswith(dlms_hdlc.LLC_RESPONSE)


def test_every_frame_we_build_decodes_to_what_was_built() -> None:
    frame = decode_frame(valid_frames()[5])
    assert frame.kind is FrameKind.I and frame.segmented
    assert (frame.send_sequence, frame.receive_sequence) == (3, 4)
    assert frame.information == dlms_hdlc.LLC_REQUEST + bytes(range(60))
    assert decode_frame(dlms_hdlc.encode_rr(*_addresses(), 5)).receive_sequence == 5
    assert decode_frame(dlms_hdlc.encode_dm(16, 1)).kind is FrameKind.DM


def _addresses() -> tuple[object, object]:
    return dlms_hdlc.server_address(1), dlms_hdlc.client_address(16)


def test_corrupt_information_is_an_fcs_error() -> None:
    raw = bytearray(METER_AARE)
    raw[20] ^= 0x01
    with pytest.raises(FrameError, match="FCS mismatch"):
        decode_frame(bytes(raw))


def test_corrupt_header_with_a_recomputed_fcs_is_an_hcs_error() -> None:
    raw = bytearray(METER_AARE)
    raw[7] ^= 0x01  # the first HCS byte
    raw[-3:-1] = dlms_hdlc.crc16(bytes(raw[1:-3]))
    with pytest.raises(FrameError, match="HCS mismatch"):
        decode_frame(bytes(raw))


def test_truncated_frame_says_so() -> None:
    with pytest.raises(FrameError, match="length field says 58 bytes but the frame has 30"):
        decode_frame(METER_AARE[:29] + b"\x7e")
    with pytest.raises(FrameError, match="truncated"):
        decode_frame(b"\x7e\xa0\x07\x7e")


def test_frame_without_flags_is_refused() -> None:
    with pytest.raises(FrameError, match="flag 7E"):
        decode_frame(METER_UA[1:] + b"\x00")


def test_frame_of_another_format_type_is_refused() -> None:
    with pytest.raises(FrameError, match="not frame format type 3"):
        dlms_hdlc.frame_length(b"\x50\x07")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_frame_decoder(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(raw)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(valid_frames()), st.data())
def test_any_single_bit_flip_of_a_valid_frame_is_detected(raw: bytes, data: st.DataObject) -> None:
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        decode_frame(bytes(flipped))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(valid_frames()),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8),
)
def test_mutated_frames_decode_or_raise_frame_error(
    raw: bytes, edits: list[tuple[int, int]]
) -> None:
    mutated = bytearray(raw)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    with contextlib.suppress(FrameError):
        decode_frame(bytes(mutated))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_link_parameters_never_crash(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        dlms_hdlc.decode_link_parameters(raw)


# --- TCP wrapper ----------------------------------------------------------------------------


def test_wrapper_frames_carry_version_ports_and_length() -> None:
    raw = encode_wrapper(16, 1, b"\xc0\x01")
    assert raw == bytes.fromhex("0001001000010002c001")
    header = decode_wrapper_header(raw[:8])
    assert (header.source_wport, header.destination_wport, header.length) == (16, 1, 2)


def test_wrapper_of_another_protocol_is_refused() -> None:
    with pytest.raises(FrameError, match="wrapper version 18516"):
        decode_wrapper_header(b"HTTP/1.1")


def test_wrapper_announcing_nothing_or_too_much_is_refused() -> None:
    with pytest.raises(FrameError, match="0 bytes"):
        decode_wrapper_header(bytes.fromhex("0001001000010000"))
    with pytest.raises(FrameError, match="2000 bytes"):
        decode_wrapper_header(bytes.fromhex("00010010000107d0"), max_length=1024)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=8, max_size=8))
def test_random_wrapper_headers_decode_or_raise_frame_error(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_wrapper_header(raw)


# --- A-XDR data and date-time ----------------------------------------------------------------


def test_register_values_and_scaler_unit_decode() -> None:
    assert decode_data(bytes.fromhex("06000004d2")) == 1234
    assert decode_data(bytes.fromhex("05fffffc18")) == -1000
    assert decode_data(bytes.fromhex("02020ffe161e")) == [-2, 30]
    assert decode_data(bytes.fromhex("0301")) is True
    assert scaled(2301, -1, "voltage") == pytest.approx(230.1)


def test_long_octet_strings_use_the_multi_byte_length() -> None:
    name = b"x" * 200
    assert decode_data(b"\x09\x81\xc8" + name) == name


def test_forged_element_count_fails_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(FrameError, match="announces 4294967295 elements"):
        decode_data(bytes.fromhex("0184ffffffff00"))
    assert time.perf_counter() - started < 0.1


def test_trailing_bytes_after_a_value_are_refused() -> None:
    with pytest.raises(FrameError, match="1 bytes after"):
        decode_data(bytes.fromhex("110500"))


def test_date_time_round_trips_in_utc() -> None:
    moment = datetime(2026, 11, 24, 15, 0, 7, 250_000, tzinfo=UTC)
    raw = encode_datetime(moment)
    assert raw.hex() == "07ea0b18020f000719000000"  # Tuesday, deviation 0, status OK
    assert decode_datetime(raw) == moment


def test_date_time_with_a_deviation_is_converted_to_utc() -> None:
    local = bytes.fromhex("07ea0b18020c0000ff") + (180).to_bytes(2, "big", signed=True) + b"\x00"
    # 12:00 local, deviation +180 min (local → UTC), i.e. UTC−3 as in Fortaleza
    assert decode_datetime(local) == datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    unspecified = bytes.fromhex("07ea0b18020c0000ff8000ff")
    assert decode_datetime(unspecified) - datetime(2026, 11, 24, 12, tzinfo=UTC) == timedelta(0)


def test_impossible_date_time_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="not a valid date-time"):
        decode_datetime(bytes.fromhex("07ea0d200200000000000000"))  # month 13, day 32


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_random_data_decodes_or_raises_frame_error(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_data(raw)


# --- APDUs ----------------------------------------------------------------------------------


def test_result_names_are_the_standards() -> None:
    assert result_name(4) == "object-undefined"
    assert result_name(3) == "read-write-denied"
    assert result_name(77) == "result 77"


def test_get_results_carry_values_and_access_errors() -> None:
    assert get_with_list_results(bytes.fromhex("c403c1020006000004d20104")) == [
        1234,
        AccessError(4),
    ]
    assert get_normal_result(bytes.fromhex("c401c1000f05")) == 5
    assert get_normal_result(bytes.fromhex("c401c10104")) == AccessError(4)


def test_forged_list_response_does_not_reach_the_library() -> None:
    started = time.perf_counter()
    with pytest.raises(FrameError):
        decode_apdu(bytes.fromhex("c403c1010184ffffffff"), RESPONSE_TAGS)
    assert time.perf_counter() - started < 0.1


def test_unexpected_apdu_is_named() -> None:
    with pytest.raises(FrameError, match="unexpected DLMS APDU tag 0x60"):
        decode_apdu(bytes.fromhex("6000"), RESPONSE_TAGS)


def test_obis_codes_parse_in_the_usual_spellings() -> None:
    assert obis_bytes("1.0.1.8.0.255") == obis_bytes("1-0:1.8.0*255") == bytes([1, 0, 1, 8, 0, 255])
    with pytest.raises(ValueError, match="six numbers"):
        obis_bytes("1.8.0")


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=120),
        st.sampled_from(list(RESPONSE_TAGS)).flatmap(
            lambda tag: st.binary(max_size=120).map(lambda rest: bytes([tag]) + rest)
        ),
    )
)
def test_random_answers_raise_only_frame_errors(raw: bytes) -> None:
    for parse in (
        lambda: decode_apdu(raw, RESPONSE_TAGS),
        lambda: get_with_list_results(raw),
        lambda: get_normal_result(raw),
    ):
        with contextlib.suppress(FrameError):
            parse()


# --- the simulator's side never crashes on bad input -----------------------------------------


def _objects() -> SimulatedObjects:
    from meterchain.clock import ManualClock

    clock = ManualClock(datetime(2026, 11, 24, 15, tzinfo=UTC))
    return SimulatedObjects(PhysicalMeter("ELT-0001", clock, load_w=flat_load_w(500.0)))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_the_simulator_answers_any_apdu_with_an_apdu(raw: bytes) -> None:
    answer = CosemServer(_objects(), b"12345678", 16).handle(raw)
    assert isinstance(answer, bytes) and answer


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(valid_frames()), max_size=6), st.binary(max_size=60))
def test_the_simulators_hdlc_link_survives_any_frame_sequence(
    frames: list[bytes], payload: bytes
) -> None:
    link = HdlcServerLink(_objects(), b"12345678")
    server, client = _addresses()
    frames = [*frames, dlms_hdlc.encode_i(server, client, payload, 0, 0, False)]
    for raw in frames:
        try:
            for answer in link.on_frame(decode_frame(raw)):
                decode_frame(answer)
        except MeterError as exc:  # only our own answers are decoded here: they must be valid
            pytest.fail(f"simulator produced an invalid frame: {exc}")


def _valid_requests() -> list[bytes]:
    from dlms_cosem.connection import DlmsConnection
    from dlms_cosem.security import LowLevelSecurityAuthentication

    connection = DlmsConnection(
        authentication=LowLevelSecurityAuthentication(secret=b"12345678"), client_system_title=None
    )
    return [
        bytes(connection.get_aarq().to_bytes()),
        bytes.fromhex("c003c10200030100010800ff020000030100010800ff0200"),  # get-with-list
        bytes.fromhex("c301c00046000060030aff01010f00"),  # remote_disconnect
        bytes.fromhex("6203800100"),
    ]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(_valid_requests()),
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_the_simulator_answers_mutated_requests_with_an_apdu(
    raw: bytes, edits: list[tuple[int, int]]
) -> None:
    mutated = bytearray(raw)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    server = CosemServer(_objects(), b"12345678", 17)
    assert server.handle(bytes(mutated))
    assert server.handle(raw)  # and it still answers the intact request afterwards
