"""DLMS/COSEM meters (IEC 62056-5-3/-6-2), logical-name referencing, over the TCP wrapper
(`dlms+tcp://HOST:PORT?client=16&server=1`) or HDLC on a serial line
(`dlms+hdlc:///dev/ttyUSB0?client=17&password=…&server=1&baud=9600`).

dlms-cosem's `DlmsConnection` builds the AARQ and RLRQ and keeps the association's state; we move
its bytes over our own links so every wait has our timeout and every failure our error type.
One association is kept open between reads; register scalers are read once per association.
`deadline_s` in the URL bounds one read or command, every try included (meters/retry.py).
Nothing of dlms-cosem reaches stdout: its print()s are caught and logged at debug level.

Objects read: logical device name 0.0.42.0.0.255 (the meter id), clock 0.0.1.0.0.255,
registers 1.0.1.8.0.255 / 1.0.2.8.0.255 (Wh), 1.0.16.7.0.255 (W, signed), 1.0.32.7.0.255 (V),
1.0.31.7.0.255 (A), and disconnect control 0.0.96.3.10.255 (output_state; methods
remote_disconnect / remote_reconnect for the relay).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from dlms_cosem import cosem
from dlms_cosem import dlms_data as dlms_data_types
from dlms_cosem import enumerations as dlms_enums
from dlms_cosem import state as dlms_state
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.cosem.obis import Obis
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.invoke_id_and_priority import InvokeIdAndPriority
from dlms_cosem.security import LowLevelSecurityAuthentication, NoSecurityAuthentication

from meterchain.meters.base import ReadingGuard
from meterchain.meters.dlms_codec import (
    ACTIVE_ENERGY_EXPORT,
    ACTIVE_ENERGY_IMPORT,
    ACTIVE_POWER,
    CLOCK,
    CURRENT_L1,
    DISCONNECT_CONTROL,
    LLS_CLIENT,
    LOGICAL_DEVICE_NAME,
    PUBLIC_CLIENT,
    REGISTER_UNITS,
    REMOTE_DISCONNECT,
    REMOTE_RECONNECT,
    RESPONSE_TAGS,
    VOLTAGE_L1,
    AccessError,
    AttributeRef,
    CosemClass,
    Value,
    decode_apdu,
    decode_datetime,
    dlms_cosem_quietly,
    enum_name,
    get_normal_result,
    get_with_list_results,
    invoke_id,
    obis_bytes,
    result_name,
    scaled,
    scaler_unit,
)
from meterchain.meters.dlms_link import DlmsLink, HdlcLink, WrapperLink
from meterchain.meters.errors import (
    FrameError,
    ImplausibleReading,
    InvalidMeterUrl,
    MeterError,
    MeterRejected,
    MeterTimeout,
    UnsupportedCommand,
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
from meterchain.meters.transport import ByteStream, SerialSettings, open_serial, open_tcp
from meterchain.meters.url import MeterUrl
from meterchain.model import DeviceCommand, Reading, RelayState, SetRelay

T = TypeVar("T")

KNOWN_OPTIONS = {"client", "server", "password", "baud", DEADLINE_OPTION}
RELEASE_TIMEOUT_S = 0.5
# One try: link set-up (SNRM on HDLC), the association and the gets, each answer waited for,
# with room for a meter that serves one attribute per get; on HDLC about a kilobyte of frames.
ANSWERS_PER_TRY = 8
HDLC_BYTES_PER_TRY = 1024
CLOCK_STATUS_INVALID = 0x01  # bit 0 of a date-time's clock status

_VALUES = {
    "logical device name": AttributeRef(CosemClass.DATA, LOGICAL_DEVICE_NAME, 2),
    "clock": AttributeRef(CosemClass.CLOCK, CLOCK, 2),
    "relay": AttributeRef(CosemClass.DISCONNECT_CONTROL, DISCONNECT_CONTROL, 2),
    **{obis: AttributeRef(CosemClass.REGISTER, obis, 2) for obis in REGISTER_UNITS},
}
# Objects a meter may lack: without a clock the read time stands in, without a disconnector
# the load is always connected.
_OPTIONAL = {"clock", "relay"}


def _scaler_ref(obis: str) -> AttributeRef:
    return AttributeRef(CosemClass.REGISTER, obis, 3)


def _cosem_attribute(ref: AttributeRef) -> Any:
    try:
        interface = dlms_enums.CosemInterface(ref.class_id)
    except ValueError:
        raise ValueError(f"class id {ref.class_id} is not a COSEM interface class") from None
    obis = obis_bytes(ref.obis)
    return cosem.CosemAttribute(interface, Obis(*obis), ref.attribute)


@dataclass
class _Association:
    """An open link with an accepted application association."""

    link: DlmsLink
    connection: Any  # dlms_cosem.connection.DlmsConnection
    multiple_references: bool
    scalers: dict[str, tuple[int, int]] = field(default_factory=dict)


_AARE_HINTS = {
    "authentication-failed": "the password is wrong: check password= in the URL",
    "authentication-required": "this client needs a password: add password=… to the URL",
    "authentication-mechanism-name-not-recognized": (
        "this client does not log in with a password here: drop password= or use the "
        f"client that does (client={LLS_CLIENT})"
    ),
}


class DlmsMeter:
    """A DLMS/COSEM meter behind a `dlms+tcp://` or `dlms+hdlc://` URL."""

    def __init__(
        self, url: MeterUrl, *, timeout_s: float = 2.0, retries: int = DEFAULT_TRIES
    ) -> None:
        if url.protocol != "dlms":
            raise InvalidMeterUrl(f"{url}: not a DLMS URL")
        if url.transport not in ("tcp", "hdlc", "serial"):
            raise InvalidMeterUrl(
                f"{url}: DLMS runs over tcp (wrapper) or hdlc (serial line), not {url.transport}"
            )
        url.reject_unknown_options(KNOWN_OPTIONS)
        password = url.options.get("password")
        self.url = url
        self.password: bytes | None = password.encode() if password else None
        self.client = url.int_option("client", LLS_CLIENT if password else PUBLIC_CLIENT)
        self.server = url.int_option("server", 1)
        self.baud = url.int_option("baud", 9600)
        if not 1 <= self.client <= 0x7F:
            raise InvalidMeterUrl(f"{url}: client={self.client} must be an address 1-127")
        if not 1 <= self.server <= 0x7F:
            raise InvalidMeterUrl(f"{url}: server={self.server} must be a logical address 1-127")
        if self.baud <= 0:
            raise InvalidMeterUrl(f"{url}: baud={self.baud} must be positive")
        if "baud" in url.options and not url.is_serial:
            raise InvalidMeterUrl(f"{url}: baud= applies to serial lines (dlms+hdlc://) only")
        self.timeout_s = timeout_s
        self.retries = retries  # tries in all, the first included
        self.policy = RetryPolicy.for_meter(
            url,
            timeout_s,
            retries,
            answers_per_try=ANSWERS_PER_TRY,
            line_s=line_time_s(HDLC_BYTES_PER_TRY, self.baud) if url.is_serial else 0.0,
        )
        self.deadline_s = self.policy.deadline_s
        self._association: _Association | None = None
        self._stream: ByteStream | None = None  # the connection in use, if any
        self._guard = ReadingGuard()
        self._bytes_closed = 0
        self._invoke = 0
        self._lock = asyncio.Lock()

    @property
    def bytes_exchanged(self) -> int:
        """Bytes sent and received since construction, all framing included."""
        stream = self._stream
        live = stream.bytes_read + stream.bytes_written if stream is not None else 0
        return self._bytes_closed + live

    # --- the Meter interface -------------------------------------------------------------------

    @typed_errors
    async def read(self) -> Reading:
        reading = await self._attempt("read", self._read_once)
        return self._guard.check(reading)

    @typed_errors
    async def command(self, command: DeviceCommand) -> RelayState:
        if not isinstance(command, SetRelay):
            raise UnsupportedCommand(
                f"{self.url}: a DLMS meter's driver switches the relay only; "
                f"{type(command).__name__} is not supported"
            )
        return await self._attempt(
            f"switching the relay {command.state.value}",
            lambda: self._switch_once(command.state),
        )

    async def get(self, obis: str, attribute: int = 2, class_id: int = CosemClass.DATA) -> Value:
        """One attribute's value, e.g. `await meter.get("1.0.1.8.0.255", 2, 3)`.

        The meter's refusal (object-undefined, read-write-denied, …) raises `MeterRejected`; a
        malformed OBIS code or class id is the caller's mistake: `ValueError` before any traffic.
        """
        ref = AttributeRef(class_id, obis, attribute)
        _cosem_attribute(ref)
        return await self._get_one(ref)

    @typed_errors
    async def _get_one(self, ref: AttributeRef) -> Value:
        async def once() -> Value:
            association = await self._associated()
            (result,) = await self._get(association, [ref])
            return self._value_or_raise(ref, result)

        return await self._attempt(f"read {ref}", once)

    async def close(self) -> None:
        """Release the association (RLRQ), disconnect the link and close the connection."""
        async with self._lock:
            association, self._association = self._association, None
            if association is None:
                await self._close_stream()
                return
            try:
                request = association.connection.get_rlrq()
                await asyncio.wait_for(self._exchange(association, request), RELEASE_TIMEOUT_S)
            except Exception:  # a meter that cannot release is closed all the same
                pass
            with contextlib.suppress(Exception):
                await self._close_link(association)

    # --- one attempt of each operation ---------------------------------------------------------

    async def _read_once(self) -> Reading:
        association = await self._associated()
        refs = list(_VALUES.values())
        missing_scalers = [obis for obis in REGISTER_UNITS if obis not in association.scalers]
        refs += [_scaler_ref(obis) for obis in missing_scalers]
        results = dict(zip(refs, await self._get(association, refs), strict=True))
        for obis in missing_scalers:
            ref = _scaler_ref(obis)
            scaler, unit = scaler_unit(self._value_or_raise(ref, results[ref]), str(ref))
            if unit != REGISTER_UNITS[obis]:
                raise ImplausibleReading(
                    f"{self.url}: {obis} reports unit {unit}, expected "
                    f"{int(REGISTER_UNITS[obis])} ({REGISTER_UNITS[obis].name}); "
                    "the meter's object list differs from what this driver reads"
                )
            association.scalers[obis] = (scaler, unit)
        values: dict[str, Value] = {}
        for name, ref in _VALUES.items():
            result = results[ref]
            if name in _OPTIONAL and isinstance(result, AccessError) and result.code == 4:
                values[name] = None  # object-undefined: the meter does not have it
            else:
                values[name] = self._value_or_raise(ref, result)

        def register(obis: str) -> float:
            return scaled(values[obis], association.scalers[obis][0], obis)

        device_name = values["logical device name"]
        if isinstance(device_name, bytes):
            meter_id = device_name.decode("utf-8", errors="replace")
        elif isinstance(device_name, str):
            meter_id = device_name
        else:
            raise FrameError(
                f"{LOGICAL_DEVICE_NAME}: expected an octet-string, got {device_name!r}"
            )
        clock = values["clock"]
        relay = values["relay"]
        if relay is not None and not isinstance(relay, bool):
            raise FrameError(
                f"{DISCONNECT_CONTROL} output_state: expected a boolean, got {relay!r}"
            )
        timestamp = datetime.now(UTC)
        if clock is not None:
            meter_time = decode_datetime(clock)
            assert isinstance(clock, bytes)  # decode_datetime checked it
            if clock[11] == 0xFF or not clock[11] & CLOCK_STATUS_INVALID:
                timestamp = meter_time  # a clock that says it is invalid is not believed
        return Reading(
            meter_id=meter_id,
            timestamp=timestamp,
            import_wh=register(ACTIVE_ENERGY_IMPORT),
            export_wh=register(ACTIVE_ENERGY_EXPORT),
            power_w=register(ACTIVE_POWER),
            voltage_v=register(VOLTAGE_L1),
            current_a=register(CURRENT_L1),
            relay=RelayState.OFF if relay is False else RelayState.ON,
        )

    async def _switch_once(self, state: RelayState) -> RelayState:
        association = await self._associated()
        method = REMOTE_DISCONNECT if state is RelayState.OFF else REMOTE_RECONNECT
        method_name = "remote_disconnect" if state is RelayState.OFF else "remote_reconnect"
        request = xdlms.ActionRequestNormal(
            cosem_method=cosem.CosemMethod(
                dlms_enums.CosemInterface.DISCONNECT_CONTROL,
                Obis(*obis_bytes(DISCONNECT_CONTROL)),
                method,
            ),
            data=dlms_data_types.IntegerData(0).to_bytes(),
            invoke_id_and_priority=self._next_invoke(),
        )
        response, _ = await self._exchange(association, request)
        status = getattr(response, "status", None)
        if status is not dlms_enums.ActionResultStatus.SUCCESS:
            code = int(status) if status is not None else 250
            hint = ""
            if code == dlms_enums.ActionResultStatus.READ_WRITE_DENIED:
                hint = (
                    f"; client {self.client} may not switch the relay: use a client with the "
                    f"right (client={LLS_CLIENT}&password=…)"
                )
            raise MeterRejected(
                f"{self.url}: the meter refused {method_name} on {DISCONNECT_CONTROL}: "
                f"{result_name(code)}{hint}"
            )
        ref = _VALUES["relay"]
        (result,) = await self._get(association, [ref])
        output_state = self._value_or_raise(ref, result)
        if not isinstance(output_state, bool):
            raise FrameError(f"{ref}: expected a boolean, got {output_state!r}")
        return RelayState.ON if output_state else RelayState.OFF

    # --- association and requests --------------------------------------------------------------

    async def _associated(self) -> _Association:
        if self._association is None:
            self._association = await self._associate()
        return self._association

    async def _open_link(self) -> DlmsLink:
        await self._close_stream()
        if self.url.transport == "tcp":
            self._stream = await open_tcp(self.url.host, self.url.port, self.timeout_s)
            return WrapperLink(self._stream, self.client, self.server, self.timeout_s)
        self._stream = await open_serial(self.url.device, SerialSettings(baud=self.baud))
        link = HdlcLink(self._stream, self.client, self.server, self.timeout_s)
        try:
            await link.open()
        except BaseException:
            await self._close_stream()
            raise
        return link

    async def _associate(self) -> _Association:
        link = await self._open_link()
        authentication: Any = (
            LowLevelSecurityAuthentication(secret=self.password)
            if self.password is not None
            else NoSecurityAuthentication()
        )
        connection = DlmsConnection(authentication=authentication, client_system_title=None)
        association = _Association(link, connection, multiple_references=False)
        try:
            aare, _ = await self._exchange(association, connection.get_aarq())
            if not isinstance(aare, acse.ApplicationAssociationResponse):
                raise FrameError(f"expected an AARE, got {type(aare).__name__}")
            if aare.result is not dlms_enums.AssociationResult.ACCEPTED:
                diagnostic = enum_name(aare.result_source_diagnostics)
                content = getattr(aare.user_information, "content", None)
                if isinstance(content, xdlms.ConfirmedServiceError):
                    diagnostic += f", {enum_name(content.error)}"
                hint = _AARE_HINTS.get(diagnostic, "check client= and server= in the URL")
                raise MeterRejected(
                    f"{self.url}: the meter rejected the association of client {self.client} "
                    f"({enum_name(aare.result)}: {diagnostic}); {hint}"
                )
        except BaseException:
            await self._close_link(association)
            raise
        association.multiple_references = bool(connection.conformance.multiple_references)
        return association

    def _next_invoke(self) -> Any:
        self._invoke = (self._invoke + 1) % 16
        return InvokeIdAndPriority(invoke_id=self._invoke, confirmed=True, high_priority=True)

    async def _exchange(self, association: _Association, request: Any) -> tuple[Any, bytes]:
        """Send one APDU through the association's state machine; return the answer APDU."""
        connection = association.connection
        try:
            with dlms_cosem_quietly():
                data = bytes(connection.send(request))
        except Exception as exc:  # dlms-cosem refuses a request its state does not allow
            raise FrameError(f"DLMS association with {self.url} out of step: {exc}") from None
        answer = await association.link.request(data)
        apdu = decode_apdu(answer, RESPONSE_TAGS)
        if isinstance(apdu, xdlms.ExceptionResponse):
            raise MeterRejected(
                f"{self.url}: the meter answered with an exception-response "
                f"({enum_name(apdu.state_error)}, {enum_name(apdu.service_error)}) "
                f"to our {type(request).__name__}"
            )
        if data[0] in (0xC0, 0xC3) and invoke_id(answer) != invoke_id(data):
            raise FrameError(
                f"answer for invoke-id {invoke_id(answer)}, expected {invoke_id(data)}: "
                "a late answer to an earlier request?"
            )
        try:
            with dlms_cosem_quietly():
                if isinstance(apdu, acse.ApplicationAssociationResponse):
                    # next_event also takes the negotiated conformance and PDU size from the AARE
                    connection.receive_data(answer)
                    return connection.next_event(), answer
                connection.state.process_event(apdu)  # the APDU is parsed already: just step
            return apdu, answer
        except Exception as exc:
            connection.clear_buffer()
            raise FrameError(
                f"unexpected {type(apdu).__name__} from {self.url} in DLMS state "
                f"{connection.state.current_state}: {exc}"
            ) from None

    async def _get(
        self, association: _Association, refs: Sequence[AttributeRef]
    ) -> list[Value | AccessError]:
        """Values (or access errors) of `refs`, in one request when the meter allows lists."""
        if association.multiple_references and len(refs) > 1:
            request = xdlms.GetRequestWithList(
                cosem_attributes_with_selection=[
                    cosem.CosemAttributeWithSelection(_cosem_attribute(ref), None) for ref in refs
                ],
                invoke_id_and_priority=self._next_invoke(),
            )
            _, answer = await self._exchange(association, request)
            results = get_with_list_results(answer)
            if len(results) != len(refs):
                raise FrameError(f"asked for {len(refs)} attributes, got {len(results)} results")
            return results
        out: list[Value | AccessError] = []
        for ref in refs:
            request = xdlms.GetRequestNormal(
                cosem_attribute=_cosem_attribute(ref), invoke_id_and_priority=self._next_invoke()
            )
            _, answer = await self._exchange(association, request)
            if len(answer) > 1 and answer[1] != 1:
                raise FrameError(
                    f"{ref}: block transfer (get-response type {answer[1]}) is not supported"
                )
            out.append(get_normal_result(answer))
        return out

    def _value_or_raise(self, ref: AttributeRef, result: Value | AccessError) -> Value:
        if isinstance(result, AccessError):
            raise MeterRejected(f"{self.url}: the meter refused to read {ref}: {result.name}")
        return result

    # --- retries and connection handling -------------------------------------------------------

    async def _attempt(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        async def reset(error: MeterError) -> None:
            if not isinstance(error, FINAL_ERRORS) or not self._ready():
                await self._drop_association()

        def gave_up(last: MeterError) -> MeterError:
            return self._gave_up(what, last, self.retries)

        async with self._lock:
            return await with_retries(
                what, str(self.url), operation, self.policy, reset=reset, gave_up=gave_up
            )

    def _gave_up(self, what: str, last: MeterError, tries: int) -> MeterError:
        where = f"{self.url} after {tries_text(tries)}"
        if isinstance(last, MeterTimeout):
            check = (
                "is the meter powered, the cable on the right port and the baud rate right?"
                if self.url.is_serial
                else "is the meter reachable and does it answer client/server addresses "
                f"{self.client}/{self.server}?"
            )
            return MeterTimeout(
                f"no answer to {what} from {where} ({self.timeout_s} s each): {last}; {check}"
            )
        if isinstance(last, FrameError):
            return FrameError(
                f"corrupt answers to {what} from {where}: {last}; check the line (noise, baud "
                "rate) and that the device speaks DLMS/COSEM"
            )
        return MeterError(f"{what} from {self.url} failed after {tries_text(tries)}: {last}")

    def _ready(self) -> bool:
        """Whether the association can take the next request (not stuck mid-exchange)."""
        association = self._association
        return association is not None and (
            association.connection.state.current_state is dlms_state.READY
        )

    async def _drop_association(self) -> None:
        """Forget the association after an error; the next attempt connects afresh."""
        self._association = None
        await self._close_stream()

    async def _close_link(self, association: _Association) -> None:
        with contextlib.suppress(MeterError, TimeoutError, OSError):
            await asyncio.wait_for(association.link.close(), RELEASE_TIMEOUT_S)
        await self._close_stream()

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._bytes_closed += stream.bytes_read + stream.bytes_written
        with contextlib.suppress(OSError, MeterError):
            await stream.close()
