"""HDLC frames for DLMS/COSEM on a serial line (IEC 62056-46): a strict pure decoder, and encoders.

Frames are built with dlms-cosem's frame classes, so they are byte for byte what that library
sends. Decoding is ours: the library reads a corrupt frame as "need more data" (a silent wait
for the timeout), where a meter reader needs `FrameError` saying what was wrong with it.

Frame: flag 7E | format A0+len (2) | destination (1-4) | source (1-4) | control (1)
       | [HCS (2) | information] | FCS (2) | flag 7E
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dlms_cosem.crc import CRCCCITT
from dlms_cosem.hdlc import address as hdlc_address
from dlms_cosem.hdlc import frames as hdlc_frames

from meterchain.meters.errors import FrameError

FLAG = 0x7E
LLC_REQUEST = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"
# Without parameter negotiation in SNRM/UA both sides assume 128-byte information fields and a
# window of one frame (IEC 62056-46, 6.4.4.4.3.2).
DEFAULT_MAX_INFO_LENGTH = 128
MIN_FRAME_BYTES = 9  # flag, format (2), destination, source, control, FCS (2), flag
MAX_FRAME_BYTES = 2 + 0x7FF  # the 11-bit length field counts everything between the flags

_CRC = CRCCCITT()

# The UA of a meter that accepts the default link parameters, stated explicitly (as meters do):
# max information field length transmit/receive 128, window size transmit/receive 1.
UA_DEFAULT_PARAMETERS = bytes.fromhex("8180140502008006020080070400000001080400000001")


class FrameKind(StrEnum):
    """The HDLC frame types that DLMS/COSEM uses."""

    I = "I"  # noqa: E741 - the name the standard uses
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    DISC = "DISC"
    UA = "UA"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


_UNNUMBERED = {
    0x83: FrameKind.SNRM,
    0x43: FrameKind.DISC,
    0x63: FrameKind.UA,
    0x0F: FrameKind.DM,
    0x87: FrameKind.FRMR,
    0x03: FrameKind.UI,
}


@dataclass(frozen=True)
class HdlcFrame:
    """One decoded frame. Addresses are logical addresses (upper HDLC address)."""

    kind: FrameKind
    destination: int
    source: int
    control: int
    segmented: bool
    information: bytes

    @property
    def poll_final(self) -> bool:
        return bool(self.control & 0x10)

    @property
    def send_sequence(self) -> int:
        """N(S) of an I-frame."""
        return (self.control >> 1) & 0x07

    @property
    def receive_sequence(self) -> int:
        """N(R) of an I-, RR- or RNR-frame: the next frame the sender expects."""
        return (self.control >> 5) & 0x07


def crc16(data: bytes) -> bytes:
    """The HCS/FCS of `data` (CRC-16/X.25, as sent on the wire) via dlms-cosem's CRC."""
    return bytes(_CRC.calculate_for(data))


def frame_length(format_field: bytes) -> int:
    """Total bytes of a frame, both flags included, from its 2-byte format field."""
    if len(format_field) != 2:
        raise FrameError(f"HDLC format field needs 2 bytes, got {len(format_field)}")
    if format_field[0] & 0xF0 != 0xA0:
        raise FrameError(
            f"HDLC format field 0x{format_field.hex()} is not frame format type 3 (0xA…); "
            "the line is noisy or the device does not speak DLMS over HDLC"
        )
    length = int.from_bytes(format_field, "big") & 0x07FF
    if length + 2 < MIN_FRAME_BYTES:
        raise FrameError(f"HDLC format field announces {length} bytes, too short for a frame")
    return length + 2


def _address(raw: bytes, start: int, end: int, what: str) -> tuple[int, int]:
    """(logical address, bytes used) of the address field at `start`; LSB 1 ends the field."""
    for used in range(1, 5):
        position = start + used - 1
        if position >= end:
            break
        if raw[position] & 0x01:
            if used == 3:
                raise FrameError(f"HDLC {what} address has 3 bytes; only 1, 2 or 4 are valid")
            field = raw[start : start + used]
            if used == 4:
                return ((field[0] >> 1) << 7) | (field[1] >> 1), used
            return field[0] >> 1, used
    raise FrameError(f"HDLC {what} address field does not end within 4 bytes")


def _kind(control: int) -> FrameKind:
    if control & 0x01 == 0:
        return FrameKind.I
    if control & 0x03 == 0x01:
        supervisory = control & 0x0F
        if supervisory == 0x01:
            return FrameKind.RR
        if supervisory == 0x05:
            return FrameKind.RNR
        raise FrameError(f"HDLC supervisory frame 0x{control:02x} (REJ/SREJ) is not used by DLMS")
    kind = _UNNUMBERED.get(control & ~0x10 & 0xFF)
    if kind is None:
        raise FrameError(f"unknown HDLC control field 0x{control:02x}")
    return kind


def decode_frame(raw: bytes) -> HdlcFrame:
    """Check flags, length, addresses, HCS and FCS of one frame and decode it."""
    if len(raw) < MIN_FRAME_BYTES:
        raise FrameError(
            f"HDLC frame of {len(raw)} bytes is truncated; a frame has at least "
            f"{MIN_FRAME_BYTES} bytes"
        )
    if raw[0] != FLAG or raw[-1] != FLAG:
        raise FrameError(
            f"HDLC frame does not start and end with the flag 7E ({raw[:1].hex()}…{raw[-1:].hex()})"
        )
    expected = frame_length(raw[1:3])
    if expected != len(raw):
        raise FrameError(
            f"HDLC frame length field says {expected} bytes but the frame has {len(raw)}"
        )
    fcs_at = len(raw) - 3
    destination, destination_length = _address(raw, 3, fcs_at, "destination")
    source_at = 3 + destination_length
    source, source_length = _address(raw, source_at, fcs_at, "source")
    control_at = source_at + source_length
    if control_at >= fcs_at:
        raise FrameError("HDLC frame ends before its control field")
    control = raw[control_at]
    fcs = crc16(raw[1:fcs_at])
    if fcs != raw[fcs_at : fcs_at + 2]:
        raise FrameError(
            f"HDLC FCS mismatch: the frame carries {raw[fcs_at : fcs_at + 2].hex()}, "
            f"computed {fcs.hex()}; the frame was corrupted (noisy line, wrong baud rate?)"
        )
    information = b""
    rest = fcs_at - (control_at + 1)
    if rest:
        hcs_at = control_at + 1
        if rest < 2:
            raise FrameError("HDLC frame has 1 byte where a header check sequence (HCS) belongs")
        hcs = crc16(raw[1:hcs_at])
        if hcs != raw[hcs_at : hcs_at + 2]:
            raise FrameError(
                f"HDLC HCS mismatch: the header carries {raw[hcs_at : hcs_at + 2].hex()}, "
                f"computed {hcs.hex()}; the frame header was corrupted"
            )
        information = bytes(raw[hcs_at + 2 : fcs_at])
    return HdlcFrame(
        kind=_kind(control),
        destination=destination,
        source=source,
        control=control,
        segmented=bool(raw[1] & 0x08),
        information=information,
    )


def client_address(logical: int) -> Any:
    """dlms-cosem's address object for a client SAP (1 byte)."""
    return hdlc_address.HdlcAddress(logical_address=logical, address_type="client")


def server_address(logical: int) -> Any:
    """dlms-cosem's address object for a server's logical device (no physical address)."""
    return hdlc_address.HdlcAddress(logical_address=logical, address_type="server")


def _address_bytes(address: Any) -> bytes:
    return bytes(address.to_bytes())


def _to_bytes(frame: Any) -> bytes:
    return bytes(frame.to_bytes())


def encode_snrm(server: int, client: int) -> bytes:
    return _to_bytes(
        hdlc_frames.SetNormalResponseModeFrame(server_address(server), client_address(client))
    )


def encode_disc(server: int, client: int) -> bytes:
    return _to_bytes(hdlc_frames.DisconnectFrame(server_address(server), client_address(client)))


def encode_ua(client: int, server: int, parameters: bytes = UA_DEFAULT_PARAMETERS) -> bytes:
    """The meter's UA to SNRM or DISC (sent by the server)."""
    frame = hdlc_frames.UnNumberedAcknowledgmentFrame(
        client_address(client), server_address(server), parameters or None
    )
    return _to_bytes(frame)


def encode_dm(client: int, server: int) -> bytes:
    """Disconnected mode: the meter's answer to frames while no link is set up.

    dlms-cosem has no DM frame class; this uses the same format, addresses and CRC.
    """
    body = _address_bytes(client_address(client)) + _address_bytes(server_address(server)) + b"\x1f"
    header = (0xA000 | (len(body) + 4)).to_bytes(2, "big") + body
    return bytes([FLAG]) + header + crc16(header) + bytes([FLAG])


def encode_rr(destination: Any, source: Any, receive_sequence: int) -> bytes:
    return _to_bytes(
        hdlc_frames.ReceiveReadyFrame(destination, source, receive_sequence_number=receive_sequence)
    )


def encode_i(
    destination: Any,
    source: Any,
    information: bytes,
    send_sequence: int,
    receive_sequence: int,
    segmented: bool,
) -> bytes:
    frame = hdlc_frames.InformationFrame(
        destination,
        source,
        information,
        send_sequence_number=send_sequence,
        receive_sequence_number=receive_sequence,
        segmented=segmented,
        final=True,
    )
    return _to_bytes(frame)


def segments(payload: bytes, max_info_length: int = DEFAULT_MAX_INFO_LENGTH) -> list[bytes]:
    """`payload` cut into information fields no longer than `max_info_length`."""
    if not payload:
        return [b""]
    return [payload[i : i + max_info_length] for i in range(0, len(payload), max_info_length)]


@dataclass(frozen=True)
class LinkParameters:
    """HDLC parameters a UA may carry; absent ones keep the defaults of IEC 62056-46."""

    max_info_transmit: int = DEFAULT_MAX_INFO_LENGTH
    max_info_receive: int = DEFAULT_MAX_INFO_LENGTH
    window_transmit: int = 1
    window_receive: int = 1


def decode_link_parameters(information: bytes) -> LinkParameters:
    """Parse the parameter negotiation field (81 80 len {id len value}…) of a UA or SNRM."""
    if not information:
        return LinkParameters()
    if len(information) < 3 or information[0] != 0x81 or information[1] != 0x80:
        raise FrameError(f"HDLC parameter field {information[:3].hex()} does not start 81 80")
    if information[2] != len(information) - 3:
        raise FrameError("HDLC parameter field length does not match its content")
    values: dict[int, int] = {}
    at = 3
    while at < len(information):
        if at + 2 > len(information):
            raise FrameError("HDLC parameter field is truncated")
        parameter, size = information[at], information[at + 1]
        if size == 0 or size > 4 or at + 2 + size > len(information):
            raise FrameError(f"HDLC parameter 0x{parameter:02x} has a bad length {size}")
        values[parameter] = int.from_bytes(information[at + 2 : at + 2 + size], "big")
        at += 2 + size
    defaults = LinkParameters()
    return LinkParameters(
        max_info_transmit=values.get(0x05, defaults.max_info_transmit),
        max_info_receive=values.get(0x06, defaults.max_info_receive),
        window_transmit=values.get(0x07, defaults.window_transmit),
        window_receive=values.get(0x08, defaults.window_receive),
    )
