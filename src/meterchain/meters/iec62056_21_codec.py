"""IEC 62056-21 (formerly IEC 1107) mode C: a pure codec, bytes in and typed messages out.

No sockets and no clocks here: the driver, the simulator and the fuzzers all call these
functions. Every message is 7-bit ASCII (7E1 on a serial line):

    sign-on request       / ? [address] ! CR LF
    identification        / XXX Z [\\W] ident CR LF     XXX manufacturer, Z baud-rate character
    ack / option select   ACK V Z Y CR LF               V '0' normal protocol, Y '0' readout,
                                                        '1' programming mode
    readout data message  STX data lines ! CR LF ETX BCC
    command message       SOH C D [STX data] ETX BCC    P0 password prompt, P1 password,
                                                        W1 write, R1 read, B0 break
    data message          STX data ETX BCC              answer to R1, or an error like (ER01)
    ACK / NAK             the single bytes 0x06 / 0x15

BCC is the XOR of every byte after the opening SOH or STX up to and including ETX.
A data set is `address(value*unit)`, e.g. `1.8.0(001234.567*kWh)`; a data line holds one or
more data sets and ends in CR LF.

What the readout means (`readout_to_reading`), by OBIS code C.D.E (A-B: prefixes and a `*255`
suffix are accepted; other `*F`/`&F` suffixes are billing-period values and are ignored):

    0.0.0 / C.1.0 / 96.1.0   meter id (first present wins)
    1.8.0, 2.8.0             import and export energy (Wh, kWh or MWh); no 2.8.0 means 0
    16.7.0, or 1.7.0 - 2.7.0 active power, signed, + import (W, kW or MW)
    32.7.0 (or 12.7.0)       voltage L1 (V or kV)
    31.7.0 (or 11.7.0)       current L1 (A or mA)
    0.9.1, 0.9.2             the meter's time (hhmmss, hh:mm:ss) and date (YYMMDD, YYYYMMDD)
    96.3.10                  relay (disconnect control state, as in DLMS 0.0.96.3.10.255):
                             1 connected, 0 disconnected, 2 ready for reconnection (open)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum

from meterchain.meters.errors import FrameError
from meterchain.model import Reading, RelayState

SOH = 0x01
STX = 0x02
ETX = 0x03
EOT = 0x04
ACK = 0x06
NAK = 0x15
CRLF = b"\r\n"

MODE_READOUT = "0"
MODE_PROGRAMMING = "1"
PROTOCOL_NORMAL = "0"

# Mode C baud-rate characters (the `Z` of the identification and of the option select).
BAUD_RATES: dict[str, int] = {
    "0": 300,
    "1": 600,
    "2": 1200,
    "3": 2400,
    "4": 4800,
    "5": 9600,
    "6": 19200,
}
BAUD_CHARS: dict[int, str] = {rate: char for char, rate in BAUD_RATES.items()}

MAX_ADDRESS_CHARS = 16
MAX_VALUE_CHARS = 128  # 32 in the 1996 edition; later editions and real meters send more
MAX_UNIT_CHARS = 16
MAX_DEVICE_ADDRESS_CHARS = 32
MAX_IDENT_CHARS = 16

RELAY_ADDRESS = "96.3.10"
COMMANDS = "PWREB"  # password, write, read, execute, break

_ADDRESS_FORBIDDEN = set("()/!")
_VALUE_FORBIDDEN = set("()*/!")
_UNIT_FORBIDDEN = set("()*/!")


def bcc(data: bytes) -> int:
    """Block check character: the XOR of `data` (everything after SOH/STX, ETX included)."""
    check = 0
    for byte in data:
        check ^= byte
    return check


def _printable(text: str, forbidden: set[str], what: str, limit: int) -> str:
    """`text` unchanged if it may be sent as `what`, else ValueError naming the problem."""
    if len(text) > limit:
        raise ValueError(f"{what} {text!r} is longer than {limit} characters")
    bad = sorted({c for c in text if not " " <= c <= "~" or c in forbidden})
    if bad:
        raise ValueError(f"{what} {text!r} contains characters IEC 62056-21 forbids: {bad}")
    return text


def _text(raw: bytes, what: str) -> str:
    """Decode printable ASCII or raise FrameError: 7-bit lines carry nothing else."""
    bad = [b for b in raw if not 0x20 <= b <= 0x7E]
    if bad:
        raise FrameError(
            f"{what} contains a non-printable byte 0x{bad[0]:02x}: not an IEC 62056-21 message "
            "or the line is noisy (is the port set to 7E1?)"
        )
    return raw.decode("ascii")


def _show(raw: bytes, limit: int = 40) -> str:
    return repr(raw[:limit]) + ("…" if len(raw) > limit else "")


# --- sign-on, identification, option select ------------------------------------------------


@dataclass(frozen=True)
class SignOn:
    """`/?[address]!CRLF`: wakes the meter; an empty address means whoever is on the port."""

    address: str = ""

    def encode(self) -> bytes:
        address = _printable(self.address, {"/", "!"}, "device address", MAX_DEVICE_ADDRESS_CHARS)
        return f"/?{address}!\r\n".encode("ascii")


def decode_sign_on(raw: bytes) -> SignOn:
    if not raw.startswith(b"/?") or not raw.endswith(b"!\r\n"):
        raise FrameError(f"not a sign-on request (/?address!CRLF): {_show(raw)}")
    address = _text(raw[2:-3], "sign-on address")
    if len(address) > MAX_DEVICE_ADDRESS_CHARS or "/" in address or "!" in address:
        raise FrameError(f"sign-on address {address!r} is not a valid device address")
    return SignOn(address)


@dataclass(frozen=True)
class Identification:
    """`/XXXZ[\\W]ident CRLF`: who the meter is and the fastest baud rate it offers."""

    manufacturer: str
    baud_char: str
    ident: str
    enhanced: str = ""  # the W of an optional `\\W` (enhanced capability), e.g. "2" for HDLC

    @property
    def baud_rate(self) -> int | None:
        """The offered baud rate if this is a mode C meter ('0'-'6'), else None (mode A/B)."""
        return BAUD_RATES.get(self.baud_char)

    @property
    def short_reaction_time(self) -> bool:
        """A lower-case third letter means the meter may answer after 20 ms instead of 200 ms."""
        return self.manufacturer[2:3].islower()

    def encode(self) -> bytes:
        code = self.manufacturer
        if len(code) != 3 or not (code.isascii() and code.isalpha()):
            raise ValueError(f"manufacturer code {self.manufacturer!r} is not three letters")
        _printable(self.baud_char, {"/", "!", "\\"}, "baud-rate character", 1)
        if len(self.baud_char) != 1:
            raise ValueError("the baud-rate character is one character")
        enhanced = f"\\{_printable(self.enhanced, {'/', '!'}, 'enhanced id', 1)}"
        ident = _printable(self.ident, {"/", "!"}, "identification", MAX_IDENT_CHARS)
        if not ident:
            raise ValueError("the identification must not be empty")
        text = f"/{self.manufacturer}{self.baud_char}{enhanced if self.enhanced else ''}{ident}"
        return text.encode("ascii") + CRLF


def decode_identification(raw: bytes) -> Identification:
    if not raw.startswith(b"/") or not raw.endswith(CRLF):
        raise FrameError(
            f"expected the identification message /XXXZident CRLF, got {_show(raw)}; "
            "is this an IEC 62056-21 meter?"
        )
    text = _text(raw[1:-2], "identification message")
    if len(text) < 5:
        raise FrameError(f"identification message {_show(raw)} is too short")
    manufacturer, baud_char, rest = text[:3], text[3], text[4:]
    if not (manufacturer.isascii() and manufacturer.isalpha()):
        raise FrameError(f"identification {_show(raw)}: manufacturer {manufacturer!r} not letters")
    if baud_char in "/!\\":
        raise FrameError(f"identification {_show(raw)}: {baud_char!r} is no baud-rate character")
    enhanced = ""
    if rest.startswith("\\"):
        if len(rest) < 2:
            raise FrameError(f"identification {_show(raw)}: '\\' without a capability character")
        enhanced, rest = rest[1], rest[2:]
    if not rest or len(rest) > MAX_IDENT_CHARS or "/" in rest or "!" in rest:
        raise FrameError(
            f"identification {_show(raw)}: the ident {rest!r} is empty, longer than "
            f"{MAX_IDENT_CHARS} characters or contains / or !"
        )
    return Identification(manufacturer, baud_char, rest, enhanced)


@dataclass(frozen=True)
class OptionSelect:
    """`ACK V Z Y CRLF`: the client accepts a baud rate and picks readout or programming mode."""

    baud_char: str
    mode: str = MODE_READOUT
    protocol: str = PROTOCOL_NORMAL

    def encode(self) -> bytes:
        for name, char in (
            ("protocol", self.protocol),
            ("baud", self.baud_char),
            ("mode", self.mode),
        ):
            if len(char) != 1 or not char.isdigit() or not char.isascii():
                raise ValueError(f"option select {name} character {char!r} is not one digit")
        return bytes([ACK]) + f"{self.protocol}{self.baud_char}{self.mode}".encode() + CRLF


def decode_option_select(raw: bytes) -> OptionSelect:
    if len(raw) != 6 or raw[0] != ACK or not raw.endswith(CRLF):
        raise FrameError(f"not an acknowledgement/option select (ACK V Z Y CRLF): {_show(raw)}")
    text = _text(raw[1:4], "option select")
    if not (text.isascii() and text.isdigit()):
        raise FrameError(f"option select {_show(raw)}: V, Z and Y must be digits")
    return OptionSelect(baud_char=text[1], mode=text[2], protocol=text[0])


# --- data sets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    """`address(value*unit)`; `address` is "" for a bare `(value)`, `unit` None without `*`."""

    address: str
    value: str
    unit: str | None = None

    def encode(self) -> str:
        address = _printable(self.address, _ADDRESS_FORBIDDEN, "address", MAX_ADDRESS_CHARS)
        value = _printable(self.value, _VALUE_FORBIDDEN, "value", MAX_VALUE_CHARS)
        if self.unit is None:
            return f"{address}({value})"
        unit = _printable(self.unit, _UNIT_FORBIDDEN, "unit", MAX_UNIT_CHARS)
        return f"{address}({value}*{unit})"


_DATA_SET = re.compile(r"([^()/!]*)\(([^()/!]*)\)")  # callers pass printable ASCII only


def decode_data_line(line: str) -> list[DataSet]:
    """The data sets of one line (without its CR LF), or FrameError naming the bad part."""
    if any(not " " <= c <= "~" for c in line):
        raise FrameError(f"data line {line[:60]!r} contains a control or non-ASCII character")
    sets: list[DataSet] = []
    position = 0
    while position < len(line):
        match = _DATA_SET.match(line, position)
        if match is None:
            raise FrameError(f"data line {line[:60]!r}: no address(value) at column {position}")
        address, body = match.group(1), match.group(2)
        value, star, unit = body.partition("*")
        if len(address) > MAX_ADDRESS_CHARS:
            raise FrameError(f"data line {line[:60]!r}: address {address[:40]!r} is too long")
        if len(value) > MAX_VALUE_CHARS or len(unit) > MAX_UNIT_CHARS or "*" in unit:
            raise FrameError(f"data line {line[:60]!r}: malformed value {body[:40]!r}")
        sets.append(DataSet(address, value, unit if star else None))
        position = match.end()
    if not sets:
        raise FrameError("empty data line: every line of a data block carries a data set")
    return sets


def _lines(text: str, what: str) -> list[str]:
    """Split CR LF terminated lines; a stray CR or LF is a framing error."""
    if not text:
        return []
    if not text.endswith("\r\n"):
        raise FrameError(f"{what}: the last data line does not end in CR LF")
    return text[:-2].split("\r\n")


def _check_block(raw: bytes, opener: int, what: str) -> bytes:
    """Check the opener, ETX and BCC of `opener ... ETX BCC`; return what lies between."""
    if len(raw) < 3:
        raise FrameError(f"{what} truncated: only {len(raw)} bytes ({_show(raw)})")
    if raw[0] != opener:
        raise FrameError(
            f"{what} does not start with 0x{opener:02x} but 0x{raw[0]:02x}: {_show(raw)}"
        )
    if raw[-2] != ETX:
        raise FrameError(f"{what} truncated or garbled: no ETX before the BCC ({_show(raw)})")
    expected = bcc(raw[1:-1])
    if raw[-1] != expected:
        raise FrameError(
            f"BCC mismatch in the {what}: computed 0x{expected:02x}, received 0x{raw[-1]:02x}; "
            "the line is noisy or the frame was cut"
        )
    return raw[1:-2]


# --- readout -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readout:
    """The data sets of a readout data message, in the order the meter sent them."""

    data_sets: tuple[DataSet, ...]

    def by_obis(self) -> dict[str, DataSet]:
        """Current values by OBIS key C.D.E (the first occurrence wins)."""
        found: dict[str, DataSet] = {}
        for data_set in self.data_sets:
            key = obis_key(data_set.address)
            if key is not None and key not in found:
                found[key] = data_set
        return found


def encode_readout(lines: Iterable[DataSet | Sequence[DataSet]]) -> bytes:
    """STX, one line per item (a data set or several on one line), `!` CR LF, ETX, BCC."""
    text = ""
    for line in lines:
        sets = [line] if isinstance(line, DataSet) else list(line)
        text += "".join(data_set.encode() for data_set in sets) + "\r\n"
    body = text.encode("ascii") + b"!\r\n" + bytes([ETX])
    return bytes([STX]) + body + bytes([bcc(body)])


def decode_readout(raw: bytes) -> Readout:
    """Check and parse `STX lines ! CR LF ETX BCC`."""
    inner = _check_block(raw, STX, "readout data block")
    if not inner.endswith(b"!\r\n"):
        raise FrameError(f"readout data block does not end in '!' CR LF: {_show(inner[-20:])}")
    content = inner[:-3]
    bad = [b for b in content if not (0x20 <= b <= 0x7E or b in (0x0D, 0x0A))]
    if bad:
        raise FrameError(f"readout data block contains the control byte 0x{bad[0]:02x}")
    sets: list[DataSet] = []
    for line in _lines(content.decode("ascii"), "readout data block"):
        sets.extend(decode_data_line(line))
    return Readout(tuple(sets))


# --- programming mode ----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandMessage:
    """`SOH C D [STX data ETX] BCC`, e.g. P1 (password), W1 (write), R1 (read), B0 (break)."""

    command: str
    command_type: str
    data: tuple[DataSet, ...] | None = None

    @property
    def name(self) -> str:
        return self.command + self.command_type

    def encode(self) -> bytes:
        if len(self.command) != 1 or self.command not in COMMANDS:
            raise ValueError(f"command {self.command!r} is not one of {', '.join(COMMANDS)}")
        if len(self.command_type) != 1 or not self.command_type.isdigit():
            raise ValueError(f"command type {self.command_type!r} is not one digit")
        body = self.name.encode("ascii")
        if self.data is not None:
            body += bytes([STX]) + "".join(d.encode() for d in self.data).encode("ascii")
        body += bytes([ETX])
        return bytes([SOH]) + body + bytes([bcc(body)])


BREAK = CommandMessage("B", "0")


def decode_command(raw: bytes) -> CommandMessage:
    inner = _check_block(raw, SOH, "command message")
    if len(inner) < 2:
        raise FrameError(f"command message {_show(raw)} has no command identifier")
    name = _text(inner[:2], "command identifier")
    if name[0] not in COMMANDS or not name[1].isdigit():
        raise FrameError(f"unknown command {name!r} in {_show(raw)}")
    rest = inner[2:]
    if not rest:
        return CommandMessage(name[0], name[1])
    if rest[0] != STX:
        raise FrameError(f"command {name}: expected STX before its data, got {_show(rest)}")
    text = _text(rest[1:], f"command {name} data")
    return CommandMessage(name[0], name[1], tuple(decode_data_line(text)) if text else ())


@dataclass(frozen=True)
class DataMessage:
    """`STX data ETX BCC`: the answer to a read command, or an error message such as (ER01)."""

    data_sets: tuple[DataSet, ...]

    @property
    def error(self) -> str | None:
        """The meter's error code if this is an error message, else None."""
        if self.data_sets and _ERROR_VALUE.fullmatch(self.data_sets[0].value):
            return self.data_sets[0].value
        return None

    def encode(self) -> bytes:
        body = "".join(d.encode() for d in self.data_sets).encode("ascii") + bytes([ETX])
        return bytes([STX]) + body + bytes([bcc(body)])


_ERROR_VALUE = re.compile(r"ER[0-9A-Z]*")


def decode_data_message(raw: bytes) -> DataMessage:
    inner = _check_block(raw, STX, "data message")
    bad = [b for b in inner if not (0x20 <= b <= 0x7E or b in (0x0D, 0x0A))]
    if bad:
        raise FrameError(f"data message contains the control byte 0x{bad[0]:02x}")
    text = inner.decode("ascii")
    lines = _lines(text, "data message") if "\n" in text or "\r" in text else [text]
    sets: list[DataSet] = []
    for line in lines:
        if line:
            sets.extend(decode_data_line(line))
    return DataMessage(tuple(sets))


class Control(Enum):
    """The one-byte answers in programming mode."""

    ACK = ACK
    NAK = NAK


ProgrammingReply = Control | CommandMessage | DataMessage


def decode_programming_reply(raw: bytes) -> ProgrammingReply:
    """Whatever a meter may answer in programming mode: ACK, NAK, a command or a data message."""
    if not raw:
        raise FrameError("empty reply")
    if raw[0] in (ACK, NAK):
        if len(raw) != 1:
            raise FrameError(f"ACK/NAK followed by extra bytes: {_show(raw)}")
        return Control(raw[0])
    if raw[0] == SOH:
        return decode_command(raw)
    if raw[0] == STX:
        return decode_data_message(raw)
    raise FrameError(f"reply starts with 0x{raw[0]:02x}, not ACK, NAK, SOH or STX: {_show(raw)}")


# --- meaning: OBIS codes and the Reading ---------------------------------------------------

_OBIS = re.compile(
    r"(?:\d{1,3}-\d{1,3}:)?([0-9A-Z]{1,3}\.[0-9A-Z]{1,3}(?:\.[0-9A-Z]{1,3})?)"
    r"(?:\*(\d{1,3})|&(\d{1,3}))?"
)

ENERGY_UNITS_WH = {"Wh": 1.0, "kWh": 1e3, "KWh": 1e3, "KWH": 1e3, "kwh": 1e3, "MWh": 1e6}
POWER_UNITS_W = {"W": 1.0, "kW": 1e3, "KW": 1e3, "kw": 1e3, "MW": 1e6}
VOLTAGE_UNITS_V = {"V": 1.0, "kV": 1e3}
CURRENT_UNITS_A = {"A": 1.0, "mA": 1e-3}

_NUMBER = re.compile(r"[+-]?\d{1,20}(?:\.\d{1,12})?")


def obis_key(address: str) -> str | None:
    """`C.D.E` of a current-value address (`1.8.0`, `1-0:1.8.0*255`), None for anything else."""
    match = _OBIS.fullmatch(address)
    if match is None or match.group(3) is not None:
        return None
    if match.group(2) is not None and match.group(2) != "255":
        return None  # a billing-period value, e.g. 1.8.0*01
    return match.group(1)


def number(data_set: DataSet, units: dict[str, float], what: str) -> float:
    """The value of `data_set` in the base unit of `units`, or FrameError saying why not."""
    unit = "" if data_set.unit is None else f"*{data_set.unit}"
    shown = f"{data_set.address}({data_set.value}{unit})"
    if _NUMBER.fullmatch(data_set.value) is None:
        raise FrameError(f"{what} line {shown}: {data_set.value!r} is not a decimal number")
    if data_set.unit not in units:
        raise FrameError(
            f"{what} line {shown}: unit {data_set.unit!r} is not one of {', '.join(units)}"
        )
    return float(data_set.value) * units[data_set.unit]


def relay_value(state: RelayState) -> str:
    """The 96.3.10 control state for `state`: 1 connected, 0 disconnected."""
    return "1" if state is RelayState.ON else "0"


def relay_state(value: str) -> RelayState:
    """The relay from a 96.3.10 control state (1 connected; 0 or 2 open)."""
    if value == "1":
        return RelayState.ON
    if value in ("0", "2"):
        return RelayState.OFF
    raise FrameError(f"relay state {RELAY_ADDRESS}({value}) is not 0, 1 or 2")


def meter_clock(time_value: str, date_value: str, utc_offset_min: int = 0) -> datetime:
    """The meter's clock from 0.9.1 (hhmmss) and 0.9.2 (YYMMDD), as a UTC datetime."""
    time_digits = time_value.replace(":", "")
    date_digits = date_value.replace("-", "").replace(".", "")
    if not (time_digits.isascii() and time_digits.isdigit() and len(time_digits) == 6):
        raise FrameError(f"meter time 0.9.1({time_value}) is not hhmmss")
    if not (date_digits.isascii() and date_digits.isdigit() and len(date_digits) in (6, 8)):
        raise FrameError(f"meter date 0.9.2({date_value}) is not YYMMDD")
    year = int(date_digits[:-4]) + (2000 if len(date_digits) == 6 else 0)
    try:
        local = datetime(
            year,
            int(date_digits[-4:-2]),
            int(date_digits[-2:]),
            int(time_digits[:2]),
            int(time_digits[2:4]),
            int(time_digits[4:]),
            tzinfo=timezone(timedelta(minutes=utc_offset_min)),
        )
    except ValueError as exc:
        raise FrameError(f"meter clock 0.9.2({date_value}) 0.9.1({time_value}): {exc}") from None
    return local.astimezone(UTC)


def readout_to_reading(readout: Readout, read_time: datetime, utc_offset_min: int = 0) -> Reading:
    """The Reading a readout carries; `read_time` stands in when the meter sends no clock."""
    values = readout.by_obis()

    def required(*keys: str) -> DataSet:
        for key in keys:
            if key in values:
                return values[key]
        raise FrameError(
            f"the readout has no {' or '.join(keys)} line (it has: "
            f"{', '.join(values) or 'no OBIS lines'}); is this meter configured to send it?"
        )

    meter_id = required("0.0.0", "C.1.0", "96.1.0").value.strip()
    if not meter_id:
        raise FrameError("the readout's meter id line is empty")
    if "16.7.0" in values:
        power_w = number(values["16.7.0"], POWER_UNITS_W, "active power")
    else:
        power_w = number(required("16.7.0", "1.7.0"), POWER_UNITS_W, "import power")
        if "2.7.0" in values:
            power_w -= number(values["2.7.0"], POWER_UNITS_W, "export power")
    relay = RelayState.ON  # a meter without a breaker always lets energy through
    if RELAY_ADDRESS in values:
        relay = relay_state(values[RELAY_ADDRESS].value)
    timestamp = read_time
    if "0.9.1" in values and "0.9.2" in values:
        timestamp = meter_clock(values["0.9.1"].value, values["0.9.2"].value, utc_offset_min)
    return Reading(
        meter_id=meter_id,
        timestamp=timestamp,
        import_wh=number(required("1.8.0"), ENERGY_UNITS_WH, "import energy"),
        export_wh=(
            number(values["2.8.0"], ENERGY_UNITS_WH, "export energy") if "2.8.0" in values else 0.0
        ),
        power_w=power_w,
        voltage_v=number(required("32.7.0", "12.7.0"), VOLTAGE_UNITS_V, "voltage"),
        current_a=number(required("31.7.0", "11.7.0"), CURRENT_UNITS_A, "current"),
        relay=relay,
    )
