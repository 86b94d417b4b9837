"""The NBR 14522 codec against frames captured or published by others, and under fuzzing.

Golden frames and where they come from (public code, read through the code index):
- CRC-16/ARC check value: the CRC catalogue's "123456789" -> 0xBB3D.
- RGNagel/lib-NBR14522, tests/CRC.cpp: the 256 bytes before the CRC of a 0x20 response from
  meter 32600760 give 0x5C48; 11 22 33 44 gives 0xF5B1 (its comment: "CRC-16/ARC").
- heliopas/readInstantaneousValues, main.py: a real 258-byte 0x14 response from meter 55000052
  (2024-06-04 10:15:46), CRC bytes CB 2E; files/commands.csv: the same reader's 0x14 command
  addressed with the 0x99 prefix (99 55000052 14 945068 ... C1 5D).
- An ESP32 sketch reading ABNT NBR 14522:2008 meters (comando14[66]): 0x14 with reader 000000,
  CRC bytes 05 0F.
- A public script that resets and programs Eletra ARES 8023 meters over NBR 14522
  (class RS485_OPTICAL_abnt14522): commands 0x29, 0x30, 0x31, 0x33 and the extended 0x98.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.meters import nbr14522_codec as codec
from meterchain.meters.errors import FrameError, MeterError, MeterRejected
from meterchain.model import RelayState

RGNAGEL_0x20_BODY = bytes.fromhex(
    "2032600760221500071021052215000710212215000710210000000110210000"
    "0000000000000000000000000000000000001800180018001800210021002100"
    "2100000000000000000000000000598501151512102112102102112115112102"
    "1121151121251221251221010122010122010322150422210422210422010522"
    "0000010000010000010000010000010000010171310000001681000101000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000110115201000000050000000002000000000060006092920600060000"
    "0000000600060000000000333303000101000000000107000000000000000000"
)

HELIOPAS_0x14_RESPONSE = bytes.fromhex(
    "14550000521015460406248c4c0143b79301431b4f0143bf3f60439e0f6043e6f05f43f4fd6a411f858641"
    "f853474196438b3c0060eb4400c0024500c0c0440068ac450000444300c012c40080adc3008038c40060ed"
    "44002008450040c94400b8b14500a0ec4400c007450080c5440068b045ffffffffffffffffffffffffffff"
    "ffffffffffffffffffffffffffffffffffff4c434343a3707d3f8fc2753f3333733feb51783f9a99b9c09a"
    "59acc367e6adc36766ca4100007042ffffffffffffffffffff000000000000f042cdccefc2000070c33333"
    "70c39a19704300000040000000400000803f000000410000c04000009841ffffffffffffffffffffffcb2e"
)

HELIOPAS_ADDRESSED_0x14 = bytes.fromhex("99 55 00 00 52 14 94 50 68" + " 00" * 60 + " C1 5D")

ESP32_0x14_COMMAND = bytes((0x14,)) + bytes(63) + bytes.fromhex("050F")

ARES_COMMANDS = {
    "0x29 date": bytes.fromhex("29 12 34 56 08 03 24 06") + bytes(56) + bytes.fromhex("92 05"),
    "0x30 hour": bytes.fromhex("30 12 34 56 02 50 53") + bytes(57) + bytes.fromhex("BE 5F"),
    "0x31 demand interval": bytes.fromhex("31 12 34 56 15") + bytes(59) + bytes.fromhex("94 6A"),
    "0x33 constants": bytes.fromhex(
        "33 12 34 56 00 00 01 00 10 00 00 00 01 00 10 00 00 00 01 00 10"
    )
    + bytes(43)
    + bytes.fromhex("6F 1F"),
    "0x98 extended (reset)": bytes.fromhex("98 11 11 11 57 FE")
    + bytes(58)
    + bytes.fromhex("62 0A"),
}

CLOCK = datetime(2026, 11, 24, 15, 4, 5)


# --- CRC ----------------------------------------------------------------------------------------


def test_crc_is_crc16_arc_by_its_catalogue_check_value() -> None:
    assert codec.crc16(b"123456789") == 0xBB3D


def crc16_bit_by_bit(data: bytes) -> int:
    """CRC-16/ARC as its definition reads: reflected poly 0xA001, one bit at a time."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@given(st.binary(max_size=300))
def test_the_table_driven_crc_equals_the_bit_by_bit_definition(data: bytes) -> None:
    assert codec.crc16(data) == crc16_bit_by_bit(data)


def test_crc_matches_the_rgnagel_library_test_vectors() -> None:
    assert codec.crc16(RGNAGEL_0x20_BODY) == 0x5C48
    assert codec.crc16(bytes((0x11, 0x22, 0x33, 0x44))) == 0xF5B1


def test_crc_of_a_real_meter_response_checks_out_low_byte_first() -> None:
    assert HELIOPAS_0x14_RESPONSE[-2:] == bytes((0xCB, 0x2E))
    assert codec.crc16(HELIOPAS_0x14_RESPONSE[:-2]) == 0x2ECB


@pytest.mark.parametrize("name", sorted(ARES_COMMANDS))
def test_eletra_ares_commands_decode_with_their_crc(name: str) -> None:
    raw = ARES_COMMANDS[name]
    command = codec.decode_command(raw)
    assert codec.encode_command(command.code, command.reader_serial, command.data) == raw


# --- Golden frames: encode ---------------------------------------------------------------------


def test_encoding_0x14_for_reader_000000_gives_the_esp32_frame() -> None:
    assert codec.encode_command(codec.Code.INSTANTANEOUS, "000000") == ESP32_0x14_COMMAND


def test_encoding_an_addressed_0x14_gives_the_captured_frame() -> None:
    frame = codec.encode_command(codec.Code.INSTANTANEOUS, "945068", address="55000052")
    assert frame == HELIOPAS_ADDRESSED_0x14


def test_encoding_the_eletra_date_command_gives_the_published_frame() -> None:
    frame = codec.encode_command(0x29, "123456", bytes.fromhex("08 03 24 06"))
    assert frame == ARES_COMMANDS["0x29 date"]


# --- Golden frames: decode ---------------------------------------------------------------------


def test_a_real_0x14_response_decodes_to_the_meter_s_quantities() -> None:
    response = codec.decode_response(HELIOPAS_0x14_RESPONSE)
    values = codec.decode_instantaneous(response)
    assert response.meter_serial == "55000052"
    assert values.meter_clock == datetime(2024, 6, 4, 10, 15, 46)
    assert values.voltage_v[0] == pytest.approx(129.299, abs=1e-3)
    assert values.current_a[0] == pytest.approx(14.687, abs=1e-3)
    assert values.power_w == (1883.0, 2092.0, 1542.0)
    assert values.total_power_w == 5517.0
    assert values.frequency_hz == 60.0
    assert values.temperature_c == pytest.approx(25.3, abs=1e-3)


def test_the_addressed_command_decodes_to_its_address_and_reader() -> None:
    command = codec.decode_command(HELIOPAS_ADDRESSED_0x14)
    assert (command.code, command.reader_serial, command.address) == (0x14, "945068", "55000052")


def test_a_real_0x20_response_carries_serial_and_clock_in_bcd() -> None:
    response = codec.decode_response(RGNAGEL_0x20_BODY + bytes((0x48, 0x5C)))
    assert response.meter_serial == "32600760"
    assert codec.decode_clock(response.field(5, 6)) == datetime(2021, 10, 7, 22, 15, 0)


# --- Round trips of the layouts meterchain serves -----------------------------------------------


def test_registers_round_trip_with_wh_resolution() -> None:
    registers = codec.Registers(CLOCK, import_wh=1_234_567_891, export_wh=9)
    response = codec.decode_response(codec.encode_registers("00000042", registers))
    assert codec.decode_registers(response) == registers
    assert response.field(codec.REGISTERS_IMPORT, 5) == bytes.fromhex("1234567891")


def test_registers_never_run_ahead_of_the_energy() -> None:
    assert codec.wh_register(1234.999) == 1234
    with pytest.raises(ValueError, match="cannot hold"):
        codec.wh_register(float("nan"))


def test_relay_command_and_status_round_trip() -> None:
    command = codec.decode_command(codec.encode_relay_command("123456", RelayState.OFF))
    assert codec.is_relay_command(command)
    assert codec.relay_target(command) is RelayState.OFF
    read = codec.decode_command(codec.encode_relay_command("123456", None))
    assert codec.relay_target(read) is None
    status = codec.RelayStatus(RelayState.OFF, CLOCK)
    frame = codec.encode_relay_status("12345678", codec.RELAY_ACTION_SET, status)
    assert codec.decode_relay_status(codec.decode_response(frame)) == status


def test_not_implemented_answer_becomes_a_rejection_naming_the_command() -> None:
    response = codec.decode_response(codec.not_implemented_response("12345678", 0x52))
    rejection = codec.refusal(response, 0x52)
    assert isinstance(rejection, MeterRejected)
    assert "does not implement command 0x52" in str(rejection)


def test_occurrence_answer_becomes_a_rejection_naming_the_occurrence() -> None:
    frame = codec.occurrence_response("12345678", codec.OCCURRENCE_INVALID_PARAMETER, 0x98)
    rejection = codec.refusal(codec.decode_response(frame), 0x98)
    assert rejection is not None and "0x46 (change with an invalid parameter)" in str(rejection)


# --- Bad frames ----------------------------------------------------------------------------------


def test_crc_mismatch_names_both_crcs_in_hex() -> None:
    raw = bytearray(HELIOPAS_0x14_RESPONSE)
    raw[20] ^= 0x01
    with pytest.raises(FrameError, match=r"carries 0x2ECB, its bytes give 0x[0-9A-F]{4}"):
        codec.decode_response(bytes(raw))


def test_truncated_response_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="258 bytes, this one is 100"):
        codec.decode_response(HELIOPAS_0x14_RESPONSE[:100])


def test_non_bcd_serial_is_a_frame_error() -> None:
    frame = bytearray(codec.encode_response(0x23, "12345678"))
    frame[1] = 0xAB
    with pytest.raises(FrameError, match="meter serial is not BCD"):
        codec.decode_response(_recrc(frame))


def test_impossible_clock_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="not a valid date"):
        codec.decode_clock(bytes.fromhex("25 00 00 31 02 26"))


def test_serial_for_numeric_ids_is_the_id_itself() -> None:
    assert codec.serial_for_meter_id("12345678") == "12345678"
    assert codec.serial_for_meter_id("42") == "00000042"


def test_serial_for_other_ids_is_stable_and_eight_digits() -> None:
    serial = codec.serial_for_meter_id("house-1")
    assert serial == codec.serial_for_meter_id("house-1")
    assert len(serial) == 8 and serial.isdigit()
    assert serial != codec.serial_for_meter_id("house-2")


def _recrc(frame: bytearray) -> bytes:
    crc = codec.crc16(bytes(frame[:-2]))
    return bytes(frame[:-2]) + bytes((crc & 0xFF, crc >> 8))


# --- Fuzzing: only typed errors, never anything else -------------------------------------------

VALID_RESPONSES = [
    HELIOPAS_0x14_RESPONSE,
    codec.encode_registers("12345678", codec.Registers(CLOCK, 987_654, 321)),
    codec.encode_relay_status(
        "12345678", codec.RELAY_ACTION_READ, codec.RelayStatus(RelayState.ON, CLOCK)
    ),
]


def _decode_everything(raw: bytes) -> None:
    response = codec.decode_response(raw)
    for decoder in (codec.decode_instantaneous, codec.decode_registers, codec.decode_relay_status):
        with contextlib.suppress(FrameError):
            decoder(response)
    codec.refusal(response, 0x14)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_raise_only_frame_errors(raw: bytes) -> None:
    with contextlib.suppress(MeterError):
        _decode_everything(raw)
    with contextlib.suppress(MeterError):
        codec.decode_command(raw)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID_RESPONSES), st.integers(0, 257), st.integers(0, 7))
def test_a_flipped_bit_is_always_caught_by_the_crc(raw: bytes, index: int, bit: int) -> None:
    mutated = bytearray(raw)
    mutated[index] ^= 1 << bit
    with pytest.raises(FrameError):
        codec.decode_response(bytes(mutated))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID_RESPONSES), st.integers(0, 257))
def test_truncated_frames_raise_frame_errors(raw: bytes, length: int) -> None:
    with pytest.raises(FrameError):
        codec.decode_response(raw[:length])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID_RESPONSES), st.binary(min_size=251, max_size=251))
def test_any_payload_with_a_good_crc_decodes_or_raises_frame_error(
    raw: bytes, payload: bytes
) -> None:
    frame = codec.encode_response(raw[0], "12345678", payload)
    with contextlib.suppress(FrameError):
        _decode_everything(frame)
