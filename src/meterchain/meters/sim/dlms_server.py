"""A simulated DLMS/COSEM meter over the TCP wrapper and over HDLC on a serial line.

Built on dlms-cosem's APDU classes (AARQ parsing, AARE, get/action responses, release) and HDLC
frame classes; the behaviour is the meter's: associations per client, access rights, object
list, link state and segmentation.

Associations (logical device 1):
- client 16, public: no authentication; may read every attribute, may not invoke methods.
- client 17, low-level security: the AARQ must name the LLS mechanism and carry the password
  (default `DEFAULT_PASSWORD`, "12345678"); may read and switch the relay.
Objects: see `SimulatedObjects`; every value comes from the `PhysicalMeter`.

Untrusted bytes: a request from a client without an association is refused (exception-response)
before anything in it is decoded, and every request is walked by meterchain's bounded decoder
(`dlms_codec.check_request`) before dlms-cosem parses it, so one request costs time and memory
in proportion to its length (at most `SERVER_MAX_PDU_BYTES`). The meter offers no access
selectors: an attribute asked for with selective access is answered scope-of-access-violated.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from dlms_cosem import dlms_data
from dlms_cosem import enumerations as dlms_enums
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.conformance import Conformance

from meterchain.meters import dlms_hdlc
from meterchain.meters.dlms_codec import (
    ACTIVE_ENERGY_EXPORT,
    ACTIVE_ENERGY_IMPORT,
    ACTIVE_POWER,
    CLOCK,
    CURRENT_L1,
    DISCONNECT_CONTROL,
    LLS_CLIENT,
    LOGICAL_DEVICE_NAME,
    MANAGEMENT_LOGICAL_DEVICE,
    PUBLIC_CLIENT,
    REMOTE_DISCONNECT,
    REMOTE_RECONNECT,
    VOLTAGE_L1,
    CosemClass,
    Unit,
    decode_request,
    encode_datetime,
    encode_wrapper,
    obis_bytes,
    obis_text,
)
from meterchain.meters.dlms_hdlc import FrameKind, HdlcFrame
from meterchain.meters.dlms_link import read_hdlc_frame, read_wrapper_frame
from meterchain.meters.errors import FrameError, MeterTimeout
from meterchain.meters.sim.physical import MeterState, PhysicalMeter
from meterchain.meters.sim.server import RunningServer, start_serial_server, start_tcp_server
from meterchain.meters.transport import ByteStream, SerialSettings
from meterchain.model import RelayState

log = logging.getLogger(__name__)

DEFAULT_PASSWORD = "12345678"
SERVER_MAX_PDU_BYTES = 1024
INACTIVITY_TIMEOUT_S = 120.0  # a meter drops an idle link after this long
FRAME_REST_TIMEOUT_S = 2.0  # once a frame has started, the rest must follow within this
AARQ, RLRQ = 0x60, 0x62  # the requests a client without an association may send

DataResult = Any  # a dlms-cosem data object, or a DataAccessResult
_Access = dlms_enums.DataAccessResult
_Action = dlms_enums.ActionResultStatus
# The answer to an attribute asked for with selective access: this meter offers no selectors.
_NO_SELECTORS = _Access.SCOPE_OF_ACCESS_VIOLATED


class _Boolean(dlms_data.BooleanData):  # type: ignore[misc]
    """dlms-cosem's BooleanData decodes but cannot encode itself."""

    def value_to_bytes(self) -> bytes:
        return b"\x01" if self.value else b"\x00"


class _OctetString(dlms_data.OctetStringData):  # type: ignore[misc]
    """dlms-cosem 25.1 writes any length as one byte; A-XDR needs 0x81 nn past 127."""

    def to_bytes(self) -> bytes:
        value = bytes(self.value)
        return b"\x09" + bytes(dlms_data.encode_variable_integer(len(value))) + value


def _boolean(value: bool) -> Any:
    return _Boolean(value)


def _octets(value: bytes) -> Any:
    return _OctetString(value)


def server_conformance(list_get: bool = True) -> Any:
    """The services this meter offers: get (with a list of attributes if `list_get`), action."""
    return Conformance(get=True, action=True, multiple_references=list_get)


def _negotiate(proposed: Any, offered: Any) -> Any:
    flags = {
        name: getattr(proposed, name) and getattr(offered, name)
        for name in Conformance.conformance_bit_position
    }
    return Conformance(**flags)


# --- the object list ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Register:
    data_type: Any
    scaler: int
    unit: Unit
    quantity: Callable[[MeterState], float]
    counter: bool = False  # counters are truncated so they never run ahead of the model


def _limit(value: int, data_type: Any) -> int:
    bits = int(data_type.LENGTH) * 8
    signed = data_type in (dlms_data.DoubleLongData, dlms_data.LongData, dlms_data.IntegerData)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return max(low, min(high, int(value)))


REGISTERS: dict[str, _Register] = {
    ACTIVE_ENERGY_IMPORT: _Register(
        dlms_data.DoubleLongUnsignedData, 0, Unit.WH, lambda s: s.import_wh, counter=True
    ),
    ACTIVE_ENERGY_EXPORT: _Register(
        dlms_data.DoubleLongUnsignedData, 0, Unit.WH, lambda s: s.export_wh, counter=True
    ),
    ACTIVE_POWER: _Register(dlms_data.DoubleLongData, 0, Unit.W, lambda s: s.power_w),
    VOLTAGE_L1: _Register(dlms_data.UnsignedLongData, -1, Unit.V, lambda s: s.voltage_v),
    CURRENT_L1: _Register(dlms_data.UnsignedLongData, -2, Unit.A, lambda s: s.current_a),
}

OBJECT_CLASSES: dict[str, CosemClass] = {
    LOGICAL_DEVICE_NAME: CosemClass.DATA,
    CLOCK: CosemClass.CLOCK,
    DISCONNECT_CONTROL: CosemClass.DISCONNECT_CONTROL,
    **{obis: CosemClass.REGISTER for obis in REGISTERS},
}


class SimulatedObjects:
    """The meter's COSEM objects, each attribute computed from one `MeterState` snapshot.

    `missing` names objects this meter lacks (they answer object-undefined); `list_get=False`
    makes a meter that does not offer get-with-list (multiple references) in its conformance.
    """

    def __init__(
        self, meter: PhysicalMeter, missing: Collection[str] = (), list_get: bool = True
    ) -> None:
        self.meter = meter
        self.missing = {obis_text(obis_bytes(obis)) for obis in missing}
        self.conformance = server_conformance(list_get)

    def read(self, state: MeterState, class_id: int, obis: str, attribute: int) -> DataResult:
        expected = OBJECT_CLASSES.get(obis)
        if expected is None or obis in self.missing:
            return _Access.OBJECT_UNDEFINED
        if class_id != expected:
            return _Access.OBJECT_CLASS_INCONSISTENT
        if attribute == 1:
            return _octets(obis_bytes(obis))
        if obis == LOGICAL_DEVICE_NAME and attribute == 2:
            return _octets(state.meter_id.encode())
        if obis == CLOCK:
            clock = {
                2: lambda: _octets(encode_datetime(state.timestamp)),
                3: lambda: dlms_data.LongData(0),  # time_zone: UTC
                4: lambda: dlms_data.UnsignedIntegerData(0),  # status: OK
            }
            return clock[attribute]() if attribute in clock else _Access.OBJECT_UNDEFINED
        if obis == DISCONNECT_CONTROL:
            connected = state.relay is RelayState.ON
            if attribute == 2:  # output_state: True while the load is connected
                return _boolean(connected)
            if attribute == 3:  # control_state: 0 disconnected, 1 connected
                return dlms_data.EnumData(1 if connected else 0)
            if attribute == 4:  # control_mode 1: remote disconnect and reconnect
                return dlms_data.EnumData(1)
            return _Access.OBJECT_UNDEFINED
        register = REGISTERS.get(obis)
        if register is not None:
            if attribute == 2:
                raw = register.quantity(state) / 10.0**register.scaler
                value = math.floor(raw) if register.counter else round(raw)
                return register.data_type(_limit(value, register.data_type))
            if attribute == 3:
                return dlms_data.DataStructure(
                    [dlms_data.IntegerData(register.scaler), dlms_data.EnumData(int(register.unit))]
                )
        return _Access.OBJECT_UNDEFINED

    def act(self, class_id: int, obis: str, method: int, data: bytes | None) -> Any:
        if obis != DISCONNECT_CONTROL or obis in self.missing:
            return _Action.OBJECT_UNDEFINED
        if class_id != CosemClass.DISCONNECT_CONTROL:
            return _Action.OBJECT_CLASS_INCONSISTENT
        if method not in (REMOTE_DISCONNECT, REMOTE_RECONNECT):
            return _Action.OBJECT_UNDEFINED
        if data not in (None, b"", b"\x0f\x00"):  # the parameter is integer(0)
            return _Action.TYPE_UNMATCHED
        self.meter.set_relay(RelayState.OFF if method == REMOTE_DISCONNECT else RelayState.ON)
        return _Action.SUCCESS


# --- the application layer, one per client link -------------------------------------------


def _get_response_normal(invoke: Any, result: DataResult) -> bytes:
    """dlms-cosem's GetResponseNormal.to_bytes appends bytes as an int (a TypeError in 25.1)."""
    if isinstance(result, _Access):
        return bytes(
            xdlms.GetResponseNormalWithError(error=result, invoke_id_and_priority=invoke).to_bytes()
        )
    return bytes([0xC4, 0x01]) + bytes(invoke.to_bytes()) + b"\x00" + bytes(result.to_bytes())


def _exception(state: Any, service: Any) -> bytes:
    return bytes(xdlms.ExceptionResponse(state, service).to_bytes())


class CosemServer:
    """Answers the APDUs of one client SAP: association, get, action, release."""

    def __init__(self, objects: SimulatedObjects, password: bytes, client: int) -> None:
        self.objects = objects
        self.password = password
        self.client = client
        self.associated = False
        self.may_act = False

    def handle(self, raw: bytes) -> bytes:
        if not self.associated and (not raw or raw[0] not in (AARQ, RLRQ)):
            # Checked before anything is decoded: without an association, nothing is read.
            return _exception(
                dlms_enums.StateException.SERVICE_NOT_ALLOWED,
                dlms_enums.ServiceException.OPERATION_NOT_POSSIBLE,
            )
        try:
            apdu, selective = decode_request(raw)
        except FrameError as exc:
            log.debug("client %s sent an APDU we cannot read: %s", self.client, exc)
            return _exception(
                dlms_enums.StateException.SERVICE_UNKNOWN,
                dlms_enums.ServiceException.OTHER_REASON,
            )
        if isinstance(apdu, acse.ApplicationAssociationRequest):
            return self._associate(apdu)
        if isinstance(apdu, acse.ReleaseRequest):
            self.associated = self.may_act = False
            return bytes(
                acse.ReleaseResponse(reason=dlms_enums.ReleaseResponseReason.NORMAL).to_bytes()
            )
        if isinstance(apdu, xdlms.GetRequestNormal):
            attribute = apdu.cosem_attribute
            state = self.objects.meter.state()
            result = _NO_SELECTORS if selective[0] else self._read(state, attribute)
            return _get_response_normal(apdu.invoke_id_and_priority, result)
        if (
            isinstance(apdu, xdlms.GetRequestWithList)
            and self.objects.conformance.multiple_references
        ):
            state = self.objects.meter.state()
            results = [
                _NO_SELECTORS if selected else self._read(state, item.attribute)
                for item, selected in zip(
                    apdu.cosem_attributes_with_selection, selective, strict=True
                )
            ]
            response = xdlms.GetResponseWithList(
                response_data=results, invoke_id_and_priority=apdu.invoke_id_and_priority
            )
            return bytes(response.to_bytes())
        if isinstance(apdu, xdlms.GetRequestNext):
            return bytes(
                xdlms.GetResponseNormalWithError(
                    error=_Access.NO_LONG_GET_IN_PROGRESS,
                    invoke_id_and_priority=apdu.invoke_id_and_priority,
                ).to_bytes()
            )
        if isinstance(apdu, xdlms.ActionRequestNormal):
            method = apdu.cosem_method
            if not self.may_act:
                status = _Action.READ_WRITE_DENIED
            else:
                status = self.objects.act(
                    int(method.interface),
                    obis_text(method.instance.to_bytes()),
                    method.method,
                    bytes(apdu.data) if apdu.data is not None else None,
                )
            return bytes(
                xdlms.ActionResponseNormal(
                    status=status, invoke_id_and_priority=apdu.invoke_id_and_priority
                ).to_bytes()
            )
        return _exception(
            dlms_enums.StateException.SERVICE_NOT_ALLOWED,
            dlms_enums.ServiceException.SERVICE_NOT_SUPPORTED,
        )

    def _read(self, state: MeterState, attribute: Any) -> DataResult:
        return self.objects.read(
            state,
            int(attribute.interface),
            obis_text(attribute.instance.to_bytes()),
            attribute.attribute,
        )

    def _associate(self, aarq: Any) -> bytes:
        self.associated = self.may_act = False
        diagnostics = dlms_enums.AcseServiceUserDiagnostics
        mechanism = aarq.authentication or dlms_enums.AuthenticationMechanism.NONE
        initiate = getattr(aarq.user_information, "content", None)
        if aarq.ciphered or not isinstance(initiate, xdlms.InitiateRequest):
            return self._reject(diagnostics.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        if self.client == PUBLIC_CLIENT:
            if mechanism is not dlms_enums.AuthenticationMechanism.NONE:
                return self._reject(diagnostics.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED)
        elif self.client == LLS_CLIENT:
            if mechanism is dlms_enums.AuthenticationMechanism.NONE:
                return self._reject(diagnostics.AUTHENTICATION_REQUIRED)
            if mechanism is not dlms_enums.AuthenticationMechanism.LLS:
                return self._reject(diagnostics.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED)
            if not hmac.compare_digest(bytes(aarq.authentication_value or b""), self.password):
                return self._reject(diagnostics.AUTHENTICATION_FAILED)
            self.may_act = True
        else:
            return self._reject(diagnostics.NO_REASON_GIVEN)
        if initiate.proposed_dlms_version_number < 6:
            return self._reject(diagnostics.NO_REASON_GIVEN)
        self.associated = True
        response = acse.ApplicationAssociationResponse(
            result=dlms_enums.AssociationResult.ACCEPTED,
            result_source_diagnostics=diagnostics.NULL,
            authentication=mechanism if self.may_act else None,
            user_information=acse.UserInformation(
                content=xdlms.InitiateResponse(
                    negotiated_conformance=_negotiate(
                        initiate.proposed_conformance, self.objects.conformance
                    ),
                    server_max_receive_pdu_size=SERVER_MAX_PDU_BYTES,
                )
            ),
        )
        return bytes(response.to_bytes())

    def _reject(self, diagnostic: Any) -> bytes:
        log.debug("client %s association rejected: %s", self.client, diagnostic.name)
        response = acse.ApplicationAssociationResponse(
            result=dlms_enums.AssociationResult.REJECTED_PERMANENT,
            result_source_diagnostics=diagnostic,
        )
        return bytes(response.to_bytes())


# --- TCP wrapper ----------------------------------------------------------------------------


def wrapper_handler(objects: SimulatedObjects, password: bytes) -> Callable[[ByteStream], Any]:
    """The connection handler of the TCP-wrapper meter, for `start_tcp_server`."""

    async def handler(stream: ByteStream) -> None:
        sessions: dict[int, CosemServer] = {}
        while True:
            try:
                header, apdu = await read_wrapper_frame(
                    stream, INACTIVITY_TIMEOUT_S, SERVER_MAX_PDU_BYTES
                )
            except MeterTimeout:
                return  # idle: drop the connection as a meter does
            if header.destination_wport != MANAGEMENT_LOGICAL_DEVICE:
                log.debug("APDU for wPort %s ignored", header.destination_wport)
                continue
            client = header.source_wport
            session = sessions.setdefault(client, CosemServer(objects, password, client))
            answer = session.handle(apdu)
            await stream.write(encode_wrapper(MANAGEMENT_LOGICAL_DEVICE, client, answer))

    return handler


# --- HDLC -----------------------------------------------------------------------------------


class HdlcServerLink:
    """The meter's side of HDLC (normal response mode, window 1), pure: frames in, frames out."""

    def __init__(
        self, objects: SimulatedObjects, password: bytes, address: int = MANAGEMENT_LOGICAL_DEVICE
    ) -> None:
        self.objects = objects
        self.password = password
        self.address = address
        self.client: int | None = None
        self.session: CosemServer | None = None
        self.send_sequence = 0  # V(S)
        self.receive_sequence = 0  # V(R)
        self.max_info_transmit = dlms_hdlc.DEFAULT_MAX_INFO_LENGTH
        self._request = bytearray()
        self._pending: list[bytes] = []

    def reset(self) -> None:
        self.client = None
        self.session = None
        self._request.clear()
        self._pending.clear()

    def on_frame(self, frame: HdlcFrame) -> list[bytes]:
        """The frames to send in answer to `frame` (none for frames that are not for us)."""
        if frame.destination != self.address:
            return []
        client = frame.source
        if frame.kind is FrameKind.SNRM:
            try:
                parameters = dlms_hdlc.decode_link_parameters(frame.information)
            except FrameError:
                return [dlms_hdlc.encode_dm(client, self.address)]
            self.reset()
            self.client = client
            self.session = CosemServer(self.objects, self.password, client)
            self.send_sequence = self.receive_sequence = 0
            self.max_info_transmit = parameters.max_info_receive
            return [dlms_hdlc.encode_ua(client, self.address)]
        if client != self.client:
            return [dlms_hdlc.encode_dm(client, self.address)] if frame.poll_final else []
        if frame.kind is FrameKind.DISC:
            self.reset()
            return [dlms_hdlc.encode_ua(client, self.address, b"")]
        if frame.kind is FrameKind.RR:
            if not self._pending:
                return [self._rr()]
            return [self._next_segment()]
        if frame.kind is FrameKind.I:
            return self._on_information(frame)
        return []

    def _on_information(self, frame: HdlcFrame) -> list[bytes]:
        if frame.send_sequence != self.receive_sequence:
            return [self._rr()]  # not the frame we expect: ask for it again
        self.receive_sequence = (self.receive_sequence + 1) % 8
        self._pending.clear()
        self._request += frame.information
        if len(self._request) > SERVER_MAX_PDU_BYTES + 3:
            self._request.clear()
            return [self._rr()]
        if frame.segmented:
            return [self._rr()]
        request, self._request = bytes(self._request), bytearray()
        if not request.startswith(dlms_hdlc.LLC_REQUEST) or self.session is None:
            return [self._rr()]
        answer = self.session.handle(request[len(dlms_hdlc.LLC_REQUEST) :])
        self._pending = dlms_hdlc.segments(dlms_hdlc.LLC_RESPONSE + answer, self.max_info_transmit)
        return [self._next_segment()]

    def _next_segment(self) -> bytes:
        information = self._pending.pop(0)
        assert self.client is not None
        frame = dlms_hdlc.encode_i(
            dlms_hdlc.client_address(self.client),
            dlms_hdlc.server_address(self.address),
            information,
            self.send_sequence,
            self.receive_sequence,
            segmented=bool(self._pending),
        )
        self.send_sequence = (self.send_sequence + 1) % 8
        return frame

    def _rr(self) -> bytes:
        assert self.client is not None
        return dlms_hdlc.encode_rr(
            dlms_hdlc.client_address(self.client),
            dlms_hdlc.server_address(self.address),
            self.receive_sequence,
        )


def hdlc_handler(link: HdlcServerLink) -> Callable[[ByteStream], Any]:
    """The serial-line handler of the HDLC meter, for `start_serial_server`."""

    async def handler(stream: ByteStream) -> None:
        while True:
            try:
                raw = await read_hdlc_frame(
                    stream, INACTIVITY_TIMEOUT_S, hunt=True, rest_timeout_s=FRAME_REST_TIMEOUT_S
                )
                frame = dlms_hdlc.decode_frame(raw)
            except MeterTimeout:
                link.reset()  # idle too long: the link is down
                continue
            except FrameError as exc:  # a corrupt frame is dropped without answer
                log.debug("HDLC frame dropped: %s", exc)
                stream.discard_pending()
                continue
            for answer in link.on_frame(frame):
                await stream.write(answer)

    return handler


# --- entry points ---------------------------------------------------------------------------


async def start_tcp(
    meter: PhysicalMeter,
    host: str,
    port: int,
    *,
    password: str = DEFAULT_PASSWORD,
    missing_objects: Collection[str] = (),
    list_get: bool = True,
) -> RunningServer:
    """Serve `meter` over the DLMS TCP wrapper (port 0 picks a free port)."""
    objects = SimulatedObjects(meter, missing_objects, list_get)
    return await start_tcp_server(wrapper_handler(objects, password.encode()), host, port)


async def start_serial(
    meter: PhysicalMeter,
    device: str,
    *,
    password: str = DEFAULT_PASSWORD,
    baud: int = 9600,
    missing_objects: Collection[str] = (),
    list_get: bool = True,
) -> RunningServer:
    """Serve `meter` over HDLC on a serial device (8N1 at `baud`)."""
    link = HdlcServerLink(SimulatedObjects(meter, missing_objects, list_get), password.encode())
    return await start_serial_server(hdlc_handler(link), device, SerialSettings(baud=baud))
