"""The DLMS data-link layers a client talks through: the TCP wrapper and HDLC on a serial line.

Each link carries one APDU out and one back (`request`). Bytes move over our `ByteStream`, so
every wait has our timeout and our error types; HDLC state and sequence numbers are kept by
dlms-cosem's `HdlcConnection`, driven frame by frame.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from dlms_cosem.hdlc import connection as hdlc_connection
from dlms_cosem.hdlc import frames as hdlc_frames
from dlms_cosem.hdlc import state as hdlc_state
from dlms_cosem.hdlc.exceptions import HdlcException, LocalProtocolError

from meterchain.meters import dlms_hdlc
from meterchain.meters.dlms_codec import (
    WRAPPER_HEADER_BYTES,
    WrapperHeader,
    decode_wrapper_header,
    encode_wrapper,
)
from meterchain.meters.dlms_hdlc import FLAG, FrameKind
from meterchain.meters.errors import FrameError, MeterError, MeterRejected, MeterTimeout
from meterchain.meters.transport import ByteStream

MAX_LEADING_FLAGS = 4  # back-to-back frames may leave repeated flags (7E 7E) between them


class DlmsLink(Protocol):
    """One association's path to the meter: an APDU out, the answering APDU back."""

    stream: ByteStream

    async def request(self, apdu: bytes) -> bytes: ...

    async def close(self) -> None: ...


# --- reading frames off a stream (shared with the simulator) ----------------------------------


async def read_wrapper_frame(
    stream: ByteStream, timeout_s: float, max_length: int = 0xFFFF
) -> tuple[WrapperHeader, bytes]:
    """One wrapper header and the APDU it announces."""
    header = decode_wrapper_header(
        await stream.read_exactly(WRAPPER_HEADER_BYTES, timeout_s), max_length
    )
    try:
        apdu = await stream.read_exactly(header.length, timeout_s)
    except MeterTimeout:
        raise FrameError(
            f"truncated DLMS wrapper frame from {stream.where}: the header announced "
            f"{header.length} bytes and they did not all arrive within {timeout_s} s"
        ) from None
    except MeterError:
        raise FrameError(
            f"truncated DLMS wrapper frame from {stream.where}: the header announced "
            f"{header.length} bytes and the connection closed before they all arrived"
        ) from None
    return header, apdu


async def read_hdlc_frame(
    stream: ByteStream,
    timeout_s: float,
    hunt: bool = False,
    rest_timeout_s: float | None = None,
) -> bytes:
    """One HDLC frame, flags included, not yet checked beyond its length.

    `timeout_s` bounds the wait for the frame to start, `rest_timeout_s` (default the same)
    the wait for the rest of it. A client is strict: anything but a flag where a frame should
    start is a `FrameError`. A meter (`hunt=True`) skips line noise until it sees a flag.
    """
    rest_timeout_s = timeout_s if rest_timeout_s is None else rest_timeout_s
    first = await stream.read_byte(timeout_s)
    while first != FLAG:
        if not hunt:
            raise FrameError(
                f"{stream.where} sent 0x{first:02x} where an HDLC frame should start with 7E; "
                "the line is noisy, the baud rate is wrong or the device does not speak HDLC"
            )
        first = await stream.read_byte(timeout_s)
    try:
        format_field = await stream.read_exactly(2, rest_timeout_s)
        flags = 1
        while format_field[0] == FLAG:  # a repeated flag: the frame starts after it
            flags += 1
            if flags > MAX_LEADING_FLAGS:
                raise FrameError(f"{stream.where} sent {flags} flags in a row and no frame")
            format_field = format_field[1:] + await stream.read_exactly(1, rest_timeout_s)
        total = dlms_hdlc.frame_length(format_field)
        rest = await stream.read_exactly(total - 3, rest_timeout_s)
    except MeterTimeout:
        raise FrameError(
            f"truncated HDLC frame from {stream.where}: it started but did not complete "
            f"within {rest_timeout_s} s"
        ) from None
    return bytes([FLAG]) + format_field + rest


# --- TCP wrapper ----------------------------------------------------------------------------


class WrapperLink:
    """APDUs in IEC 62056-47 wrapper frames over TCP; wPorts are the client and server SAPs."""

    def __init__(self, stream: ByteStream, client: int, server: int, timeout_s: float) -> None:
        self.stream = stream
        self._client = client
        self._server = server
        self._timeout_s = timeout_s

    async def request(self, apdu: bytes) -> bytes:
        await self.stream.write(encode_wrapper(self._client, self._server, apdu))
        header, answer = await read_wrapper_frame(self.stream, self._timeout_s)
        if header.source_wport != self._server or header.destination_wport != self._client:
            raise FrameError(
                f"answer from wPort {header.source_wport} to wPort {header.destination_wport}; "
                f"expected from {self._server} to {self._client}"
            )
        return answer

    async def close(self) -> None:
        await self.stream.close()


# --- HDLC -----------------------------------------------------------------------------------

_LIBRARY_FRAMES: dict[FrameKind, Any] = {
    FrameKind.UA: hdlc_frames.UnNumberedAcknowledgmentFrame,
    FrameKind.I: hdlc_frames.InformationFrame,
    FrameKind.RR: hdlc_frames.ReceiveReadyFrame,
}


class HdlcLink:
    """DLMS over HDLC (IEC 62056-46): SNRM/UA to connect, I-frames with RR for segments, DISC."""

    def __init__(self, stream: ByteStream, client: int, server: int, timeout_s: float) -> None:
        self.stream = stream
        self._client = client
        self._server = server
        self._timeout_s = timeout_s
        self._client_address = dlms_hdlc.client_address(client)
        self._server_address = dlms_hdlc.server_address(server)
        self._hdlc: Any = hdlc_connection.HdlcConnection(self._server_address, self._client_address)
        self._max_info_transmit = dlms_hdlc.DEFAULT_MAX_INFO_LENGTH
        self.link_parameters = dlms_hdlc.LinkParameters()

    async def open(self) -> None:
        """SNRM → UA: set up the link (normal response mode)."""
        await self._send(
            hdlc_frames.SetNormalResponseModeFrame(self._server_address, self._client_address)
        )
        _, frame = await self._receive("UA to our SNRM")
        self.link_parameters = dlms_hdlc.decode_link_parameters(frame.information)
        self._max_info_transmit = min(
            self.link_parameters.max_info_receive, dlms_hdlc.DEFAULT_MAX_INFO_LENGTH
        )

    async def request(self, apdu: bytes) -> bytes:
        chunks = dlms_hdlc.segments(dlms_hdlc.LLC_REQUEST + apdu, self._max_info_transmit)
        for number, chunk in enumerate(chunks):
            last = number == len(chunks) - 1
            await self._send(
                hdlc_frames.InformationFrame(
                    self._server_address,
                    self._client_address,
                    chunk,
                    send_sequence_number=self._hdlc.server_ssn,
                    receive_sequence_number=self._hdlc.server_rsn,
                    segmented=not last,
                    final=True,
                )
            )
            if not last:
                await self._receive("RR for our segment", FrameKind.RR)
        answer = bytearray()
        while True:
            _, frame = await self._receive("I-frame with the answer", FrameKind.I)
            answer += frame.information
            if not frame.segmented:
                break
            if len(answer) > 0xFFFF:
                raise FrameError(f"{self.stream.where} sent more than 64 KiB in one answer")
            await self._send(
                hdlc_frames.ReceiveReadyFrame(
                    self._server_address,
                    self._client_address,
                    receive_sequence_number=self._hdlc.server_rsn,
                )
            )
        if not answer.startswith(dlms_hdlc.LLC_RESPONSE):
            raise FrameError(
                "HDLC answer does not start with the LLC header e6 e7 00: "
                f"{bytes(answer[:3]).hex()}"
            )
        return bytes(answer[len(dlms_hdlc.LLC_RESPONSE) :])

    async def close(self) -> None:
        """DISC → UA when the link is up; the stream is closed in any case."""
        try:
            if self._hdlc.state.current_state is hdlc_state.IDLE:
                await self._send(
                    hdlc_frames.DisconnectFrame(self._server_address, self._client_address)
                )
                await self._receive("UA to our DISC", FrameKind.UA)
        except (MeterError, asyncio.CancelledError):
            pass
        finally:
            await self.stream.close()

    async def _send(self, frame: Any) -> None:
        try:
            data = bytes(self._hdlc.send(frame))
        except LocalProtocolError as exc:
            raise FrameError(f"HDLC link out of step with {self.stream.where}: {exc}") from None
        await self.stream.write(data)

    async def _receive(
        self, expecting: str, kind: FrameKind = FrameKind.UA
    ) -> tuple[Any, dlms_hdlc.HdlcFrame]:
        raw = await read_hdlc_frame(self.stream, self._timeout_s)
        frame = dlms_hdlc.decode_frame(raw)
        if frame.destination != self._client or frame.source != self._server:
            raise FrameError(
                f"HDLC frame from server {frame.source} to client {frame.destination}; "
                f"expected from {self._server} to {self._client}"
            )
        if frame.kind is FrameKind.DM:
            raise MeterRejected(
                f"{self.stream.where} answered DM (disconnected mode) while we waited for "
                f"{expecting}: the meter has no HDLC link with client {self._client}"
            )
        if frame.kind is FrameKind.FRMR:
            raise FrameError(
                f"{self.stream.where} rejected our frame (FRMR {frame.information.hex()})"
            )
        if frame.kind is not kind:
            raise FrameError(f"unexpected HDLC {frame.kind} frame while waiting for {expecting}")
        try:
            library_frame = _LIBRARY_FRAMES[kind].from_bytes(raw)
            self._hdlc.state.process_frame(library_frame)
        except (HdlcException, LocalProtocolError, ValueError) as exc:
            raise FrameError(f"HDLC {frame.kind} frame not accepted: {exc}") from None
        if kind is FrameKind.I:
            try:
                self._hdlc.handle_sequence_numbers(
                    frame_ssn=frame.send_sequence,
                    frame_rsn=frame.receive_sequence,
                    response=True,
                )
            except LocalProtocolError as exc:
                raise FrameError(f"HDLC sequence numbers out of step: {exc}") from None
        return library_frame, frame
