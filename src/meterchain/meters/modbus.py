"""Modbus TCP and RTU meters, read through pymodbus and a register map.

URLs: `modbus+tcp://HOST:PORT?unit=1&map=sdm630` and
`modbus+rtu:///dev/ttyUSB0?baud=9600&unit=1&map=sdm630` (also `parity=N|E|O`, `stopbits=1|2`;
`map` is a shipped map name or the path of a .toml map file; `id=` names the meter when its
map has no identity register, and otherwise is checked against the identity the meter reports;
`deadline_s=` bounds one read or command, every try included, see meters/retry.py).

pymodbus does the framing; every incoming buffer also passes `modbus_frames.check_response`,
which turns bad CRCs, strangers' unit ids and garbled headers into `FrameError` at once
(pymodbus itself would drop such a frame silently and wait for its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from meterchain.meters.base import ReadingGuard
from meterchain.meters.errors import (
    FrameError,
    InvalidMeterUrl,
    MeterError,
    MeterRejected,
    MeterTimeout,
    UnsupportedCommand,
)
from meterchain.meters.modbus_frames import (
    Expected,
    check_response,
    describe_exception,
    expected_response,
    function_name,
)
from meterchain.meters.modbus_maps import (
    READING_FIELDS,
    MapMismatch,
    ReadSpan,
    RegisterMap,
    RegisterMapError,
    decode_identity,
    decode_point,
    load_map,
    plan_reads,
)
from meterchain.meters.retry import (
    DEADLINE_OPTION,
    DEFAULT_TRIES,
    FINAL_ERRORS,
    RetryPolicy,
    line_time_s,
    tries_text,
    typed_errors,
    with_retries,
)
from meterchain.meters.url import MeterUrl
from meterchain.model import DeviceCommand, Reading, RelayState, SetRelay

T = TypeVar("T")

# pymodbus logs each failure it meets (refused connections, timeouts) at WARNING/ERROR; this
# driver raises every one of them as a typed error, so by default those lines are only noise
# on the command line. An application that wants them sets the "pymodbus" logger's level.
_PYMODBUS_LOG = logging.getLogger("pymodbus")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)

URL_OPTIONS = ("unit", "map", "baud", "parity", "stopbits", "id", DEADLINE_OPTION)
# One try: on a new connection the identity (and a SunSpec map's model chain), then the
# planned reads and the relay coil, each answer waited for; on RTU a few hundred bytes.
ANSWERS_PER_TRY = 8
RTU_BYTES_PER_TRY = 512
# Errors raised at once: besides a refusal, a map that does not fit the device.
_FINAL = (*FINAL_ERRORS, MapMismatch, RegisterMapError)
SUNSPEC_MARKER = [0x5375, 0x6E53]  # "SunS"
READ_INPUT, READ_HOLDING, READ_COILS, WRITE_COIL = 4, 3, 1, 5


class ConnectionFailed(MeterError):
    """The TCP connection or the serial port could not be opened, or it was lost."""


@dataclass(frozen=True)
class _Session:
    """What one connection learned about the meter: who it is and where its values are."""

    meter_id: str
    where: dict[str, tuple[str, int]]
    spans: list[ReadSpan]


class ModbusMeter:
    """A meter on Modbus TCP or RTU; connects on first use, reconnects after errors."""

    def __init__(
        self, url: MeterUrl, *, timeout_s: float = 2.0, retries: int = DEFAULT_TRIES
    ) -> None:
        if url.protocol != "modbus":
            raise InvalidMeterUrl(f"{url}: not a Modbus URL")
        if url.transport not in ("tcp", "rtu", "serial"):
            raise InvalidMeterUrl(
                f"{url}: Modbus runs over tcp or rtu, not {url.transport}; "
                "write modbus+tcp://HOST:PORT or modbus+rtu:///dev/ttyUSB0"
            )
        url.reject_unknown_options(URL_OPTIONS)
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries  # tries in all, the first included
        self.framing = "tcp" if url.transport == "tcp" else "rtu"
        self.unit = url.int_option("unit", 1)
        low, high = (0, 255) if self.framing == "tcp" else (1, 247)
        if not low <= self.unit <= high:
            raise InvalidMeterUrl(f"{url}: unit={self.unit} is outside {low}..{high}")
        self.baud = url.int_option("baud", 9600)
        self.parity = url.option("parity", "N").upper()
        self.stopbits = url.int_option("stopbits", 1)
        if self.baud <= 0 or self.parity not in ("N", "E", "O") or self.stopbits not in (1, 2):
            raise InvalidMeterUrl(
                f"{url}: serial settings baud={self.baud}, parity={self.parity}, "
                f"stopbits={self.stopbits} are not valid (e.g. baud=9600&parity=N&stopbits=1)"
            )
        self.policy = RetryPolicy.for_meter(
            url,
            timeout_s,
            retries,
            answers_per_try=ANSWERS_PER_TRY,
            line_s=line_time_s(RTU_BYTES_PER_TRY, self.baud) if self.framing == "rtu" else 0.0,
        )
        self.deadline_s = self.policy.deadline_s
        self.register_map: RegisterMap = load_map(url.option("map", "sdm630"))
        self._fixed_id = url.option("id", "")
        if self.register_map.identity is None and not self._fixed_id:
            raise InvalidMeterUrl(
                f"{url}: map {self.register_map.name!r} has no identity register; "
                "add id=METER_ID to the URL"
            )
        #: Bytes sent and received since construction, all framing included.
        self.bytes_exchanged = 0
        self._guard = ReadingGuard()
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._session: _Session | None = None
        # The transaction in flight (at most one):
        self._expected: Expected | None = None
        self._problem: asyncio.Future[None] | None = None
        self._sent_bytes = 0
        self._received = b""

    # ---------------------------------------------------------------------------- public

    @typed_errors
    async def read(self) -> Reading:
        """Read the map's points and the relay; checked by the reading guard."""
        async with self._lock:
            meter_id, values, relay = await self._with_retries("read", self._read_once)
        reading = Reading(
            meter_id=meter_id,
            timestamp=datetime.now(UTC),
            import_wh=values["import_wh"],
            export_wh=values["export_wh"],
            power_w=values["power_w"],
            voltage_v=values["voltage_v"],
            current_a=values["current_a"],
            relay=relay,
        )
        return self._guard.check(reading)

    @typed_errors
    async def command(self, command: DeviceCommand) -> RelayState:
        """Switch the relay coil and return the state the meter reports back."""
        if not isinstance(command, SetRelay):
            raise UnsupportedCommand(
                f"{self.url}: a Modbus meter takes SetRelay, not {type(command).__name__}"
            )
        relay = self.register_map.relay
        if relay is None:
            raise UnsupportedCommand(
                f"{self.url}: register map {self.register_map.name!r} has no relay coil"
            )
        value = relay.connected if command.state is RelayState.ON else not relay.connected

        async def switch() -> RelayState:
            response = await self._transact(WRITE_COIL, relay.coil, 1, value)
            if not response.bits:
                raise FrameError("the answer to write single coil carried no coil value")
            return RelayState.ON if bool(response.bits[0]) == relay.connected else RelayState.OFF

        async with self._lock:
            return await self._with_retries("switch the relay of", switch)

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # a connection already gone is closed all the same
            await self._drop()

    # ---------------------------------------------------------------------------- retries

    async def _with_retries(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            if self._session is None:
                await self._connect()
                self._session = await self._start_session()
            return await operation()

        async def reset(error: MeterError) -> None:
            if not isinstance(error, _FINAL):
                await self._drop()

        def gave_up(last: MeterError) -> MeterError:
            return type(last)(
                f"{last}; could not {what} {self.url} after {tries_text(self.retries)} "
                f"({self.timeout_s} s each); {self._hint(last)}"
            )

        return await with_retries(
            what, str(self.url), attempt, self.policy, reset=reset, gave_up=gave_up, final=_FINAL
        )

    def _hint(self, error: MeterError) -> str:
        serial = self.framing == "rtu"
        if isinstance(error, ConnectionFailed):
            if serial:
                return "check the device path and that no other program holds the port"
            return "is the meter (or its Modbus gateway) running and listening there?"
        if isinstance(error, FrameError):
            if serial:
                return (
                    f"answers arrive garbled: check baud ({self.baud}), parity "
                    f"({self.parity}), stop bits and the RS-485 wiring and termination"
                )
            return "answers arrive garbled: is this a Modbus TCP server?"
        if serial:
            return (
                f"is the meter powered, wired to {self.url.device}, set to unit id "
                f"{self.unit} and {self.baud} baud?"
            )
        return f"is the meter powered and its unit id {self.unit}?"

    # ---------------------------------------------------------------------------- connection

    async def _connect(self) -> None:
        await self._drop()
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if self.framing == "tcp":
            where = f"{self.url.host}:{self.url.port}"
            client = AsyncModbusTcpClient(
                self.url.host,
                port=self.url.port,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._trace_packet,
                trace_connect=self._trace_connect,
            )
        else:
            where = self.url.device
            if not os.path.exists(where):
                raise ConnectionFailed(f"could not connect to {where}: no such serial port")
            client = AsyncModbusSerialClient(
                self.url.device,
                framer=FramerType.RTU,
                baudrate=self.baud,
                bytesize=8,
                parity=self.parity,
                stopbits=self.stopbits,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._trace_packet,
                trace_connect=self._trace_connect,
            )
        if not await client.connect():
            client.close()
            raise ConnectionFailed(f"could not connect to {where}")
        self._client = client
        if self.framing == "rtu":
            await asyncio.sleep(0.01)  # let bytes still queued on the line arrive, then drop

    async def _drop(self) -> None:
        client, self._client, self._session = self._client, None, None
        if client is not None:
            client.close()
            await asyncio.sleep(0)

    async def _start_session(self) -> _Session:
        register_map = self.register_map
        starts = await self._find_sunspec_models() if register_map.sunspec else None
        where = register_map.locate(starts)
        meter_id = self._fixed_id
        if register_map.identity is not None:
            point = register_map.points[register_map.identity]
            table, address = where[point.name]
            words = await self._read_words(table, address, point.registers)
            meter_id = decode_identity(register_map, point, words)
            if self._fixed_id and meter_id != self._fixed_id:
                raise MapMismatch(
                    f"{self.url}: the meter there is {meter_id!r}, not {self._fixed_id!r}; "
                    "is the address or the unit id wrong?"
                )
        spans = plan_reads(
            (
                (*where[name], register_map.points[name].registers)
                for name in register_map.reading_points()
            ),
            register_map.max_gap_registers,
        )
        return _Session(meter_id, where, spans)

    async def _find_sunspec_models(self) -> dict[int, int]:
        """Walk the SunSpec model chain: where each model the map uses really starts."""
        layout = self.register_map.sunspec
        assert layout is not None
        try:
            marker = await self._read_words("holding", layout.base, 2)
        except MeterRejected as exc:
            raise MapMismatch(
                f"{exc}; a SunSpec device keeps the marker 'SunS' there: is this one "
                "SunSpec, with its base at that address (SunSpec uses 40000, 0 or 50000)?"
            ) from None
        if marker != SUNSPEC_MARKER:
            raise MapMismatch(
                f"{self.url}: no SunSpec marker 'SunS' at holding register {layout.base} "
                f"(found {marker[0]:#06x} {marker[1]:#06x}); is it a SunSpec device with its "
                "base there (SunSpec devices use 40000, 0 or 50000)?"
            )
        needed = self.register_map.models_used()
        found: dict[int, tuple[int, int]] = {}
        seen: list[int] = []
        address = layout.base + 2
        while address + 2 <= 0x10000 and len(seen) < 256:
            model_id, length = await self._read_words("holding", address, 2)
            if model_id == 0xFFFF:
                break
            seen.append(model_id)
            found.setdefault(model_id, (address, length))
            if needed <= found.keys():
                break
            address += 2 + length
        missing = sorted(needed - found.keys())
        if missing:
            raise MapMismatch(
                f"{self.url}: SunSpec model(s) {missing} not found; the device offers "
                f"{seen or 'none'}; choose a map for the models it has"
            )
        for point in self.register_map.points.values():
            if point.model is None or point.offset is None:
                continue
            length = found[point.model][1]
            if point.offset + point.registers > 2 + length:
                raise MapMismatch(
                    f"{self.url}: SunSpec model {point.model} is {length} registers long, "
                    f"too short for point {point.name} at offset {point.offset}"
                )
        return {model_id: start for model_id, (start, _) in found.items()}

    # ---------------------------------------------------------------------------- reading

    async def _read_once(self) -> tuple[str, dict[str, float], RelayState]:
        session = self._session
        assert session is not None
        bank: dict[tuple[str, int], int] = {}
        for span in session.spans:
            words = await self._read_words(span.table, span.address, span.count)
            bank.update(((span.table, span.address + i), word) for i, word in enumerate(words))
        values = {
            name: decode_point(
                self.register_map, self.register_map.reading[name], bank, session.where
            )
            for name in READING_FIELDS
        }
        return session.meter_id, values, await self._read_relay()

    async def _read_relay(self) -> RelayState:
        relay = self.register_map.relay
        if relay is None:
            return RelayState.ON  # no breaker: energy always flows
        response = await self._transact(READ_COILS, relay.coil, 1)
        if not response.bits:
            raise FrameError(f"{self.url}: the answer to read coils carried no coil")
        return RelayState.ON if bool(response.bits[0]) == relay.connected else RelayState.OFF

    async def _read_words(self, table: str, address: int, count: int) -> list[int]:
        function = READ_INPUT if table == "input" else READ_HOLDING
        response = await self._transact(function, address, count)
        words = list(response.registers)
        if len(words) != count:
            raise FrameError(f"asked for {count} registers at {address}, got {len(words)}")
        return words

    # ---------------------------------------------------------------------------- transactions

    async def _transact(
        self, function: int, address: int, count: int, value: bool = False
    ) -> ModbusPDU:
        """One request and its answer; errors come out typed."""
        client = self._client
        if client is None:
            raise ConnectionFailed("not connected")
        loop = asyncio.get_running_loop()
        expected = expected_response(self.framing, self.unit, function, count)
        self._expected = expected
        problem: asyncio.Future[None] = loop.create_future()
        self._problem = problem
        self._sent_bytes, self._received = 0, b""
        call: Awaitable[ModbusPDU]
        if function == READ_INPUT:
            call = client.read_input_registers(address, count=count, device_id=self.unit)
        elif function == READ_HOLDING:
            call = client.read_holding_registers(address, count=count, device_id=self.unit)
        elif function == READ_COILS:
            call = client.read_coils(address, count=count, device_id=self.unit)
        else:
            call = client.write_coil(address, value, device_id=self.unit)
        task = asyncio.ensure_future(call)
        try:
            waiters: list[asyncio.Future[Any]] = [task, problem]
            await asyncio.wait(waiters, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.bytes_exchanged += self._sent_bytes + len(self._received)
            self._expected, self._problem = None, None
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ModbusException):
                    await task
        if problem.done():
            error = problem.exception()
            assert error is not None
            raise error
        if not task.done() or task.cancelled():
            raise self._silence(function, address, expected)
        error = task.exception()
        if isinstance(error, ConnectionException):
            raise ConnectionFailed(f"lost the connection: {error}")
        if isinstance(error, ModbusIOException):
            raise self._silence(function, address, expected)
        if error is not None:
            raise FrameError(f"pymodbus could not decode the answer: {error}")
        response = task.result()
        if response.isError():
            raise MeterRejected(
                f"{self.url}: the meter rejected {function_name(function)} (function "
                f"{function}) of {count} at address {address} ({address:#06x}) with "
                f"exception {describe_exception(response.exception_code)}"
            )
        return response

    def _silence(self, function: int, address: int, expected: Expected) -> MeterError:
        """The error for an answer that did not complete in time: none at all, or a part."""
        what = f"{function_name(function)} at address {address}"
        if self._received:
            return FrameError(
                f"truncated answer to {what}: {len(self._received)} of "
                f"{expected.frame_size(False)} bytes arrived within {self.timeout_s} s "
                f"({self._received[:32].hex(' ')})"
            )
        return MeterTimeout(f"no answer to {what} within {self.timeout_s} s")

    # ---------------------------------------------------------------------------- pymodbus hooks

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Count every byte and vet every incoming buffer (pymodbus calls it for both)."""
        expected = self._expected
        if expected is None:
            return data  # stale bytes between transactions: pymodbus drops them at the next send
        if sending:
            self._sent_bytes += len(data)
            if self.framing == "tcp" and len(data) >= 2:
                self._expected = replace(expected, transaction_id=int.from_bytes(data[:2], "big"))
            return data
        self._received = data  # pymodbus passes the whole buffer received so far
        try:
            check_response(data, expected)
        except FrameError as exc:
            if self._problem is not None and not self._problem.done():
                self._problem.set_exception(exc)
            return b""  # keep pymodbus from decoding it
        return data

    def _trace_connect(self, connected: bool) -> None:
        if connected or self._problem is None or self._problem.done():
            return
        self._problem.set_exception(ConnectionFailed("the meter closed the connection"))
