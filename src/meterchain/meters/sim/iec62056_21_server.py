"""A simulated IEC 62056-21 mode C meter, serving a PhysicalMeter on TCP or a serial line.

Session, as a real optical-port meter runs it:
  idle         waits for a sign-on `/?[address]!CRLF` (an address other than the meter id, or
               anything else, is ignored), answers `/MCH5<meter id, 16 chars at most>CRLF`
               (made-up manufacturer code MCH, offered baud rate '5' = 9600)
  option       waits up to 5 s for `ACK 0 Z Y CRLF` with Z no faster than offered:
               Y='0' sends the readout and returns to idle; Y='1' sends the password prompt
               `SOH P0 STX (meter id) ETX BCC` and enters programming mode
  programming  P1 (password) -> ACK, or a wrong password -> B0 and back to idle;
               W1 96.3.10(0|1) -> opens/closes the relay, ACK;
               R1 <address>() -> `STX (value) ETX BCC` for 96.3.10 and every readout register;
               B0 -> idle; 120 s without a message -> idle; a message with a bad BCC -> NAK.
               Errors: (ER01) unknown register, (ER02) value not allowed, (ER03) password
               required first, (ER04) command not supported.

Readout data block (register values truncated to the resolution shown; clock in UTC):
  0.0.0(id) C.1.0(id) 0.9.1(hhmmss) 0.9.2(YYMMDD) 1.8.0(kWh, 3 decimals) 2.8.0(kWh)
  1.7.0(import kW, 3 decimals) 2.7.0(export kW) 32.7.0(V, 1 decimal) 31.7.0(A, 2 decimals)
  96.3.10(1 connected / 0 disconnected)

On a serial line it speaks 300 baud 7E1 as the standard says. It accepts the baud-rate switch of
the option select but does not re-program its port: a pseudo-terminal has no baud rate.
The password (default "00000000") is a keyword argument of `start_tcp` and `start_serial`.
"""

from __future__ import annotations

import logging
import os
import termios
from collections.abc import Callable
from enum import Enum
from typing import TypeVar

from meterchain.meters.errors import FrameError, MeterError, MeterTimeout
from meterchain.meters.iec62056_21_codec import (
    ACK,
    BAUD_RATES,
    BREAK,
    ETX,
    MODE_PROGRAMMING,
    MODE_READOUT,
    NAK,
    PROTOCOL_NORMAL,
    RELAY_ADDRESS,
    SOH,
    CommandMessage,
    DataMessage,
    DataSet,
    Identification,
    OptionSelect,
    SignOn,
    decode_command,
    decode_option_select,
    decode_sign_on,
    encode_readout,
    obis_key,
    relay_state,
    relay_value,
)
from meterchain.meters.sim.physical import MeterState, PhysicalMeter
from meterchain.meters.sim.server import RunningServer, start_serial_server, start_tcp_server
from meterchain.meters.transport import ByteStream, SerialSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PASSWORD = "00000000"
MANUFACTURER = "MCH"
OFFERED_BAUD_CHAR = "5"  # 9600 baud
SERIAL_SETTINGS = SerialSettings(baud=300, bytesize=7, parity="E", stopbits=1)
PTY_SETTINGS = SerialSettings(baud=300, bytesize=8, parity="N", stopbits=1)

IDLE_WAIT_S = 3600.0
OPTION_WAIT_S = 5.0
PROGRAMMING_WAIT_S = 120.0
INTER_CHARACTER_S = 1.5
MAX_MESSAGE_BYTES = 512

ERR_UNKNOWN_REGISTER = "ER01"
ERR_VALUE = "ER02"
ERR_PASSWORD_FIRST = "ER03"
ERR_UNSUPPORTED = "ER04"


class _State(Enum):
    IDLE = "idle"
    OPTION = "waiting for the option select"
    PROGRAMMING = "programming mode"


class _Garbled:
    """A programming-mode message that arrived corrupted: the meter asks for it again (NAK)."""


ClientMessage = SignOn | OptionSelect | CommandMessage | _Garbled


def _kilo(value: float) -> str:
    """A non-negative quantity in kilo-units with three decimals, truncated: 1234.9 -> 1.234."""
    milli = int(max(value, 0.0))
    return f"{milli // 1000:06d}.{milli % 1000:03d}"


def readout_lines(state: MeterState) -> list[DataSet]:
    """The readout data sets a meter in `state` sends (see the module docstring)."""
    power_w = round(state.power_w)
    import_w, export_w = max(power_w, 0), max(-power_w, 0)
    return [
        DataSet("0.0.0", state.meter_id),
        DataSet("C.1.0", state.meter_id),
        DataSet("0.9.1", f"{state.timestamp:%H%M%S}"),
        DataSet("0.9.2", f"{state.timestamp:%y%m%d}"),
        DataSet("1.8.0", _kilo(state.import_wh), "kWh"),
        DataSet("2.8.0", _kilo(state.export_wh), "kWh"),
        DataSet("1.7.0", f"{import_w // 1000:02d}.{import_w % 1000:03d}", "kW"),
        DataSet("2.7.0", f"{export_w // 1000:02d}.{export_w % 1000:03d}", "kW"),
        DataSet("32.7.0", f"{state.voltage_v:05.1f}", "V"),
        DataSet("31.7.0", f"{state.current_a:06.2f}", "A"),
        DataSet(RELAY_ADDRESS, relay_value(state.relay)),
    ]


class Iec62056Simulator:
    """The meter's side of IEC 62056-21 mode C, for one PhysicalMeter."""

    def __init__(
        self,
        meter: PhysicalMeter,
        *,
        password: str = DEFAULT_PASSWORD,
        manufacturer: str = MANUFACTURER,
        baud_char: str = OFFERED_BAUD_CHAR,
    ) -> None:
        if baud_char not in BAUD_RATES:
            raise ValueError(f"baud-rate character {baud_char!r} is not a mode C one (0-6)")
        self._meter = meter
        self._password = password
        self._offered = baud_char
        # Encoding up front turns an id or password IEC 62056-21 cannot carry into a ValueError.
        DataSet("C.1.0", meter.meter_id).encode()
        DataSet("", password).encode()
        self.identification = Identification(manufacturer, baud_char, meter.meter_id[:16])
        self._identification_bytes = self.identification.encode()

    async def serve(self, stream: ByteStream) -> None:
        """Answer one client (TCP) or the line (serial) until the peer goes away."""
        state = _State.IDLE
        logged_in = False
        while True:
            wait_s = {
                _State.IDLE: IDLE_WAIT_S,
                _State.OPTION: OPTION_WAIT_S,
                _State.PROGRAMMING: PROGRAMMING_WAIT_S,
            }[state]
            try:
                message = await self._next_message(stream, wait_s)
            except MeterTimeout:
                state, logged_in = _State.IDLE, False
                continue
            if message is None:
                continue
            if isinstance(message, SignOn):
                if message.address and message.address != self._meter.meter_id:
                    state = _State.IDLE  # addressed to another meter on the bus
                    continue
                await stream.write(self._identification_bytes)
                state, logged_in = _State.OPTION, False
            elif state is _State.OPTION and isinstance(message, OptionSelect):
                state = await self._option_selected(stream, message)
            elif state is _State.PROGRAMMING and isinstance(message, _Garbled):
                await stream.write(bytes([NAK]))
            elif state is _State.PROGRAMMING and isinstance(message, CommandMessage):
                state, logged_in = await self._program(stream, message, logged_in)
            # Anything else is out of place and, as on a real meter, ignored.

    async def _option_selected(self, stream: ByteStream, option: OptionSelect) -> _State:
        if (
            option.protocol != PROTOCOL_NORMAL
            or option.baud_char not in BAUD_RATES
            or BAUD_RATES[option.baud_char] > BAUD_RATES[self._offered]
        ):
            return _State.IDLE
        if option.mode == MODE_READOUT:
            await stream.write(encode_readout(readout_lines(self._meter.state())))
            return _State.IDLE
        if option.mode == MODE_PROGRAMMING:
            prompt = CommandMessage("P", "0", (DataSet("", self._meter.meter_id),))
            await stream.write(prompt.encode())
            return _State.PROGRAMMING
        return _State.IDLE  # binary (HDLC) and manufacturer modes are not offered

    async def _program(
        self, stream: ByteStream, message: CommandMessage, logged_in: bool
    ) -> tuple[_State, bool]:
        data = message.data or ()
        if message.name == "B0":
            return _State.IDLE, False
        if message.name == "P1":
            if len(data) == 1 and data[0].value == self._password:
                await stream.write(bytes([ACK]))
                return _State.PROGRAMMING, True
            log.info("meter %s: wrong password, breaking off", self._meter.meter_id)
            await stream.write(BREAK.encode())
            return _State.IDLE, False
        if message.name not in ("W1", "R1"):
            await self._error(stream, ERR_UNSUPPORTED)
        elif not logged_in:
            await self._error(stream, ERR_PASSWORD_FIRST)
        elif len(data) != 1:
            await self._error(stream, ERR_VALUE)
        elif message.name == "W1":
            await self._write(stream, data[0])
        else:
            await self._read(stream, data[0])
        return _State.PROGRAMMING, logged_in

    async def _write(self, stream: ByteStream, data_set: DataSet) -> None:
        if obis_key(data_set.address) != RELAY_ADDRESS:
            await self._error(stream, ERR_UNKNOWN_REGISTER)
            return
        try:
            wanted = relay_state(data_set.value)
        except FrameError:
            await self._error(stream, ERR_VALUE)
            return
        if data_set.value == "2":  # "ready for reconnection" is the meter's to set, not ours
            await self._error(stream, ERR_VALUE)
            return
        self._meter.set_relay(wanted)
        await stream.write(bytes([ACK]))

    async def _read(self, stream: ByteStream, data_set: DataSet) -> None:
        key = obis_key(data_set.address)
        registers = {obis_key(d.address): d for d in readout_lines(self._meter.state())}
        found = registers.get(key) if key is not None else None
        if found is None:
            await self._error(stream, ERR_UNKNOWN_REGISTER)
            return
        await stream.write(DataMessage((DataSet("", found.value, found.unit),)).encode())

    @staticmethod
    async def _error(stream: ByteStream, code: str) -> None:
        await stream.write(DataMessage((DataSet("", code),)).encode())

    async def _next_message(self, stream: ByteStream, wait_s: float) -> ClientMessage | None:
        """The next message from the client; None for line noise or a message cut short."""
        first = await stream.read_byte(wait_s)
        if first == ord("/"):
            raw = await self._rest(stream, bytes([first]), b"\n")
            return self._decoded(raw, decode_sign_on)
        if first == ACK:
            raw = await self._rest(stream, bytes([first]), b"\n")
            return self._decoded(raw, decode_option_select)
        if first == SOH:
            raw = await self._rest(stream, bytes([first]), bytes([ETX]))
            if raw is None:
                return None
            try:
                raw += await stream.read_exactly(1, INTER_CHARACTER_S)
                return decode_command(raw)
            except (FrameError, MeterTimeout) as exc:
                log.debug("garbled command %r: %s", raw[:40], exc)
                return _Garbled()
        return None

    @staticmethod
    async def _rest(stream: ByteStream, start: bytes, end: bytes) -> bytes | None:
        """The message begun with `start`, up to `end`; None when it stalls or runs on."""
        buffer = bytearray(start)
        while not buffer.endswith(end):
            if len(buffer) >= MAX_MESSAGE_BYTES:
                return None
            try:
                buffer += await stream.read_some(
                    MAX_MESSAGE_BYTES - len(buffer), INTER_CHARACTER_S, stop_at=end[-1]
                )
            except MeterTimeout:
                return None
        return bytes(buffer)

    @staticmethod
    def _decoded(raw: bytes | None, decode: Callable[[bytes], T]) -> T | None:
        if raw is None:
            return None
        try:
            return decode(raw)
        except FrameError as exc:
            log.debug("ignored %r: %s", raw[:40], exc)
            return None


def _simulator(meter: PhysicalMeter, password: str) -> Iec62056Simulator:
    return Iec62056Simulator(meter, password=password)


async def start_tcp(
    meter: PhysicalMeter, host: str, port: int, *, password: str = DEFAULT_PASSWORD
) -> RunningServer:
    """Serve `meter` over IEC 62056-21 on TCP (port 0 picks a free port)."""
    return await start_tcp_server(_simulator(meter, password).serve, host, port)


async def start_serial(
    meter: PhysicalMeter, device: str, *, password: str = DEFAULT_PASSWORD
) -> RunningServer:
    """Serve `meter` over IEC 62056-21 on a serial device at 300 baud, 7E1.

    A Linux pseudo-terminal that refuses 7E1 (it carries 8-bit bytes only) is served 8N1.
    """
    serve = _simulator(meter, password).serve
    try:
        return await start_serial_server(serve, device, SERIAL_SETTINGS)
    except (termios.error, MeterError) as exc:
        if not os.path.realpath(device).startswith("/dev/pts/"):
            raise MeterError(f"serial port {device} refused 300 baud 7E1: {exc}") from None
    return await start_serial_server(serve, device, PTY_SETTINGS)
