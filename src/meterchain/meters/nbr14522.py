"""The ABNT NBR 14522 driver: reads Eletra-style meters over a serial line or a TCP bridge.

One read is three exchanges: 0x23 (energy registers), 0x14 (instantaneous quantities) and the
relay status (meterchain's 0x98 extension). Each exchange waits for the meter's ENQ, sends the
66-byte command, takes the 258-byte response, checks its CRC and answers ACK or NAK, honouring
the protocol's limits (7 NAKs per block, 12 WAITs). docs/nbr14522.md has the details.

URL options: `reader` (6-digit reader serial, default 123456), `address` (8-digit serial of the
meter on a shared RS-485 bus: commands get the 0x99 address prefix and go out without waiting
for ENQ), `utc_offset_h` (the meter clock's offset from UTC, default 0), `baud` (serial only,
default 9600, 8N1), `deadline_s` (the most one read or command may take, every try included;
meters/retry.py has the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from meterchain.meters import nbr14522_codec as codec
from meterchain.meters.base import ReadingGuard
from meterchain.meters.errors import (
    FrameError,
    InvalidMeterUrl,
    MeterError,
    MeterRejected,
    MeterTimeout,
    UnsupportedCommand,
)
from meterchain.meters.retry import (
    DEADLINE_OPTION,
    DEFAULT_TRIES,
    RetryPolicy,
    line_time_s,
    tries_text,
    typed_errors,
    with_retries,
)
from meterchain.meters.transport import ByteStream, SerialSettings, open_serial, open_tcp
from meterchain.meters.url import MeterUrl
from meterchain.model import DeviceCommand, Reading, RelayState, SetRelay

T = TypeVar("T")

DEFAULT_READER_SERIAL = "123456"
URL_OPTIONS = ("reader", "address", "utc_offset_h", "baud", DEADLINE_OPTION)
# One try of a read: three exchanges, each an ENQ and an answer to wait for, and on a serial
# line about a kilobyte (ENQ, 66-byte command, 258-byte response, ACK, three times).
ANSWERS_PER_TRY = 6
LINE_BYTES_PER_TRY = 3 * (1 + codec.COMMAND_SIZE + codec.RESPONSE_SIZE + 1)
# Bytes that may precede the ENQ we synchronise on before the line is declared foreign.
MAX_NOISE_BEFORE_ENQ = 2 * codec.RESPONSE_SIZE


class Nbr14522Meter:
    """A meter reached over NBR 14522. Connects on first use, reconnects after errors."""

    def __init__(
        self, url: MeterUrl, *, timeout_s: float = 2.0, retries: int = DEFAULT_TRIES
    ) -> None:
        if url.protocol != "nbr14522" or url.transport not in ("tcp", "serial"):
            raise InvalidMeterUrl(
                f"{url}: NBR 14522 runs over TCP or a plain serial line; write "
                "nbr14522+tcp://HOST:PORT or nbr14522:///dev/ttyUSB0?baud=9600"
            )
        url.reject_unknown_options(URL_OPTIONS)
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries  # tries in all, the first included
        self.reader_serial = _digits_option(url, "reader", DEFAULT_READER_SERIAL, 6)
        address = url.option("address", "")
        self.address = _digits_option(url, "address", "", 8).zfill(8) if address else None
        self.utc_offset_h = url.float_option("utc_offset_h", 0.0)
        if not -14 <= self.utc_offset_h <= 14:
            raise InvalidMeterUrl(
                f"{url}: utc_offset_h={self.utc_offset_h} is not between -14 and 14"
            )
        self.baud = url.int_option("baud", 9600)
        if self.baud <= 0:
            raise InvalidMeterUrl(f"{url}: baud={self.baud} must be positive")
        self.policy = RetryPolicy.for_meter(
            url,
            timeout_s,
            retries,
            answers_per_try=ANSWERS_PER_TRY,
            line_s=line_time_s(LINE_BYTES_PER_TRY, self.baud) if url.is_serial else 0.0,
        )
        self.deadline_s = self.policy.deadline_s
        self.bytes_exchanged = 0
        self._stream: ByteStream | None = None
        self._guard = ReadingGuard()
        self._lock = asyncio.Lock()

    # --- the Meter interface -----------------------------------------------------------------

    @typed_errors
    async def read(self) -> Reading:
        async with self._lock:
            reading = await self._with_retries("read", self._read_once)
        return self._guard.check(reading)

    @typed_errors
    async def command(self, command: DeviceCommand) -> RelayState:
        if not isinstance(command, SetRelay):
            raise UnsupportedCommand(
                f"{self.url}: an NBR 14522 meter only switches its relay; "
                f"{type(command).__name__} needs a device driver (battery, inverter)"
            )
        target = command.state

        async def switch(stream: ByteStream) -> RelayState:
            stream.discard_pending()
            frame = codec.encode_relay_command(self.reader_serial, target, self.address)
            response = await self._exchange(stream, frame, codec.Code.EXTENDED)
            return codec.decode_relay_status(response).state

        async with self._lock:
            return await self._with_retries(f"switching the relay {target.value}", switch)

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):  # a line already gone is closed all the same
                await stream.close()

    # --- one read: three exchanges -----------------------------------------------------------

    async def _read_once(self, stream: ByteStream) -> Reading:
        # ENQs that piled up while idle are stale: a meter expects the command right after a
        # fresh one. They are not part of this read, so they are not counted either.
        stream.discard_pending()
        registers_rsp = await self._exchange(
            stream, self._command(codec.Code.CURRENT_REGISTERS), codec.Code.CURRENT_REGISTERS
        )
        registers = codec.decode_registers(registers_rsp)
        instant_rsp = await self._exchange(
            stream, self._command(codec.Code.INSTANTANEOUS), codec.Code.INSTANTANEOUS
        )
        instant = codec.decode_instantaneous(instant_rsp)
        relay_rsp = await self._exchange(
            stream,
            codec.encode_relay_command(self.reader_serial, None, self.address),
            codec.Code.EXTENDED,
        )
        relay = codec.decode_relay_status(relay_rsp)
        serials = {registers_rsp.meter_serial, instant_rsp.meter_serial, relay_rsp.meter_serial}
        if len(serials) > 1:
            raise FrameError(
                f"answers to one read came from different meters ({', '.join(sorted(serials))}); "
                "several meters share the line: give the one to read with ?address=SERIAL"
            )
        return codec.registers_to_reading(
            registers, instant, relay.state, registers_rsp.meter_serial, self.utc_offset_h
        )

    def _command(self, code: int) -> bytes:
        return codec.encode_command(code, self.reader_serial, address=self.address)

    # --- one exchange: ENQ, command, response, ACK/NAK ----------------------------------------

    async def _exchange(self, stream: ByteStream, command: bytes, code: int) -> codec.Response:
        if self.address is None:
            await self._await_enq(stream)
        loop = asyncio.get_running_loop()
        naks_received = naks_sent = waits = 0
        waiting = False
        crc_error: FrameError | None = None
        deadline = 0.0

        async def send(data: bytes) -> None:
            # Each block we send gives the meter `timeout_s` to answer; idle ENQs do not.
            nonlocal deadline
            await self._send(stream, data)
            deadline = loop.time() + self.timeout_s

        await send(command)
        while True:
            try:
                first = (await self._recv(stream, 1, max(deadline - loop.time(), 0.0)))[0]
            except MeterTimeout:
                if crc_error is not None:
                    raise FrameError(f"{crc_error}; the meter did not resend after NAK") from None
                raise MeterTimeout(
                    f"no answer to command 0x{code:02X} within {self.timeout_s} s"
                    + (" after WAIT" if waiting else "")
                ) from None
            if first == codec.ENQ:
                if waiting:  # the meter is ready again: send the command anew
                    waiting = False
                    await send(command)
                continue  # else an idle ENQ that crossed our command on the line
            if first == codec.ACK:
                continue
            if first == codec.NAK:
                naks_received += 1
                if naks_received >= codec.MAX_NAKS:
                    raise MeterRejected(
                        f"the meter answered command 0x{code:02X} with NAK {naks_received} "
                        "times (its CRC check failed each time); the line corrupts what the "
                        "board sends"
                    )
                await send(command)
                continue
            if first == codec.WAIT:
                waits += 1
                if waits > codec.MAX_WAITS:
                    raise MeterRejected(
                        f"the meter answered command 0x{code:02X} with WAIT {waits} times; it "
                        "is busy, try again later"
                    )
                waiting = True
                deadline = loop.time() + self.timeout_s
                continue
            if first not in (code, codec.Code.NOT_IMPLEMENTED, codec.Code.OCCURRENCE):
                raise FrameError(
                    f"unexpected byte 0x{first:02X} where the answer to command 0x{code:02X} "
                    f"should start (expected 0x{code:02X}, NAK or WAIT): garbage on the line"
                )
            raw = bytes((first,)) + await self._recv_rest(stream)
            try:
                response = codec.decode_response(raw)
            except FrameError as exc:
                crc_error = exc
                naks_sent += 1
                await send(bytes((codec.NAK,)))
                if naks_sent >= codec.MAX_NAKS:
                    raise FrameError(f"{exc}; gave up after {naks_sent} NAKs") from None
                continue
            await self._send(stream, bytes((codec.ACK,)))
            if self.address is not None and response.meter_serial != self.address:
                raise FrameError(
                    f"meter {response.meter_serial} answered a command addressed to {self.address}"
                )
            rejected = codec.refusal(response, code)
            if rejected is not None:
                raise rejected
            return response

    async def _await_enq(self, stream: ByteStream) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        noise = 0
        while True:
            try:
                byte = (await self._recv(stream, 1, max(deadline - loop.time(), 0.0)))[0]
            except MeterTimeout:
                if noise:
                    raise FrameError(
                        f"no ENQ within {self.timeout_s} s, only {noise} other bytes: is it an "
                        "NBR 14522 meter, at the right baud rate?"
                    ) from None
                raise MeterTimeout(
                    f"no ENQ within {self.timeout_s} s (an idle NBR 14522 meter sends one at "
                    "least every 0.5 s)"
                ) from None
            if byte == codec.ENQ:
                return
            noise += 1
            if noise > MAX_NOISE_BEFORE_ENQ:
                raise FrameError(
                    f"{noise} bytes arrived and none was ENQ: is it an NBR 14522 meter, at the "
                    "right baud rate?"
                )

    async def _recv_rest(self, stream: ByteStream) -> bytes:
        try:
            return await self._recv(stream, codec.RESPONSE_SIZE - 1, self.timeout_s)
        except MeterTimeout:
            partial = stream.discard_pending()
            self.bytes_exchanged += partial
            raise FrameError(
                f"truncated response: {1 + partial} of {codec.RESPONSE_SIZE} bytes arrived, "
                f"then {self.timeout_s} s of silence"
            ) from None

    async def _send(self, stream: ByteStream, data: bytes) -> None:
        await stream.write(data)
        self.bytes_exchanged += len(data)

    async def _recv(self, stream: ByteStream, count: int, timeout_s: float) -> bytes:
        data = await stream.read_exactly(count, timeout_s)
        self.bytes_exchanged += len(data)
        return data

    # --- connection and retries --------------------------------------------------------------

    async def _connect(self) -> ByteStream:
        if self._stream is None:
            if self.url.transport == "tcp":
                self._stream = await open_tcp(self.url.host, self.url.port, self.timeout_s)
            else:
                settings = SerialSettings(baud=self.baud)
                self._stream = await open_serial(self.url.device, settings)
        return self._stream

    async def _with_retries(self, what: str, operation: Callable[[ByteStream], Awaitable[T]]) -> T:
        async def attempt() -> T:
            try:
                return await operation(await self._connect())
            except MeterRejected as exc:
                raise type(exc)(f"{self.url} refused {what}: {exc}") from None

        async def reset(error: MeterError) -> None:
            if not isinstance(error, MeterRejected):  # a refusal leaves the line in step
                await self.close()

        def gave_up(last: MeterError) -> MeterError:
            return _final_error(
                last,
                f"{what} of {self.url} failed after {tries_text(self.retries)} "
                f"({self.timeout_s} s each): {last}",
            )

        return await with_retries(
            what, str(self.url), attempt, self.policy, reset=reset, gave_up=gave_up
        )


def _final_error(last: MeterError, message: str) -> MeterError:
    if isinstance(last, MeterTimeout):
        return MeterTimeout(
            f"{message}; is the meter powered, the cable on its optical port or RS-485 "
            "terminals, and the address and baud rate right?"
        )
    if isinstance(last, FrameError):
        return FrameError(f"{message}; check the line for noise and the baud rate")
    return MeterError(message)  # the transport's message already says what to check


def _digits_option(url: MeterUrl, name: str, default: str, max_digits: int) -> str:
    value = url.option(name, default)
    if not re.fullmatch(rf"[0-9]{{1,{max_digits}}}", value):
        raise InvalidMeterUrl(
            f"{url}: option {name}={value!r} must be 1 to {max_digits} decimal digits "
            "(it travels as BCD)"
        )
    return value
