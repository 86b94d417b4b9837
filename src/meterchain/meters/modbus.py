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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from meterchain.meters.base import ReadingGuard
from meterchain.meters.errors import (
    InvalidMeterUrl,
    MeterError,
    MeterRejected,
    UnsupportedCommand,
)
from meterchain.meters.modbus_link import (
    SERIAL_OPTIONS,
    ConnectionFailed,
    ModbusConnection,
    link_settings,
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

__all__ = ["ConnectionFailed", "ModbusMeter"]

T = TypeVar("T")

URL_OPTIONS = ("unit", "map", *SERIAL_OPTIONS, "id", DEADLINE_OPTION)
# One try: on a new connection the identity (and a SunSpec map's model chain), then the
# planned reads and the relay coil, each answer waited for; on RTU a few hundred bytes.
ANSWERS_PER_TRY = 8
RTU_BYTES_PER_TRY = 512
# Errors raised at once: besides a refusal, a map that does not fit the device.
_FINAL = (*FINAL_ERRORS, MapMismatch, RegisterMapError)
SUNSPEC_MARKER = [0x5375, 0x6E53]  # "SunS"


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
        self.unit = url.unit()
        self.link = link_settings(url)
        self.framing = self.link.framing
        self.baud, self.parity, self.stopbits = self.link.baud, self.link.parity, self.link.stopbits
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
        self._guard = ReadingGuard()
        self._lock = asyncio.Lock()
        self._connection = ModbusConnection(
            self.link, timeout_s=timeout_s, peer="meter", name=str(url)
        )
        self._session: _Session | None = None

    @property
    def bytes_exchanged(self) -> int:
        """Bytes sent and received since construction, all framing included."""
        return self._connection.bytes_exchanged

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
            echoed = await self._connection.write_coil(self.unit, relay.coil, value)
            return RelayState.ON if echoed == relay.connected else RelayState.OFF

        async with self._lock:
            return await self._with_retries("switch the relay of", switch)

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # a connection already gone is closed all the same
            await self._drop()

    # ---------------------------------------------------------------------------- retries

    async def _with_retries(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            if self._session is None:
                await self._drop()
                await self._connection.connect()
                self._session = await self._start_session()
            return await operation()

        async def reset(error: MeterError) -> None:
            if not isinstance(error, _FINAL):
                await self._drop()

        def gave_up(last: MeterError) -> MeterError:
            return type(last)(
                f"{last}; could not {what} {self.url} after {tries_text(self.retries)} "
                f"({self.timeout_s} s each); {self._connection.hint(last, self.unit)}"
            )

        return await with_retries(
            what, str(self.url), attempt, self.policy, reset=reset, gave_up=gave_up, final=_FINAL
        )

    # ---------------------------------------------------------------------------- connection

    async def _drop(self) -> None:
        self._session = None
        await self._connection.drop()

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
        (bit,) = await self._connection.read_coils(self.unit, relay.coil, 1)
        return RelayState.ON if bit == relay.connected else RelayState.OFF

    async def _read_words(self, table: str, address: int, count: int) -> list[int]:
        return await self._connection.read_registers(self.unit, table, address, count)
