"""IEC 62056-21 mode C driver: readout over an optical port, a serial line or TCP; the relay
through programming mode.

URLs:
    iec62056-21+tcp://127.0.0.1:5021               a simulator or a serial-to-TCP server
    iec62056-21:///dev/ttyUSB0?baud=300            an optical head or RS-485 line, 7E1
Options: baud (initial rate, default 300), max_baud (cap on the rate the meter offers; default
19200), address (device address in the sign-on, default none), password (programming mode,
default 00000000), utc_offset_min (offset of the meter's clock from UTC, default 0), deadline_s
(the most one read or command may take, every try included; meters/retry.py has the default).

One read: sign-on `/?!`, identification `/XXXZident`, option select `ACK 0 Z 0` (the offered
baud rate, capped by max_baud; on a serial port the driver really switches after the ACK has
left the wire, and back to the initial rate afterwards), readout data block, BCC check.
The relay: option select `ACK 0 Z 1`, P0 prompt, P1 password, W1 `96.3.10(0|1)`, R1 `96.3.10()`
to read back what the meter reports, B0 to leave. A wrong password (the meter answers B0 or
keeps answering NAK) or an error message such as (ER01) raises MeterRejected.

Line noise: a message that fails its checks (a garbled identification, a BCC mismatch) is a
`FrameError` and is tried again with a new sign-on, as the protocol recovers from transmission
errors. An identification that names no mode C baud rate is only believed (`ModeNotSupported`)
when the meter sends the same one twice in a row: one flipped bit turns '5' (9600 baud, mode C)
into 'u', which would mean a mode A meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import serial

from meterchain.meters.base import ReadingGuard
from meterchain.meters.errors import (
    FrameError,
    InvalidMeterUrl,
    MeterError,
    MeterRejected,
    MeterTimeout,
    UnsupportedCommand,
)
from meterchain.meters.iec62056_21_codec import (
    BAUD_CHARS,
    BAUD_RATES,
    BREAK,
    ETX,
    MODE_PROGRAMMING,
    MODE_READOUT,
    RELAY_ADDRESS,
    SOH,
    STX,
    CommandMessage,
    Control,
    DataMessage,
    DataSet,
    Identification,
    OptionSelect,
    ProgrammingReply,
    SignOn,
    decode_identification,
    decode_programming_reply,
    decode_readout,
    readout_to_reading,
    relay_state,
    relay_value,
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
from meterchain.meters.transport import ByteStream, open_tcp, stream_over_fd
from meterchain.meters.url import MeterUrl
from meterchain.model import DeviceCommand, Reading, RelayState, SetRelay

T = TypeVar("T")

DEFAULT_PASSWORD = "00000000"
DEFAULT_BAUD = 300
OPTIONS = ("baud", "max_baud", "address", "password", "utc_offset_min", DEADLINE_OPTION)
MAX_IDENTIFICATION_BYTES = 128
MAX_READOUT_BYTES = 64 * 1024
MAX_REPLY_BYTES = 4096
NAK_REPEATS = 3  # sends of one programming message before a NAK-ing meter counts as refusing
BITS_PER_CHARACTER = 10  # start, 7 data, parity, stop
# One try: the identification and the readout (a relay switch: identification, P0, and the
# answers to P1, W1 and R1), each waited for; on a serial line the sign-on at the initial baud
# rate and up to a kilobyte of data at the agreed one.
ANSWERS_PER_TRY = 6
SIGN_ON_BYTES = 64
DATA_BYTES_PER_TRY = 1024


class ModeNotSupported(MeterRejected):
    """The meter identified itself as a mode A/B meter; this driver speaks mode C."""


@dataclass
class _Link:
    """An open connection; `port` is the pyserial port on a serial line (for baud switching)."""

    stream: ByteStream
    port: Any = None


class Iec62056Meter:
    """A meter read over IEC 62056-21 mode C. Connects on first use, reconnects after errors."""

    def __init__(
        self, url: MeterUrl, *, timeout_s: float = 2.0, retries: int = DEFAULT_TRIES
    ) -> None:
        if url.protocol != "iec62056-21":
            raise InvalidMeterUrl(f"{url}: not an iec62056-21 URL")
        if url.transport not in ("tcp", "serial"):
            raise InvalidMeterUrl(
                f"{url}: IEC 62056-21 runs over tcp or a plain serial line, not "
                f"{url.transport!r}; write iec62056-21:///dev/ttyUSB0 or iec62056-21+tcp://HOST:PORT"
            )
        url.reject_unknown_options(OPTIONS)
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries  # tries in all, the first included
        self._initial_baud = self._baud_option("baud", DEFAULT_BAUD)
        self._max_baud = self._baud_option("max_baud", max(BAUD_RATES.values()))
        line_s = 0.0
        if url.is_serial:
            line_s = line_time_s(SIGN_ON_BYTES, self._initial_baud) + line_time_s(
                DATA_BYTES_PER_TRY, self._max_baud
            )
        self.policy = RetryPolicy.for_meter(
            url, timeout_s, retries, answers_per_try=ANSWERS_PER_TRY, line_s=line_s
        )
        self.deadline_s = self.policy.deadline_s
        self._address = url.option("address", "")
        self._password = url.option("password", DEFAULT_PASSWORD)
        self._utc_offset_min = url.int_option("utc_offset_min", 0)
        try:
            SignOn(self._address).encode()
            DataSet("", self._password).encode()
        except ValueError as exc:
            raise InvalidMeterUrl(f"{url}: {exc}") from None
        self.identification: Identification | None = None
        # An identification without a mode C baud rate, kept until the next one confirms it.
        self._unconfirmed_identification: bytes | None = None
        self._link: _Link | None = None
        self._bytes_closed = 0
        self._guard = ReadingGuard()
        self._lock = asyncio.Lock()

    def _baud_option(self, name: str, default: int) -> int:
        rate = self.url.int_option(name, default)
        if rate not in BAUD_CHARS:
            raise InvalidMeterUrl(
                f"{self.url}: {name}={rate} is not a mode C baud rate "
                f"({', '.join(str(r) for r in BAUD_RATES.values())})"
            )
        return rate

    @property
    def bytes_exchanged(self) -> int:
        """Bytes sent and received since construction, framing included."""
        link = self._link
        live = link.stream.bytes_read + link.stream.bytes_written if link else 0
        return self._bytes_closed + live

    # --- public interface ----------------------------------------------------------------

    @typed_errors
    async def read(self) -> Reading:
        """One readout: sign-on, identification, option select, data block."""
        async with self._lock:
            reading = await self._with_retries("reading", self._readout)
            return self._guard.check(reading)

    @typed_errors
    async def command(self, command: DeviceCommand) -> RelayState:
        """Switch the relay in programming mode and return the state the meter reports."""
        if not isinstance(command, SetRelay):
            raise UnsupportedCommand(
                f"{self.url}: an IEC 62056-21 meter can switch its relay (SetRelay) only, "
                f"not carry out {type(command).__name__}"
            )

        async def switch(link: _Link) -> RelayState:
            return await self._switch_relay(link, command.state)

        async with self._lock:
            return await self._with_retries(f"switching the relay {command.state}", switch)

    async def close(self) -> None:
        await self._drop()

    # --- connection and retries ----------------------------------------------------------

    async def _connect(self) -> _Link:
        if self._link is not None:
            return self._link
        if self.url.is_serial:
            self._link = await self._open_serial()
        else:
            self._link = _Link(await open_tcp(self.url.host, self.url.port, self.timeout_s))
        return self._link

    async def _open_serial(self) -> _Link:
        port = open_7e1_port(self.url.device, self._initial_baud)
        stream = await stream_over_fd(port.fileno(), self.url.device, on_close=port.close)
        return _Link(stream, port)

    async def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            self._bytes_closed += link.stream.bytes_read + link.stream.bytes_written
            with contextlib.suppress(Exception):
                await link.stream.close()

    async def _with_retries(self, what: str, operation: Callable[[_Link], Awaitable[T]]) -> T:
        async def attempt() -> T:
            try:
                return await operation(await self._connect())
            except MeterRejected as exc:
                raise type(exc)(f"{self.url} refused {what}: {exc}") from None

        async def reset(error: MeterError) -> None:
            if not isinstance(error, MeterRejected):
                await self._drop()  # a fresh connection starts the next try from a clean line

        return await with_retries(
            what, str(self.url), attempt, self.policy, reset=reset, gave_up=self._gave_up(what)
        )

    def _gave_up(self, what: str) -> Callable[[MeterError], MeterError]:
        def gave_up(last: MeterError) -> MeterError:
            tries = f"after {tries_text(self.retries)}"
            if isinstance(last, MeterTimeout):
                return MeterTimeout(
                    f"no answer from {self.url} while {what}, {tries} ({self.timeout_s} s each): "
                    f"{last}; is the meter powered, the optical head seated or the cable on, "
                    "and the address right?"
                )
            if isinstance(last, FrameError):
                return FrameError(
                    f"corrupt answer from {self.url} while {what}, {tries}: {last}; check the "
                    "line settings (7E1), noise on it, or whether another device answers too"
                )
            return MeterError(f"{what} from {self.url} failed {tries}: {last}")

        return gave_up

    # --- reading bytes -------------------------------------------------------------------

    async def _read_message(
        self, stream: ByteStream, end: int, limit: int, what: str, trailer: int = 0
    ) -> bytes:
        """Bytes up to `end` (plus `trailer` more, the BCC); each within the timeout.

        Read in the pieces they arrive in, never past the message: the timeout bounds the gap
        before each piece, as the standard's inter-character time does.
        """
        buffer = bytearray()
        wanted = -1
        while len(buffer) != wanted:
            room = wanted - len(buffer) if wanted >= 0 else limit - len(buffer)
            try:
                piece = await stream.read_some(
                    room, self.timeout_s, stop_at=end if wanted < 0 else None
                )
            except MeterTimeout:
                if buffer:
                    raise FrameError(
                        f"{what} truncated: {len(buffer)} bytes ({bytes(buffer[:40])!r}) and "
                        f"then nothing for {self.timeout_s} s"
                    ) from None
                raise MeterTimeout(f"no {what} within {self.timeout_s} s") from None
            except MeterError as exc:
                if buffer:
                    raise FrameError(
                        f"{what} truncated: the connection closed after {len(buffer)} bytes"
                    ) from None
                raise MeterError(f"waiting for the {what}: {exc}") from None
            buffer += piece
            if wanted < 0 and piece[-1] == end:
                wanted = len(buffer) + trailer
            elif wanted < 0 and len(buffer) >= limit:
                raise FrameError(
                    f"{what}: {len(buffer)} bytes without an end; garbage on the line, or not "
                    "an IEC 62056-21 meter"
                )
        return bytes(buffer)

    async def _reply(self, link: _Link, what: str) -> ProgrammingReply:
        """A programming-mode answer: one ACK/NAK byte, or an SOH/STX message with its BCC."""
        try:
            head = await link.stream.read_exactly(1, self.timeout_s)
        except MeterTimeout:
            raise MeterTimeout(f"no answer to the {what} within {self.timeout_s} s") from None
        if head[0] in (Control.ACK.value, Control.NAK.value):
            return decode_programming_reply(head)
        if head[0] not in (SOH, STX):
            raise FrameError(
                f"answer to the {what} starts with 0x{head[0]:02x}, not ACK, NAK, SOH or STX"
            )
        rest = await self._read_message(link.stream, ETX, MAX_REPLY_BYTES, what, trailer=1)
        return decode_programming_reply(head + rest)

    # --- the protocol ----------------------------------------------------------------------

    async def _sign_on(self, link: _Link) -> Identification:
        # A late answer from an earlier, abandoned exchange: dropped, but it was on the wire.
        self._bytes_closed += link.stream.discard_pending()
        await self._switch_baud(link, self._initial_baud)
        await link.stream.write(SignOn(self._address).encode())
        raw = await self._read_message(
            link.stream, ord("\n"), MAX_IDENTIFICATION_BYTES, "identification message"
        )
        identification = decode_identification(raw)
        if identification.baud_rate is None:
            if raw == self._unconfirmed_identification:
                raise ModeNotSupported(
                    f"the meter identified as {raw!r} twice, a mode A/B meter (baud character "
                    f"{identification.baud_char!r}); this driver speaks mode C"
                )
            self._unconfirmed_identification = raw
            raise FrameError(
                f"the identification {raw!r} names no mode C baud rate (character "
                f"{identification.baud_char!r}): line noise, or a mode A/B meter; signing on "
                "again to tell"
            )
        self._unconfirmed_identification = None
        self.identification = identification
        return identification

    async def _select(self, link: _Link, identification: Identification, mode: str) -> None:
        """Send the option select and switch to the agreed baud rate."""
        offered = identification.baud_rate or self._initial_baud
        rate = max(r for r in BAUD_RATES.values() if r <= min(offered, self._max_baud))
        message = OptionSelect(BAUD_CHARS[rate], mode).encode()
        await link.stream.write(message)
        await self._switch_baud(link, rate, after=len(message))

    async def _switch_baud(self, link: _Link, rate: int, after: int = 0) -> None:
        """On a serial port: once the last `after` bytes have left the wire, change the rate."""
        port = link.port
        if port is None or port.baudrate == rate:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while _output_pending(port.fileno()) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(BITS_PER_CHARACTER / port.baudrate)  # the UART's shift register
        try:
            port.baudrate = rate
        except (serial.SerialException, termios.error, OSError, ValueError) as exc:
            raise MeterError(f"serial port {self.url.device} refused {rate} baud: {exc}") from None

    async def _readout(self, link: _Link) -> Reading:
        identification = await self._sign_on(link)
        await self._select(link, identification, MODE_READOUT)
        try:
            raw = await self._read_message(
                link.stream, ETX, MAX_READOUT_BYTES, "readout data block", trailer=1
            )
        finally:
            await self._switch_baud(link, self._initial_baud)
        readout = decode_readout(raw)
        return readout_to_reading(readout, datetime.now(UTC), self._utc_offset_min)

    async def _switch_relay(self, link: _Link, state: RelayState) -> RelayState:
        identification = await self._sign_on(link)
        await self._select(link, identification, MODE_PROGRAMMING)
        try:
            prompt = await self._reply(link, "programming-mode request")
            if not (isinstance(prompt, CommandMessage) and prompt.name == "P0"):
                self._refused(prompt, "the programming-mode request")
                raise FrameError(f"expected the password prompt P0, got {prompt}")
            password = CommandMessage("P", "1", (DataSet("", self._password),))
            self._expect_ack(await self._exchange(link, password, "password (P1)"), "password")
            write = CommandMessage("W", "1", (DataSet(RELAY_ADDRESS, relay_value(state)),))
            self._expect_ack(await self._exchange(link, write, "relay write (W1)"), "relay write")
            read = CommandMessage("R", "1", (DataSet(RELAY_ADDRESS, ""),))
            answer = await self._exchange(link, read, "relay read (R1)")
            if not isinstance(answer, DataMessage) or len(answer.data_sets) != 1:
                raise FrameError(f"expected one data set answering R1 {RELAY_ADDRESS}: {answer}")
            return relay_state(answer.data_sets[0].value)
        finally:
            with contextlib.suppress(MeterError, OSError):
                await link.stream.write(BREAK.encode())
            await self._switch_baud(link, self._initial_baud)

    async def _exchange(self, link: _Link, message: CommandMessage, what: str) -> ProgrammingReply:
        """Send `message`, repeating it while the meter answers NAK; refusals are raised."""
        encoded = message.encode()
        for _ in range(NAK_REPEATS):
            await link.stream.write(encoded)
            reply = await self._reply(link, what)
            if reply is not Control.NAK:
                self._refused(reply, f"the {what}")
                return reply
        raise MeterRejected(
            f"the meter answered NAK to the {what} {NAK_REPEATS} times"
            + ("; is the password right (?password=…)?" if message.command == "P" else "")
        )

    @staticmethod
    def _refused(reply: ProgrammingReply, what: str) -> None:
        """Raise MeterRejected if `reply` is a break (B0) or an error message."""
        if isinstance(reply, CommandMessage) and reply.command == "B":
            hint = " (wrong password? set ?password=…)" if "password" in what else ""
            raise MeterRejected(f"the meter broke off the session (B0) after {what}{hint}")
        if isinstance(reply, DataMessage) and reply.error is not None:
            raise MeterRejected(f"the meter answered the error ({reply.error}) to {what}")

    @staticmethod
    def _expect_ack(reply: ProgrammingReply, what: str) -> None:
        if reply is not Control.ACK:
            raise FrameError(f"expected ACK to the {what}, got {reply}")


def open_7e1_port(device: str, baud: int) -> Any:
    """A pyserial port at `baud`, 7E1 as IEC 62056-21 says.

    Linux pseudo-terminals carry 8-bit bytes only and refuse 7E1 with EINVAL once nothing
    else in the settings changes; the 7-bit ASCII of the protocol crosses them unchanged as 8N1,
    so on /dev/pts/* that is what they get.
    """
    settings = [(serial.SEVENBITS, serial.PARITY_EVEN)]
    if os.path.realpath(device).startswith("/dev/pts/"):
        settings.append((serial.EIGHTBITS, serial.PARITY_NONE))
    failure: Exception | None = None
    for bytesize, parity in settings:
        try:
            return serial.Serial(
                device,
                baudrate=baud,
                bytesize=bytesize,
                parity=parity,
                stopbits=serial.STOPBITS_ONE,
                timeout=0,
            )
        except (serial.SerialException, termios.error, OSError, ValueError) as exc:
            failure = exc
    raise MeterError(
        f"could not open serial port {device} at {baud} baud 7E1: {failure}; check the path "
        "and permissions"
    )


def _output_pending(fd: int) -> int:
    """Bytes still in the serial port's output queue (0 where the driver cannot tell)."""
    try:
        raw = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    pending: int = struct.unpack("i", raw)[0]
    return pending
