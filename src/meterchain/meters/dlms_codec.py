"""DLMS/COSEM application layer, pure: the object list, A-XDR data, the TCP wrapper, APDU checks.

The APDUs themselves are dlms-cosem's classes (AARQ/AARE, Get/Action requests and responses,
Release). Around them this module adds what a reader of untrusted bytes needs: a wrapper-header
check, an A-XDR data decoder that never reads past its input or loops on a forged count, and a
guard that turns any failure of the library's parsers into `FrameError`.

dlms-cosem's own A-XDR decoders trust element counts and read past the end of their input
without noticing: a forged selective-access descriptor (an array "of 2^31 - 1 elements" in
eight bytes, or a structure cut short) makes them allocate or loop without end. So no request
reaches the library before `check_request` has walked all of it with the bounded decoder
(every count is checked against the bytes that are left, nesting is limited), and the parts
the library would have to parse as A-XDR data (selective-access descriptors) are taken out.
The work one request can cause is therefore linear in its length, which the links cap.

Some of the library's parsers print() what they fail on; `dlms_cosem_quietly` keeps that off
stdout (the command line's `--json` output) and logs it at debug level instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any, TypeAlias

import structlog
from dlms_cosem import enumerations as dlms_enums
from dlms_cosem.connection import XDlmsApduFactory
from dlms_cosem.protocol import wrappers

from meterchain.meters.errors import FrameError


def quiet_dlms_cosem_logs() -> None:
    """dlms-cosem logs every APDU through structlog, which by default prints to stdout (and
    would corrupt `meterchain meter read --json`). Unless the application configured structlog
    itself, keep only its warnings."""
    if not structlog.is_configured():
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        )


quiet_dlms_cosem_logs()

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dlms_cosem_quietly() -> Iterator[None]:
    """Run dlms-cosem code with whatever it print()s caught and logged at debug level.

    It prints, for one, the conformance bytes of an InitiateResponse it cannot parse. Only
    synchronous library calls go inside (stdout is the process's, swapped for the duration).
    """
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        yield
    if captured.getvalue():
        log.debug("dlms-cosem printed: %s", captured.getvalue().strip())


# --- the object list ------------------------------------------------------------------------

PUBLIC_CLIENT = 16  # client SAP of the public client: no authentication
LLS_CLIENT = 17  # client SAP this project uses for low-level security (password)
MANAGEMENT_LOGICAL_DEVICE = 1  # server SAP


class CosemClass(IntEnum):
    """COSEM interface classes this project reads."""

    DATA = 1
    REGISTER = 3
    CLOCK = 8
    DISCONNECT_CONTROL = 70


class Unit(IntEnum):
    """DLMS unit codes (Blue Book, table "enumerated values for physical units")."""

    W = 27
    WH = 30
    A = 33
    V = 35


LOGICAL_DEVICE_NAME = "0.0.42.0.0.255"
CLOCK = "0.0.1.0.0.255"
ACTIVE_ENERGY_IMPORT = "1.0.1.8.0.255"
ACTIVE_ENERGY_EXPORT = "1.0.2.8.0.255"
ACTIVE_POWER = "1.0.16.7.0.255"  # import − export, signed
VOLTAGE_L1 = "1.0.32.7.0.255"
CURRENT_L1 = "1.0.31.7.0.255"
DISCONNECT_CONTROL = "0.0.96.3.10.255"

REMOTE_DISCONNECT = 1  # methods of the disconnect control object
REMOTE_RECONNECT = 2

# The registers a reading needs, with the unit each must report.
REGISTER_UNITS: dict[str, Unit] = {
    ACTIVE_ENERGY_IMPORT: Unit.WH,
    ACTIVE_ENERGY_EXPORT: Unit.WH,
    ACTIVE_POWER: Unit.W,
    VOLTAGE_L1: Unit.V,
    CURRENT_L1: Unit.A,
}


def obis_bytes(obis: str) -> bytes:
    """'1.0.1.8.0.255' → 6 bytes. Accepts '.', ':', '-' and '*' as separators."""
    parts = obis.replace(":", ".").replace("-", ".").replace("*", ".").split(".")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"OBIS code {obis!r} must be six numbers such as 1.0.1.8.0.255") from None
    if len(values) == 5:
        values.append(255)
    if len(values) != 6 or not all(0 <= value <= 255 for value in values):
        raise ValueError(f"OBIS code {obis!r} must be six numbers 0-255 such as 1.0.1.8.0.255")
    return bytes(values)


def obis_text(raw: bytes) -> str:
    return ".".join(str(value) for value in raw)


@dataclass(frozen=True)
class AttributeRef:
    """One attribute of one COSEM object: what a GET names."""

    class_id: int
    obis: str
    attribute: int

    def __str__(self) -> str:
        return f"{self.obis} (class {self.class_id}) attribute {self.attribute}"


def result_name(code: int) -> str:
    """'object-undefined' for 4: the DLMS name of a data-access or action result."""
    for enum in (dlms_enums.DataAccessResult, dlms_enums.ActionResultStatus):
        try:
            return enum_name(enum(code))
        except ValueError:
            continue
    return f"result {code}"


def enum_name(value: Any) -> str:
    """'authentication-failed' for a dlms-cosem enum member."""
    name = getattr(value, "name", None)
    return str(name).lower().replace("_", "-") if name else str(value)


# --- A-XDR data -----------------------------------------------------------------------------

Value: TypeAlias = bool | int | float | bytes | str | list["Value"] | None

_FIXED_INTS: dict[int, tuple[int, bool]] = {
    5: (4, True),  # double-long
    6: (4, False),  # double-long-unsigned
    15: (1, True),  # integer
    16: (2, True),  # long
    17: (1, False),  # unsigned
    18: (2, False),  # long-unsigned
    20: (8, True),  # long64
    21: (8, False),  # long64-unsigned
    22: (1, False),  # enum
}
_MAX_DEPTH = 8


class _Reader:
    def __init__(self, raw: bytes, offset: int = 0) -> None:
        self.raw = raw
        self.at = offset

    def take(self, count: int, what: str) -> bytes:
        if count < 0 or self.at + count > len(self.raw):
            raise FrameError(
                f"DLMS data truncated: {what} needs {count} bytes, "
                f"{len(self.raw) - self.at} are left"
            )
        part = self.raw[self.at : self.at + count]
        self.at += count
        return part

    def length(self, what: str) -> int:
        first = self.take(1, what)[0]
        if first < 0x80:
            return first
        size = first & 0x7F
        if size == 0 or size > 4:
            raise FrameError(f"DLMS data: bad length encoding 0x{first:02x} for {what}")
        return int.from_bytes(self.take(size, what), "big")

    def value(self, depth: int = 0) -> Value:
        if depth > _MAX_DEPTH:
            raise FrameError(f"DLMS data nested deeper than {_MAX_DEPTH} levels")
        tag = self.take(1, "data tag")[0]
        if tag == 0:
            return None
        if tag in (1, 2):  # array, structure
            count = self.length("element count")
            if count > len(self.raw) - self.at:  # every element takes at least one byte
                raise FrameError(
                    f"DLMS data announces {count} elements but only "
                    f"{len(self.raw) - self.at} bytes follow"
                )
            return [self.value(depth + 1) for _ in range(count)]
        if tag == 3:
            return self.take(1, "boolean")[0] != 0
        if tag in _FIXED_INTS:
            size, signed = _FIXED_INTS[tag]
            return int.from_bytes(self.take(size, "integer"), "big", signed=signed)
        if tag in (9, 10, 12, 13):  # octet-, visible-, utf8-string, bcd
            raw = self.take(self.length("string length"), "string")
            if tag == 9 or tag == 13:
                return bytes(raw)
            return raw.decode("utf-8" if tag == 12 else "ascii", errors="replace")
        if tag == 4:  # bit-string: length in bits
            bits = self.length("bit-string length")
            return bytes(self.take((bits + 7) // 8, "bit-string"))
        if tag == 23:
            return float(struct.unpack(">f", self.take(4, "float32"))[0])
        if tag == 24:
            return float(struct.unpack(">d", self.take(8, "float64"))[0])
        if tag == 25:  # date-time as its own type
            return bytes(self.take(12, "date-time"))
        if tag == 26:
            return bytes(self.take(5, "date"))
        if tag == 27:
            return bytes(self.take(4, "time"))
        raise FrameError(f"DLMS data type tag {tag} is not supported")


def decode_data(raw: bytes) -> Value:
    """Decode exactly one A-XDR `Data` value that fills `raw`."""
    reader = _Reader(raw)
    value = reader.value()
    if reader.at != len(raw):
        raise FrameError(f"DLMS data has {len(raw) - reader.at} bytes after its value")
    return value


def scaled(value: Value, scaler: int, what: str) -> float:
    """value × 10^scaler, the way a Register's scaler_unit says to read its value."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError(f"{what}: expected a number, got {value!r}")
    result = float(value) * 10.0**scaler
    if not math.isfinite(result):
        raise FrameError(f"{what}: {value!r} × 10^{scaler} is not a finite number")
    return result


def scaler_unit(value: Value, what: str) -> tuple[int, int]:
    """(scaler, unit) from a Register's attribute 3: structure {integer, enum}."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    ):
        raise FrameError(f"{what}: scaler_unit must be a structure of two integers, got {value!r}")
    scaler, unit = value
    assert isinstance(scaler, int) and isinstance(unit, int)
    return scaler, unit


# --- date-time (12 octets) --------------------------------------------------------------------

_NOT_SPECIFIED_DEVIATION = -0x8000


def encode_datetime(moment: datetime) -> bytes:
    """A COSEM date-time in UTC (deviation 0, clock status OK)."""
    utc = moment.astimezone(UTC)
    return (
        utc.year.to_bytes(2, "big")
        + bytes([utc.month, utc.day, utc.isoweekday(), utc.hour, utc.minute, utc.second])
        + bytes([utc.microsecond // 10_000])
        + (0).to_bytes(2, "big", signed=True)
        + b"\x00"
    )


def decode_datetime(raw: Value) -> datetime:
    """A COSEM date-time as an aware UTC datetime.

    The deviation is "minutes from local time to UTC" (UTC = local + deviation); when it is not
    specified the meter is taken to keep UTC. Unspecified hundredths read as 0.
    """
    if not isinstance(raw, bytes) or len(raw) != 12:
        raise FrameError(f"clock: a date-time is 12 octets, got {raw!r}")
    year = int.from_bytes(raw[0:2], "big")
    month, day, _weekday, hour, minute, second, hundredths = raw[2:9]
    deviation = int.from_bytes(raw[9:11], "big", signed=True)
    if hundredths == 0xFF:
        hundredths = 0
    try:
        local = datetime(year, month, day, hour, minute, second, hundredths * 10_000, tzinfo=UTC)
    except ValueError as exc:
        raise FrameError(f"clock: {raw.hex()} is not a valid date-time ({exc})") from None
    if deviation == _NOT_SPECIFIED_DEVIATION:
        return local
    if not -720 <= deviation <= 720:
        raise FrameError(f"clock: deviation {deviation} min is outside ±720")
    return local + timedelta(minutes=deviation)


# --- TCP wrapper (IEC 62056-47) ---------------------------------------------------------------

WRAPPER_VERSION = 1
WRAPPER_HEADER_BYTES = 8
MAX_APDU_BYTES = 0xFFFF


@dataclass(frozen=True)
class WrapperHeader:
    source_wport: int
    destination_wport: int
    length: int


def encode_wrapper(source_wport: int, destination_wport: int, apdu: bytes) -> bytes:
    """version 1 | source wPort | destination wPort | length | APDU (dlms-cosem's wrapper)."""
    header = wrappers.WrapperHeader(
        source_wport=source_wport, destination_wport=destination_wport, length=len(apdu)
    )
    return bytes(wrappers.WrapperProtocolDataUnit(apdu, header).to_bytes())


def decode_wrapper_header(raw: bytes, max_length: int = MAX_APDU_BYTES) -> WrapperHeader:
    """Check the 8-byte wrapper header that precedes every APDU on TCP."""
    if len(raw) != WRAPPER_HEADER_BYTES:
        raise FrameError(f"DLMS wrapper header needs 8 bytes, got {len(raw)}")
    version, source, destination, length = struct.unpack(">HHHH", raw)
    if version != WRAPPER_VERSION:
        raise FrameError(
            f"DLMS wrapper version {version} (header {raw.hex()}); expected 1: the peer does "
            "not speak the DLMS TCP wrapper (is it HDLC over TCP, or another protocol?)"
        )
    if length == 0 or length > max_length:
        raise FrameError(
            f"DLMS wrapper announces an APDU of {length} bytes (allowed 1-{max_length})"
        )
    return WrapperHeader(source, destination, length)


# --- APDUs ----------------------------------------------------------------------------------

# APDU tags a client may receive, and the ones a server may receive.
RESPONSE_TAGS = {
    0x61: "AARE",
    0x63: "RLRE",
    0xC4: "get-response",
    0xC7: "action-response",
    0xD8: "exception-response",
}
REQUEST_TAGS = {
    0x60: "AARQ",
    0x62: "RLRQ",
    0xC0: "get-request",
    0xC1: "set-request",
    0xC3: "action-request",
}
GET_RESPONSE_NORMAL = 1
GET_RESPONSE_WITH_LIST = 3


def decode_apdu(raw: bytes, allowed: dict[int, str]) -> Any:
    """Parse an APDU with dlms-cosem, allowing only the tags in `allowed`.

    Get-responses with a list are checked with our bounded decoder first: the library's data
    parser trusts element counts and can spin for a very long time on a forged one. Requests
    pass `check_request` first, and the library parses what it returns (the request without
    its selective-access descriptors; `decode_request` says which attributes had one).
    """
    if not raw:
        raise FrameError("empty DLMS APDU")
    tag = raw[0]
    if tag not in allowed:
        raise FrameError(
            f"unexpected DLMS APDU tag 0x{tag:02x}; expected one of "
            + ", ".join(f"{name} (0x{t:02x})" for t, name in allowed.items())
        )
    if tag in REQUEST_TAGS:
        raw = check_request(raw, allowed).library_bytes
    elif tag == 0xC4 and len(raw) > 1 and raw[1] == GET_RESPONSE_WITH_LIST:
        get_with_list_results(raw)
    try:
        with dlms_cosem_quietly():
            return XDlmsApduFactory.apdu_from_bytes(bytes(raw))
    except Exception as exc:  # the library raises many types on malformed input
        raise FrameError(
            f"malformed DLMS {allowed[tag]} APDU ({type(exc).__name__}: {exc}): {raw[:32].hex()}"
        ) from None


# --- requests, checked before the library sees them ----------------------------------------

GET_REQUEST, SET_REQUEST, ACTION_REQUEST = 0xC0, 0xC1, 0xC3
GET_NORMAL, GET_NEXT, GET_WITH_LIST = 1, 2, 3
SET_NORMAL = ACTION_NORMAL = 1
DESCRIPTOR_BYTES = 9  # class id (2), OBIS (6), attribute or method id (1)
MAX_LIST_ATTRIBUTES = 0x7F  # dlms-cosem reads a get-with-list's count as one byte


@dataclass(frozen=True)
class CheckedRequest:
    """A request our bounded decoder walked to its end.

    `library_bytes` is what dlms-cosem may parse: the request with every selective-access
    descriptor taken out (its flag set to 0). `selective[i]` says whether the i-th attribute of
    a get or set asked for selective access, which this meter answers without reading.
    """

    library_bytes: bytes
    selective: tuple[bool, ...] = ()


def check_request(raw: bytes, allowed: dict[int, str] = REQUEST_TAGS) -> CheckedRequest:
    """Walk a request APDU with the bounded decoder; `FrameError` for anything malformed.

    AARQ and RLRQ are BER, whose lengths the library's parser checks against its input; the
    xDLMS requests (get, set, action) are walked field by field here, A-XDR data included.
    """
    if not raw:
        raise FrameError("empty DLMS APDU")
    tag = raw[0]
    if tag not in allowed or tag not in REQUEST_TAGS:
        raise FrameError(f"unexpected DLMS request tag 0x{tag:02x}")
    if tag not in (GET_REQUEST, SET_REQUEST, ACTION_REQUEST):
        return CheckedRequest(raw)
    reader = _Reader(raw, 1)
    kind = reader.take(1, "request type")[0]
    reader.take(1, "invoke-id")
    out = bytearray(raw[:3])
    selective: list[bool] = []
    name = REQUEST_TAGS[tag]

    def attribute() -> None:
        """A descriptor and its selective-access option; the option is left out of `out`."""
        out.extend(reader.take(DESCRIPTOR_BYTES, "attribute descriptor"))
        has_selection = reader.take(1, "selective-access flag")[0]
        if has_selection:
            reader.take(1, "access selector")
            reader.value()  # the access parameters: one Data value, bounded
        selective.append(bool(has_selection))
        out.append(0)

    if tag == GET_REQUEST and kind == GET_NORMAL:
        attribute()
    elif tag == GET_REQUEST and kind == GET_NEXT:
        out.extend(reader.take(4, "block number"))
    elif tag == GET_REQUEST and kind == GET_WITH_LIST:
        count = reader.length("attribute count")
        if count > MAX_LIST_ATTRIBUTES or count * (DESCRIPTOR_BYTES + 1) > len(raw) - reader.at:
            raise FrameError(
                f"get-request-with-list announces {count} attributes in {len(raw)} bytes"
            )
        out.append(count)
        for _ in range(count):
            attribute()
    elif tag == SET_REQUEST and kind == SET_NORMAL:
        attribute()
        start = reader.at
        reader.value()  # the value to set
        out.extend(raw[start : reader.at])
    elif tag == ACTION_REQUEST and kind == ACTION_NORMAL:
        out.extend(reader.take(DESCRIPTOR_BYTES, "method descriptor"))
        has_parameters = reader.take(1, "method-invocation-parameters flag")[0]
        out.append(1 if has_parameters else 0)
        if has_parameters:
            start = reader.at
            reader.value()
            out.extend(raw[start : reader.at])
    else:
        raise FrameError(f"{name} of type {kind} is not supported")
    if reader.at != len(raw):
        raise FrameError(f"{name} has {len(raw) - reader.at} bytes after its end")
    return CheckedRequest(bytes(out), tuple(selective))


def decode_request(raw: bytes) -> tuple[Any, tuple[bool, ...]]:
    """A request as dlms-cosem's class (parsed after `check_request`), and which of its
    attributes asked for selective access."""
    checked = check_request(raw)
    return decode_apdu(checked.library_bytes, REQUEST_TAGS), checked.selective


@dataclass(frozen=True)
class AccessError:
    """A data-access-result other than success, in place of a value."""

    code: int

    @property
    def name(self) -> str:
        return result_name(self.code)


def get_with_list_results(raw: bytes) -> list[Value | AccessError]:
    """The results of a Get-Response-With-List, each a value or an `AccessError`."""
    reader = _Reader(raw)
    head = reader.take(3, "get-response header")
    if head[0] != 0xC4 or head[1] != GET_RESPONSE_WITH_LIST:
        raise FrameError(f"not a get-response-with-list: {raw[:3].hex()}")
    count = reader.length("result count")
    if count > len(raw) - reader.at:
        raise FrameError(f"get-response-with-list announces {count} results in {len(raw)} bytes")
    results: list[Value | AccessError] = []
    for _ in range(count):
        choice = reader.take(1, "result choice")[0]
        if choice == 0:
            results.append(reader.value())
        elif choice == 1:
            results.append(AccessError(reader.take(1, "data-access-result")[0]))
        else:
            raise FrameError(f"get-response-with-list: result choice {choice} is neither 0 nor 1")
    if reader.at != len(raw):
        raise FrameError(f"get-response-with-list has {len(raw) - reader.at} trailing bytes")
    return results


def get_normal_result(raw: bytes) -> Value | AccessError:
    """The result of a Get-Response-Normal: the value, or an `AccessError`."""
    reader = _Reader(raw)
    head = reader.take(4, "get-response header")
    if head[0] != 0xC4 or head[1] != GET_RESPONSE_NORMAL:
        raise FrameError(f"not a get-response-normal: {raw[:4].hex()}")
    if head[3] == 1:
        code = reader.take(1, "data-access-result")[0]
        if reader.at != len(raw):
            raise FrameError("get-response-normal has bytes after its data-access-result")
        return AccessError(code)
    if head[3] != 0:
        raise FrameError(f"get-response-normal: result choice {head[3]} is neither 0 nor 1")
    return decode_data(raw[4:])


def invoke_id(raw: bytes) -> int:
    """The invoke-id of a get/set/action request or response (byte 2, low 4 bits)."""
    if len(raw) < 3:
        raise FrameError(f"DLMS APDU of {len(raw)} bytes is too short to carry an invoke-id")
    return raw[2] & 0x0F
