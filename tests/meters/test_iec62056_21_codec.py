"""The IEC 62056-21 codec: golden frames, what the readout means, and fuzzing every decoder."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.meters.errors import FrameError, MeterError
from meterchain.meters.iec62056_21_codec import (
    ETX,
    STX,
    CommandMessage,
    Control,
    DataMessage,
    DataSet,
    Identification,
    OptionSelect,
    Readout,
    SignOn,
    bcc,
    decode_command,
    decode_data_line,
    decode_data_message,
    decode_identification,
    decode_option_select,
    decode_programming_reply,
    decode_readout,
    decode_sign_on,
    encode_readout,
    obis_key,
    readout_to_reading,
)
from meterchain.model import RelayState

READ_TIME = datetime(2026, 11, 24, 15, 0, 7, tzinfo=UTC)

# A readout as a meter of this kind sends it, written out by hand; the last byte is its BCC.
GOLDEN_READOUT = (
    b"\x02C.1.0(12345678)\r\n1.8.0(001234.567*kWh)\r\n!\r\n\x03" + bytes([0x36])  # BCC '6'
)

FULL_READOUT = [
    DataSet("0.0.0", "30010001"),
    DataSet("C.1.0", "30010001"),
    DataSet("0.9.1", "150000"),
    DataSet("0.9.2", "261124"),
    DataSet("1.8.0", "001234.567", "kWh"),
    DataSet("2.8.0", "000012.345", "kWh"),
    DataSet("1.7.0", "01.500", "kW"),
    DataSet("2.7.0", "00.000", "kW"),
    DataSet("32.7.0", "230.1", "V"),
    DataSet("31.7.0", "006.52", "A"),
    DataSet("96.3.10", "1"),
]


def hand_bcc(frame_without_bcc: bytes) -> int:
    """XOR of everything after the opening SOH/STX, written independently of the codec."""
    check = 0
    for byte in frame_without_bcc[1:]:
        check ^= byte
    return check


def test_break_message_is_the_well_known_soh_b0_etx_q() -> None:
    assert CommandMessage("B", "0").encode() == b"\x01B0\x03q"


def test_password_message_is_the_well_known_frame_ending_in_a() -> None:
    message = CommandMessage("P", "1", (DataSet("", "00000000"),))
    assert message.encode() == b"\x01P1\x02(00000000)\x03a"
    assert decode_command(b"\x01P1\x02(00000000)\x03a") == message


def test_golden_readout_has_the_bcc_computed_by_hand() -> None:
    assert GOLDEN_READOUT[-1] == hand_bcc(GOLDEN_READOUT[:-1]) == bcc(GOLDEN_READOUT[1:-1])
    assert encode_readout(
        [DataSet("C.1.0", "12345678"), DataSet("1.8.0", "001234.567", "kWh")]
    ) == (GOLDEN_READOUT)


def test_golden_readout_decodes_to_its_data_sets() -> None:
    assert decode_readout(GOLDEN_READOUT).data_sets == (
        DataSet("C.1.0", "12345678"),
        DataSet("1.8.0", "001234.567", "kWh"),
    )


def test_sign_on_carries_an_optional_device_address() -> None:
    assert SignOn().encode() == b"/?!\r\n"
    assert SignOn("12345678").encode() == b"/?12345678!\r\n"
    assert decode_sign_on(b"/?12345678!\r\n") == SignOn("12345678")


def test_identification_gives_manufacturer_baud_rate_and_ident() -> None:
    ident = decode_identification(b"/LGZ5ZMD3104407.B32\r\n")
    assert (ident.manufacturer, ident.baud_rate, ident.ident) == ("LGZ", 9600, "ZMD3104407.B32")
    assert not ident.short_reaction_time


def test_identification_with_enhanced_capability_and_short_reaction_time() -> None:
    ident = decode_identification(b"/ISk5\\2MT382-1000\r\n")
    assert (ident.enhanced, ident.ident, ident.short_reaction_time) == ("2", "MT382-1000", True)
    assert ident.encode() == b"/ISk5\\2MT382-1000\r\n"


def test_a_mode_b_meter_offers_no_mode_c_baud_rate() -> None:
    assert decode_identification(b"/ABCEmeter\r\n").baud_rate is None


def test_option_select_for_readout_at_9600_baud() -> None:
    assert OptionSelect("5", "0").encode() == b"\x06050\r\n"
    assert decode_option_select(b"\x06051\r\n") == OptionSelect("5", "1", "0")


@pytest.mark.parametrize(
    ("line", "sets"),
    [
        ("1.8.0(001234.567*kWh)", [DataSet("1.8.0", "001234.567", "kWh")]),
        ("96.3.10(1)", [DataSet("96.3.10", "1")]),
        ("(ER01)", [DataSet("", "ER01")]),
        (
            "0.9.1(15:00:00)0.9.2(26-11-24)",
            [DataSet("0.9.1", "15:00:00"), DataSet("0.9.2", "26-11-24")],
        ),
        ("P.01(1)(2)", [DataSet("P.01", "1"), DataSet("", "2")]),
    ],
)
def test_data_lines_split_into_data_sets(line: str, sets: list[DataSet]) -> None:
    assert decode_data_line(line) == sets


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("1.8.0", "1.8.0"),
        ("1-0:1.8.0*255", "1.8.0"),
        ("0-0:96.3.10", "96.3.10"),
        ("C.1.0", "C.1.0"),
        ("F.F", "F.F"),
        ("1.8.0*01", None),  # the value at the end of billing period 1, not the current one
        ("1.8.0&02", None),
        ("hello", None),
    ],
)
def test_obis_keys_name_current_values_only(address: str, key: str | None) -> None:
    assert obis_key(address) == key


def test_readout_means_a_reading() -> None:
    reading = readout_to_reading(Readout(tuple(FULL_READOUT)), READ_TIME)
    assert reading.meter_id == "30010001"
    assert reading.timestamp == datetime(2026, 11, 24, 15, 0, 0, tzinfo=UTC)
    assert (reading.import_wh, reading.export_wh) == (1_234_567.0, 12_345.0)
    assert (reading.power_w, reading.voltage_v, reading.current_a) == (1500.0, 230.1, 6.52)
    assert reading.relay is RelayState.ON


def test_signed_sum_power_and_other_units_are_understood() -> None:
    sets = (
        DataSet("1-0:0.0.0*255", "M-1"),
        DataSet("1.8.0", "1234567", "Wh"),
        DataSet("2.8.0", "0.5", "MWh"),
        DataSet("16.7.0", "-2.250", "kW"),
        DataSet("32.7.0", "0.2301", "kV"),
        DataSet("31.7.0", "9780", "mA"),
        DataSet("96.3.10", "0"),
    )
    reading = readout_to_reading(Readout(sets), READ_TIME)
    assert (reading.meter_id, reading.import_wh, reading.export_wh) == ("M-1", 1_234_567.0, 5e5)
    assert (reading.power_w, reading.voltage_v) == (-2250.0, pytest.approx(230.1))
    assert reading.current_a == pytest.approx(9.78)
    assert reading.relay is RelayState.OFF
    assert reading.timestamp == READ_TIME  # no clock lines: the time of the read


def test_a_meter_clock_in_local_time_is_converted_to_utc() -> None:
    reading = readout_to_reading(Readout(tuple(FULL_READOUT)), READ_TIME, utc_offset_min=-180)
    assert reading.timestamp == datetime(2026, 11, 24, 18, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("drop", "complaint"),
    [
        ({"0.0.0", "C.1.0"}, "no 0.0.0 or C.1.0 or 96.1.0 line"),
        ({"1.8.0"}, "no 1.8.0 line"),
        ({"1.7.0"}, "no 16.7.0 or 1.7.0 line"),
        ({"32.7.0"}, "no 32.7.0 or 12.7.0 line"),
    ],
)
def test_a_readout_missing_a_register_names_it(drop: set[str], complaint: str) -> None:
    sets = tuple(s for s in FULL_READOUT if s.address not in drop)
    with pytest.raises(FrameError, match=complaint):
        readout_to_reading(Readout(sets), READ_TIME)


@pytest.mark.parametrize(
    ("replace", "complaint"),
    [
        (DataSet("1.8.0", "1234.5", "kvarh"), "unit 'kvarh' is not one of"),
        (DataSet("1.8.0", "12a4.5", "kWh"), "'12a4.5' is not a decimal number"),
        (DataSet("1.8.0", "nan", "kWh"), "'nan' is not a decimal number"),
        (DataSet("96.3.10", "7"), r"96\.3\.10\(7\) is not 0, 1 or 2"),
        (DataSet("0.9.2", "261324"), "month must be in 1..12"),
    ],
)
def test_bad_values_are_frame_errors_naming_the_line(replace: DataSet, complaint: str) -> None:
    sets = tuple(replace if s.address == replace.address else s for s in FULL_READOUT)
    with pytest.raises(FrameError, match=complaint):
        readout_to_reading(Readout(sets), READ_TIME)


def test_a_flipped_bit_is_a_bcc_mismatch() -> None:
    corrupt = bytearray(GOLDEN_READOUT)
    corrupt[8] ^= 0x01
    with pytest.raises(FrameError, match="BCC mismatch in the readout data block"):
        decode_readout(bytes(corrupt))


@pytest.mark.parametrize("cut", [1, 2, 10, len(GOLDEN_READOUT) - 2, len(GOLDEN_READOUT) - 1])
def test_a_truncated_readout_is_a_frame_error(cut: int) -> None:
    with pytest.raises(FrameError, match=r"truncated|garbled"):
        decode_readout(GOLDEN_READOUT[:cut])


def test_a_readout_without_the_end_character_is_a_frame_error() -> None:
    body = b"1.8.0(1*kWh)\r\n\x03"
    with pytest.raises(FrameError, match="does not end in '!'"):
        decode_readout(bytes([STX]) + body + bytes([bcc(body)]))


def test_programming_replies_are_told_apart() -> None:
    assert decode_programming_reply(b"\x06") is Control.ACK
    assert decode_programming_reply(b"\x15") is Control.NAK
    assert decode_programming_reply(b"\x01B0\x03q") == CommandMessage("B", "0")
    error = decode_programming_reply(DataMessage((DataSet("", "ER01"),)).encode())
    assert isinstance(error, DataMessage) and error.error == "ER01"
    value = decode_data_message(b"\x02(1)\x03" + bytes([bcc(b"(1)\x03")]))
    assert value.error is None and value.data_sets == (DataSet("", "1"),)


@pytest.mark.parametrize(
    "build",
    [
        lambda: DataSet("1.8.0", "1(2)").encode(),
        lambda: DataSet("1.8.0", "12", "k/Wh").encode(),
        lambda: DataSet("x" * 17, "1").encode(),
        lambda: SignOn("a!b").encode(),
        lambda: Identification("MC", "5", "x").encode(),
        lambda: Identification("MCH", "5", "ünï").encode(),
    ],
)
def test_encoding_refuses_what_the_protocol_cannot_carry(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"forbids|longer than|three letters"):
        build()


# --- fuzzing: only FrameError (or another MeterError) may come out, and nothing may hang -----

DECODERS: list[Callable[[bytes], object]] = [
    decode_readout,
    decode_identification,
    decode_sign_on,
    decode_option_select,
    decode_command,
    decode_data_message,
    decode_programming_reply,
]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_random_bytes_raise_only_frame_errors(raw: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(FrameError):
            decode(raw)


@st.composite
def mutated_readouts(draw: st.DrawFn) -> bytes:
    frame = bytearray(encode_readout(FULL_READOUT))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "replace"]))
        position = draw(st.integers(0, len(frame) - 1))
        if kind == "flip":
            frame[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            frame.insert(position, draw(st.integers(0, 255)))
        elif kind == "delete" and len(frame) > 1:
            del frame[position]
        else:
            frame[position] = draw(st.sampled_from(b"()*!/\r\n\x02\x03.0123456789kWhA"))
    if draw(st.booleans()):  # re-seal it so the parser behind the BCC check is exercised too
        etx = frame.rfind(bytes([ETX]))
        if etx > 0:
            frame[etx + 1 :] = bytes([bcc(bytes(frame[1 : etx + 1]))])
    return bytes(frame)


@settings(max_examples=400, deadline=None)
@given(raw=mutated_readouts())
def test_mutated_readouts_raise_only_meter_errors(raw: bytes) -> None:
    with contextlib.suppress(MeterError):
        readout_to_reading(decode_readout(raw), READ_TIME)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("0123456789.:-*()!/ABCkWhV \r\n\x7f"), max_size=80))
def test_random_data_lines_raise_only_frame_errors(text: str) -> None:
    with contextlib.suppress(FrameError):
        decode_data_line(text)


def printable(exclude: str, max_size: int) -> st.SearchStrategy[str]:
    chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=exclude)
    return st.text(chars, max_size=max_size)


@settings(max_examples=200, deadline=None)
@given(
    sets=st.lists(
        st.builds(
            DataSet,
            printable("()/!", 16),
            printable("()*/!", 40),
            st.none() | printable("()*/!", 16),
        ),
        max_size=12,
    )
)
def test_any_encodable_readout_decodes_to_the_same_data_sets(sets: list[DataSet]) -> None:
    assert decode_readout(encode_readout(sets)).data_sets == tuple(sets)
