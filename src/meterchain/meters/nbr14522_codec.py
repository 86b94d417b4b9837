"""ABNT NBR 14522 frames, pure: bytes in, typed values out, and back. No sockets, no clocks.

A reader sends 66-byte commands: code, 3-byte BCD reader serial, 60 data bytes, CRC-16.
A meter answers with 258-byte responses: code echo, 4-byte BCD meter serial, 251 data bytes,
CRC-16. The CRC is CRC-16/ARC (polynomial 0x8005 reflected = 0xA001, initial value 0, no final
XOR) over every byte before it, sent low byte first. docs/nbr14522.md lists each layout and the
public frames the CRC was checked against.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum

from meterchain.meters.errors import FrameError, MeterRejected
from meterchain.model import Reading, RelayState

COMMAND_SIZE = 66
RESPONSE_SIZE = 258
COMMAND_DATA_SIZE = COMMAND_SIZE - 6  # code, 3-byte reader serial ... CRC
RESPONSE_DATA_SIZE = RESPONSE_SIZE - 7  # code, 4-byte meter serial ... CRC

# Signalling characters ("sinalizadores").
ENQ = 0x05  # the meter is ready for a command
ACK = 0x06  # block received with a good CRC
NAK = 0x15  # block received with a bad CRC: send it again
WAIT = 0x10  # the meter needs more time; it sends ENQ when ready

# A command preceded by 0x99 and the 4-byte BCD serial of the meter it is meant for (RS-485
# buses with several meters). The CRC covers the 66-byte command only.
ADDRESS_PREFIX = 0x99
ADDRESS_SIZE = 5

# Protocol limits per block.
MAX_NAKS = 7
MAX_WAITS = 12
MAX_UNANSWERED = 7


class Code(IntEnum):
    """Command and response codes this module understands."""

    INSTANTANEOUS = 0x14  # leitura das grandezas instantâneas
    CURRENT_PARAMETERS = 0x21  # leitura dos parâmetros atuais (recognised, not served)
    CURRENT_REGISTERS = 0x23  # leitura dos registradores atuais
    NOT_IMPLEMENTED = 0x39  # informação de comando não implementado (response only)
    OCCURRENCE = 0x40  # informação de ocorrência no registrador (response only)
    EXTENDED = 0x98  # comando estendido: octet 005 carries a sub-command


# meterchain's relay extension: command 0x98 with this sub-command (see docs/nbr14522.md).
RELAY_SUBCODE = 0xCE
RELAY_ACTION_READ = 0x00
RELAY_ACTION_SET = 0x01
RELAY_BYTE = {RelayState.OFF: 0x00, RelayState.ON: 0x01}
RELAY_FROM_BYTE = {value: state for state, value in RELAY_BYTE.items()}

# Occurrence codes a meter reports with response 0x40 (octet 006).
OCCURRENCE_INVALID_PARAMETER = 0x46
OCCURRENCES = {
    0x30: "battery defect",
    0x31: "program integrity error",
    0x33: "clock defect",
    0x36: "invalid password",
    0x37: "watchdog action",
    0x45: "billing closure during the protection period",
    OCCURRENCE_INVALID_PARAMETER: "change with an invalid parameter",
}

# Octet offsets (0-based) inside a 0x14 response: IEEE-754 float32, little-endian.
INSTANT_CLOCK = 5
INSTANT_VOLTAGE = (11, 15, 19)
INSTANT_CURRENT = (35, 39, 43)
INSTANT_POWER = (51, 55, 59)
INSTANT_TOTAL_POWER = 63
INSTANT_TEMPERATURE = 179
INSTANT_FREQUENCY = 183

# Octet offsets inside a 0x23 response (meterchain layout): 5-byte BCD registers in Wh.
REGISTERS_CLOCK = 5
REGISTER_SIZE = 5
REGISTERS_IMPORT = 11
REGISTERS_EXPORT = 16
REGISTERS_REACTIVE = 21
REGISTER_MAX_WH = int("9" * 2 * REGISTER_SIZE)  # 10 BCD digits

# Octet offsets inside a relay (0x98 / RELAY_SUBCODE) command and response.
RELAY_CMD_SUBCODE = 4
RELAY_CMD_ACTION = 5
RELAY_CMD_STATE = 6
RELAY_RSP_SUBCODE = 5
RELAY_RSP_ACTION = 6
RELAY_RSP_STATE = 7
RELAY_RSP_CLOCK = 8


def _crc16_table() -> tuple[int, ...]:
    """The CRC of each byte value alone, bit by bit: the definition the table shortcuts."""
    table = []
    for value in range(256):
        crc = value
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/ARC: poly 0x8005 reflected (0xA001), init 0x0000, no final XOR.

    Byte-wise through a table: a 258-byte response costs ~0.04 ms instead of ~0.4 ms bit by
    bit, and every read checks three of them (the simulator computes three more).
    """
    crc = 0
    table = _CRC16_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def _with_crc(body: bytes) -> bytes:
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def _check_crc(raw: bytes, kind: str) -> None:
    received = raw[-2] | raw[-1] << 8
    computed = crc16(raw[:-2])
    if received != computed:
        raise FrameError(
            f"CRC mismatch in a {len(raw)}-byte {kind} with code 0x{raw[0]:02X}: the frame "
            f"carries 0x{received:04X}, its bytes give 0x{computed:04X} (line noise, a wrong "
            "baud rate or not an NBR 14522 device)"
        )


# --- BCD -------------------------------------------------------------------------------------


def encode_bcd(digits: str, size: int) -> bytes:
    """Decimal digits as packed BCD in `size` bytes, most significant first, zero-padded."""
    if not re.fullmatch(r"[0-9]*", digits) or len(digits) > 2 * size:
        raise ValueError(f"{digits!r} is not a number of at most {2 * size} decimal digits")
    text = digits.zfill(2 * size)
    return bytes(int(text[i]) << 4 | int(text[i + 1]) for i in range(0, len(text), 2))


def decode_bcd(raw: bytes, what: str) -> str:
    """Packed BCD to its decimal digits; a nibble above 9 is a `FrameError`."""
    digits = []
    for byte in raw:
        high, low = byte >> 4, byte & 0x0F
        if high > 9 or low > 9:
            raise FrameError(f"{what} is not BCD: octet 0x{byte:02X} in {raw.hex(' ')}")
        digits.append(f"{high}{low}")
    return "".join(digits)


def encode_clock(moment: datetime) -> bytes:
    """The meter's wall clock as six BCD octets: hh mm ss DD MM YY."""
    if not 2000 <= moment.year <= 2099:
        raise ValueError(f"NBR 14522 dates carry two year digits; {moment.year} does not fit")
    return encode_bcd(
        f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"
        f"{moment.day:02d}{moment.month:02d}{moment.year % 100:02d}",
        6,
    )


def decode_clock(raw: bytes, what: str = "meter clock") -> datetime:
    """Six BCD octets hh mm ss DD MM YY to a naive datetime (the meter's own wall clock)."""
    digits = decode_bcd(raw, what)
    hour, minute, second, day, month, year = (int(digits[i : i + 2]) for i in range(0, 12, 2))
    try:
        return datetime(2000 + year, month, day, hour, minute, second)
    except ValueError:
        raise FrameError(
            f"{what} {digits[6:8]}/{digits[8:10]}/{digits[10:12]} "
            f"{digits[0:2]}:{digits[2:4]}:{digits[4:6]} is not a valid date and time"
        ) from None


def serial_for_meter_id(meter_id: str) -> str:
    """The 8-digit serial a simulated meter reports for `meter_id`.

    NBR 14522 carries the meter serial as 4 BCD octets. Ids of 1 to 8 decimal digits are
    served as themselves (zero-padded to 8 digits); any other id maps to a stable 8-digit
    number derived from its SHA-256, so the same id always reports the same serial.
    """
    if re.fullmatch(r"[0-9]{1,8}", meter_id):
        return meter_id.zfill(8)
    digest = hashlib.sha256(meter_id.encode()).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**8:08d}"


# --- Frames ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A reader's command: code, reader serial (6 digits), 60 data bytes, optional address."""

    code: int
    reader_serial: str
    data: bytes
    address: str | None = None


@dataclass(frozen=True)
class Response:
    """A meter's response: code, meter serial (8 digits), 251 data bytes."""

    code: int
    meter_serial: str
    data: bytes

    def octet(self, offset: int) -> int:
        """The byte at frame offset `offset` (0 = code, 5 = first data byte)."""
        return self.data[offset - 5]

    def field(self, offset: int, size: int) -> bytes:
        return self.data[offset - 5 : offset - 5 + size]


def encode_command(
    code: int, reader_serial: str, payload: bytes = b"", address: str | None = None
) -> bytes:
    """A 66-byte command (71 with an address prefix); `payload` fills octets 005 onwards."""
    if len(payload) > COMMAND_DATA_SIZE:
        raise ValueError(f"a command carries {COMMAND_DATA_SIZE} data bytes, not {len(payload)}")
    body = bytes((code,)) + encode_bcd(reader_serial, 3) + payload.ljust(COMMAND_DATA_SIZE, b"\0")
    frame = _with_crc(body)
    if address is not None:
        frame = bytes((ADDRESS_PREFIX,)) + encode_bcd(address, 4) + frame
    return frame


def decode_command(raw: bytes) -> Command:
    """Parse a command (66 bytes, or 71 with the 0x99 address prefix)."""
    address = None
    if len(raw) == COMMAND_SIZE + ADDRESS_SIZE and raw[0] == ADDRESS_PREFIX:
        address = decode_bcd(raw[1:ADDRESS_SIZE], "addressed meter serial")
        raw = raw[ADDRESS_SIZE:]
    if len(raw) != COMMAND_SIZE:
        raise FrameError(f"a command is {COMMAND_SIZE} bytes, this one is {len(raw)}")
    _check_crc(raw, "command")
    return Command(raw[0], decode_bcd(raw[1:4], "reader serial"), raw[4:-2], address)


def encode_response(code: int, meter_serial: str, payload: bytes = b"") -> bytes:
    """A 258-byte response; `payload` fills octets 006 onwards."""
    if len(payload) > RESPONSE_DATA_SIZE:
        raise ValueError(f"a response carries {RESPONSE_DATA_SIZE} data bytes, not {len(payload)}")
    body = bytes((code,)) + encode_bcd(meter_serial, 4) + payload.ljust(RESPONSE_DATA_SIZE, b"\0")
    return _with_crc(body)


def decode_response(raw: bytes) -> Response:
    """Parse a response: length, CRC and meter serial are checked."""
    if len(raw) != RESPONSE_SIZE:
        raise FrameError(
            f"a response is {RESPONSE_SIZE} bytes, this one is {len(raw)} (truncated frame?)"
        )
    _check_crc(raw, "response")
    return Response(raw[0], decode_bcd(raw[1:5], "meter serial"), raw[5:-2])


def refusal(response: Response, command_code: int) -> MeterRejected | None:
    """The error a 'not implemented' (0x39) or 'occurrence' (0x40) response stands for."""
    if response.code == Code.NOT_IMPLEMENTED:
        return MeterRejected(
            f"meter {response.meter_serial} does not implement command 0x{command_code:02X} "
            "(it answered 0x39, 'comando não implementado'); check the meter model's command set"
        )
    if response.code == Code.OCCURRENCE:
        occurrence = response.octet(5)
        meaning = OCCURRENCES.get(occurrence, "unknown occurrence")
        return MeterRejected(
            f"meter {response.meter_serial} refused command 0x{command_code:02X} with occurrence "
            f"0x{occurrence:02X} ({meaning}); see the meter's occurrence log"
        )
    return None


def not_implemented_response(meter_serial: str, refused_code: int) -> bytes:
    """Response 0x39: octet 006 names the command the meter does not implement."""
    return encode_response(Code.NOT_IMPLEMENTED, meter_serial, bytes((refused_code,)))


def occurrence_response(meter_serial: str, occurrence: int, refused_code: int) -> bytes:
    """Response 0x40: octet 006 is the occurrence code, octet 007 the command it concerns."""
    return encode_response(Code.OCCURRENCE, meter_serial, bytes((occurrence, refused_code)))


# --- 0x14: instantaneous quantities ----------------------------------------------------------


@dataclass(frozen=True)
class Instantaneous:
    """What command 0x14 reports: per-phase V, A, W (A, B, C), total W, the meter's clock."""

    meter_clock: datetime
    voltage_v: tuple[float, float, float]
    current_a: tuple[float, float, float]
    power_w: tuple[float, float, float]
    total_power_w: float
    frequency_hz: float
    temperature_c: float


def _put_float(frame: bytearray, offset: int, value: float) -> None:
    struct.pack_into("<f", frame, offset, value)


def _get_float(response: Response, offset: int) -> float:
    value: float = struct.unpack("<f", response.field(offset, 4))[0]
    return value


def encode_instantaneous(meter_serial: str, values: Instantaneous) -> bytes:
    frame = bytearray(encode_response(Code.INSTANTANEOUS, meter_serial))
    frame[INSTANT_CLOCK : INSTANT_CLOCK + 6] = encode_clock(values.meter_clock)
    for offsets, triple in (
        (INSTANT_VOLTAGE, values.voltage_v),
        (INSTANT_CURRENT, values.current_a),
        (INSTANT_POWER, values.power_w),
    ):
        for offset, value in zip(offsets, triple, strict=True):
            _put_float(frame, offset, value)
    _put_float(frame, INSTANT_TOTAL_POWER, values.total_power_w)
    _put_float(frame, INSTANT_TEMPERATURE, values.temperature_c)
    _put_float(frame, INSTANT_FREQUENCY, values.frequency_hz)
    return _with_crc(bytes(frame[:-2]))


def decode_instantaneous(response: Response) -> Instantaneous:
    _expect(response, Code.INSTANTANEOUS)

    def triple(offsets: tuple[int, int, int]) -> tuple[float, float, float]:
        a, b, c = (_get_float(response, offset) for offset in offsets)
        return (a, b, c)

    return Instantaneous(
        meter_clock=decode_clock(response.field(INSTANT_CLOCK, 6)),
        voltage_v=triple(INSTANT_VOLTAGE),
        current_a=triple(INSTANT_CURRENT),
        power_w=triple(INSTANT_POWER),
        total_power_w=_get_float(response, INSTANT_TOTAL_POWER),
        frequency_hz=_get_float(response, INSTANT_FREQUENCY),
        temperature_c=_get_float(response, INSTANT_TEMPERATURE),
    )


# --- 0x23: current registers -----------------------------------------------------------------


@dataclass(frozen=True)
class Registers:
    """Cumulative active energy registers in whole Wh (kWh with three decimals)."""

    meter_clock: datetime
    import_wh: int
    export_wh: int


def wh_register(energy_wh: float) -> int:
    """A float counter as the register shows it: whole Wh, truncated, so it never runs ahead."""
    if not math.isfinite(energy_wh) or energy_wh < 0:
        raise ValueError(f"an energy register cannot hold {energy_wh} Wh")
    return min(int(energy_wh), REGISTER_MAX_WH)


def encode_registers(meter_serial: str, registers: Registers) -> bytes:
    frame = bytearray(encode_response(Code.CURRENT_REGISTERS, meter_serial))
    frame[REGISTERS_CLOCK : REGISTERS_CLOCK + 6] = encode_clock(registers.meter_clock)
    for offset, value in (
        (REGISTERS_IMPORT, registers.import_wh),
        (REGISTERS_EXPORT, registers.export_wh),
        (REGISTERS_REACTIVE, 0),
    ):
        frame[offset : offset + REGISTER_SIZE] = encode_bcd(str(value), REGISTER_SIZE)
    return _with_crc(bytes(frame[:-2]))


def decode_registers(response: Response) -> Registers:
    _expect(response, Code.CURRENT_REGISTERS)

    def register(offset: int, what: str) -> int:
        return int(decode_bcd(response.field(offset, REGISTER_SIZE), what))

    return Registers(
        meter_clock=decode_clock(response.field(REGISTERS_CLOCK, 6)),
        import_wh=register(REGISTERS_IMPORT, "import register"),
        export_wh=register(REGISTERS_EXPORT, "export register"),
    )


# --- 0x98 / RELAY_SUBCODE: load cut and reconnect (meterchain extension) ----------------------


@dataclass(frozen=True)
class RelayStatus:
    """The relay state a meter reports, and when (its wall clock)."""

    state: RelayState
    meter_clock: datetime


def encode_relay_command(
    reader_serial: str, target: RelayState | None, address: str | None = None
) -> bytes:
    """Read the relay state (`target` None) or switch it (cut: OFF, reconnect: ON)."""
    payload = bytearray(3)
    payload[RELAY_CMD_SUBCODE - 4] = RELAY_SUBCODE
    if target is not None:
        payload[RELAY_CMD_ACTION - 4] = RELAY_ACTION_SET
        payload[RELAY_CMD_STATE - 4] = RELAY_BYTE[target]
    return encode_command(Code.EXTENDED, reader_serial, bytes(payload), address)


def is_relay_command(command: Command) -> bool:
    return command.code == Code.EXTENDED and command.data[RELAY_CMD_SUBCODE - 4] == RELAY_SUBCODE


def relay_target(command: Command) -> RelayState | None:
    """What a relay command asks for: None to read, else the state; ValueError if malformed."""
    action = command.data[RELAY_CMD_ACTION - 4]
    if action == RELAY_ACTION_READ:
        return None
    state = command.data[RELAY_CMD_STATE - 4]
    if action != RELAY_ACTION_SET or state not in RELAY_FROM_BYTE:
        raise ValueError(f"relay command with action 0x{action:02X} and state 0x{state:02X}")
    return RELAY_FROM_BYTE[state]


def encode_relay_status(meter_serial: str, action: int, status: RelayStatus) -> bytes:
    payload = bytearray(9)
    payload[RELAY_RSP_SUBCODE - 5] = RELAY_SUBCODE
    payload[RELAY_RSP_ACTION - 5] = action
    payload[RELAY_RSP_STATE - 5] = RELAY_BYTE[status.state]
    payload[RELAY_RSP_CLOCK - 5 :] = encode_clock(status.meter_clock)
    return encode_response(Code.EXTENDED, meter_serial, bytes(payload))


def decode_relay_status(response: Response) -> RelayStatus:
    _expect(response, Code.EXTENDED)
    subcode = response.octet(RELAY_RSP_SUBCODE)
    if subcode != RELAY_SUBCODE:
        raise FrameError(
            f"extended response with sub-command 0x{subcode:02X}, expected the relay "
            f"sub-command 0x{RELAY_SUBCODE:02X}"
        )
    state = response.octet(RELAY_RSP_STATE)
    if state not in RELAY_FROM_BYTE:
        raise FrameError(f"relay state octet is 0x{state:02X}; expected 0x00 (cut) or 0x01 (on)")
    return RelayStatus(RELAY_FROM_BYTE[state], decode_clock(response.field(RELAY_RSP_CLOCK, 6)))


# --- From frames to a Reading ----------------------------------------------------------------


def _expect(response: Response, code: int) -> None:
    if response.code != code:
        raise FrameError(f"expected a 0x{code:02X} response, got code 0x{response.code:02X}")


def meter_time_to_utc(meter_clock: datetime, utc_offset_h: float) -> datetime:
    """The meter's wall clock (UTC + `utc_offset_h`) as an aware UTC datetime."""
    zone = timezone(timedelta(hours=utc_offset_h))
    return meter_clock.replace(tzinfo=zone).astimezone(UTC)


def registers_to_reading(
    registers: Registers,
    instant: Instantaneous,
    relay: RelayState,
    meter_serial: str,
    utc_offset_h: float = 0.0,
) -> Reading:
    """One Reading from the 0x23 registers, the 0x14 quantities and the relay state.

    The timestamp is the registers' meter clock; voltage and current are phase A; power is the
    total active power (positive while importing).
    """
    return Reading(
        meter_id=meter_serial,
        timestamp=meter_time_to_utc(registers.meter_clock, utc_offset_h),
        import_wh=float(registers.import_wh),
        export_wh=float(registers.export_wh),
        power_w=instant.total_power_w,
        voltage_v=instant.voltage_v[0],
        current_a=instant.current_a[0],
        relay=relay,
    )
