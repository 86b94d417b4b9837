"""Modbus response frames (RTU and TCP), checked byte by byte. Pure: bytes in, verdicts out.

pymodbus decodes the frames, but it drops a frame with a bad CRC without a word and waits for
its timeout. The driver runs every incoming buffer through `check_response` first, so a bad
CRC, a stranger's unit id or a garbled header becomes a `FrameError` at once, naming what was
wrong, and a truncated answer can be told apart from silence.
"""

from __future__ import annotations

from dataclasses import dataclass

from meterchain.meters.errors import FrameError

FUNCTION_NAMES: dict[int, str] = {
    1: "read coils",
    2: "read discrete inputs",
    3: "read holding registers",
    4: "read input registers",
    5: "write single coil",
    6: "write single register",
    15: "write multiple coils",
    16: "write multiple registers",
}

#: Modbus exception codes: (name, what it usually means for a meter reader).
EXCEPTION_CODES: dict[int, tuple[str, str]] = {
    1: ("illegal function", "the meter does not support this function code"),
    2: (
        "illegal data address",
        "the meter has no such registers; check the register map and the unit id",
    ),
    3: ("illegal data value", "the meter refused the value or the register count"),
    4: ("server device failure", "the meter failed while answering; check it"),
    5: ("acknowledge", "the meter accepted a long request and is still working on it"),
    6: ("server device busy", "the meter is busy; try again later"),
    8: ("memory parity error", "the meter found a fault in its memory"),
    10: ("gateway path unavailable", "the gateway has no route to this unit id"),
    11: (
        "gateway target device failed to respond",
        "no device answered behind the gateway; check the unit id and the RS-485 side",
    ),
}

RTU_OVERHEAD = 3  # unit id + CRC-16
MBAP_SIZE = 7  # transaction id, protocol id, length, unit id


def function_name(code: int) -> str:
    return FUNCTION_NAMES.get(code, f"function {code}")


def describe_exception(code: int) -> str:
    """`2 (illegal data address: the meter has no such registers; …)`."""
    name, meaning = EXCEPTION_CODES.get(code, ("unknown exception", "see the meter's manual"))
    return f"{code} ({name}: {meaning})"


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (reflected polynomial 0xA001, start 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """A complete RTU frame: unit id, PDU, CRC (low byte first)."""
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def tcp_frame(transaction_id: int, unit: int, pdu: bytes) -> bytes:
    """A complete Modbus TCP frame: MBAP header and PDU."""
    header = transaction_id.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big")
    return header + bytes([unit]) + pdu


@dataclass(frozen=True)
class Expected:
    """What the answer to one request must look like."""

    framing: str  # "rtu" or "tcp"
    unit: int
    function: int
    pdu_size: int  # a normal answer's PDU, function code included
    transaction_id: int | None = None  # TCP only; None accepts any

    def frame_size(self, exception: bool) -> int:
        pdu = 2 if exception else self.pdu_size
        return pdu + (RTU_OVERHEAD if self.framing == "rtu" else MBAP_SIZE)


def expected_response(
    framing: str, unit: int, function: int, count: int, transaction_id: int | None = None
) -> Expected:
    """The shape of the answer to `function` over `count` registers or coils."""
    if function in (1, 2):
        pdu_size = 2 + (count + 7) // 8
    elif function in (3, 4):
        pdu_size = 2 + 2 * count
    elif function in (5, 6, 15, 16):
        pdu_size = 5
    else:
        raise ValueError(f"no response shape known for function {function}")
    return Expected(framing, unit, function, pdu_size, transaction_id)


def _show(data: bytes, limit: int = 32) -> str:
    shown = data[:limit].hex(" ")
    return shown + (f" … ({len(data)} bytes)" if len(data) > limit else "")


def check_response(buffer: bytes, expected: Expected) -> int | None:
    """Size of the complete answer at the start of `buffer`; None while bytes are missing.

    Raises FrameError as soon as the bytes cannot be the expected answer.
    """
    if expected.framing == "rtu":
        return _check_rtu(buffer, expected)
    return _check_tcp(buffer, expected)


def _check_pdu_start(pdu: bytes, expected: Expected, frame: bytes) -> bool | None:
    """Whether the PDU is an exception answer (None: not enough bytes to tell)."""
    if not pdu:
        return None
    function = pdu[0]
    if function == expected.function | 0x80:
        return True
    if function != expected.function:
        raise FrameError(
            f"the answer carries function code {function} where {expected.function} "
            f"({function_name(expected.function)}) was expected: {_show(frame)}"
        )
    if expected.function in (1, 2, 3, 4) and len(pdu) >= 2 and pdu[1] != expected.pdu_size - 2:
        raise FrameError(
            f"the answer's byte count is {pdu[1]}, expected {expected.pdu_size - 2}: {_show(frame)}"
        )
    return False


def _check_rtu(buffer: bytes, expected: Expected) -> int | None:
    if not buffer:
        return None
    if buffer[0] != expected.unit:
        raise FrameError(
            f"an answer from unit {buffer[0]} where unit {expected.unit} was asked "
            f"(noise on the line?): {_show(buffer)}"
        )
    exception = _check_pdu_start(buffer[1:], expected, buffer)
    if exception is None:
        return None
    size = expected.frame_size(exception)
    if len(buffer) < size:
        return None
    sent = int.from_bytes(buffer[size - 2 : size], "little")
    computed = crc16(buffer[: size - 2])
    if sent != computed:
        raise FrameError(
            f"CRC mismatch: the frame says {sent:#06x}, its bytes give {computed:#06x} "
            f"(noise, wrong baud rate or parity?): {_show(buffer[:size])}"
        )
    return size


def _check_tcp(buffer: bytes, expected: Expected) -> int | None:
    if len(buffer) >= 2 and expected.transaction_id is not None:
        transaction_id = int.from_bytes(buffer[0:2], "big")
        if transaction_id != expected.transaction_id:
            raise FrameError(
                f"an answer to transaction {transaction_id} where {expected.transaction_id} "
                f"was expected: {_show(buffer)}"
            )
    if len(buffer) >= 4 and buffer[2:4] != b"\x00\x00":
        raise FrameError(
            f"protocol id {int.from_bytes(buffer[2:4], 'big')} in the MBAP header, not 0 "
            f"(is this a Modbus TCP server?): {_show(buffer)}"
        )
    if len(buffer) < MBAP_SIZE:
        return None
    length = int.from_bytes(buffer[4:6], "big")
    if buffer[6] != expected.unit:
        raise FrameError(
            f"an answer from unit {buffer[6]} where unit {expected.unit} was asked: {_show(buffer)}"
        )
    exception = _check_pdu_start(buffer[MBAP_SIZE:], expected, buffer)
    if exception is None:
        return None
    size = expected.frame_size(exception)
    if length != size - 6:
        raise FrameError(
            f"the MBAP header announces {length - 1} PDU bytes, the answer needs "
            f"{size - MBAP_SIZE}: {_show(buffer)}"
        )
    return size if len(buffer) >= size else None
