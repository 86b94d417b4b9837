"""A simulated ABNT NBR 14522 meter, fed by the shared `PhysicalMeter`.

Like a real meter it sends ENQ while idle (at once on connect and after each exchange, then
every `enq_interval_s`), answers a 66-byte command with a 258-byte response, NAKs a command
whose CRC is wrong (up to 7 times), resends a response the reader NAKs (up to 7 times), and
answers codes it does not know with 0x39 ('comando não implementado'). The fault knobs on
`Nbr14522Simulator` let tests provoke NAKs, corrupt CRCs and WAITs.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from meterchain.meters import nbr14522_codec as codec
from meterchain.meters.errors import FrameError, MeterTimeout
from meterchain.meters.sim.physical import MeterState, PhysicalMeter
from meterchain.meters.sim.server import RunningServer, start_serial_server, start_tcp_server
from meterchain.meters.transport import ByteStream, SerialSettings

log = logging.getLogger(__name__)

# Both within the standard's window between ENQs (about 22 ms to 502 ms). TCP idles cheaply;
# on a serial line fewer ENQs pile up in the pseudo-terminal while nobody is reading.
TCP_ENQ_INTERVAL_S = 0.1
SERIAL_ENQ_INTERVAL_S = 0.5

SIGNALS = frozenset((codec.ENQ, codec.ACK, codec.NAK, codec.WAIT))
GRID_FREQUENCY_HZ = 60.0
METER_TEMPERATURE_C = 25.0


class Nbr14522Simulator:
    """Serves one `PhysicalMeter` over NBR 14522 on any number of byte streams."""

    def __init__(
        self,
        meter: PhysicalMeter,
        *,
        enq_interval_s: float = SERIAL_ENQ_INTERVAL_S,
        block_timeout_s: float = 1.0,
        ack_timeout_s: float = 1.0,
    ) -> None:
        self.meter = meter
        self.serial = codec.serial_for_meter_id(meter.meter_id)
        self.enq_interval_s = enq_interval_s
        self.block_timeout_s = block_timeout_s
        self.ack_timeout_s = ack_timeout_s
        # Fault knobs for tests. The first two count down as they are used.
        self.nak_commands = 0  # treat the next N commands as if their CRC were wrong
        self.corrupt_responses = 0  # send the next N responses with a broken CRC
        self.waits_per_command = 0  # answer every command with this many WAITs first
        self.wait_interval_s = 0.01

    async def serve(self, stream: ByteStream) -> None:
        """Idle with ENQs and serve commands until the peer goes away."""
        while True:
            await stream.write(bytes((codec.ENQ,)))
            try:
                first = await stream.read_byte(self.enq_interval_s)
            except MeterTimeout:
                continue
            raw = await self._rest_of_block(stream, first)
            if raw is not None:
                await self._serve_command(stream, raw)

    async def _rest_of_block(self, stream: ByteStream, first: int) -> bytes | None:
        """The command that starts with `first`, or None for a stray signal or a cut-off block."""
        if first in SIGNALS:
            return None
        size = codec.COMMAND_SIZE
        if first == codec.ADDRESS_PREFIX:
            size += codec.ADDRESS_SIZE
        try:
            return bytes((first,)) + await stream.read_exactly(size - 1, self.block_timeout_s)
        except MeterTimeout:
            dropped = stream.discard_pending()
            log.debug("dropped a cut-off block (%d bytes) on %s", dropped + 1, stream.where)
            return None

    async def _next_block(self, stream: ByteStream) -> bytes | None:
        try:
            first = await stream.read_byte(self.block_timeout_s)
        except MeterTimeout:
            return None
        return await self._rest_of_block(stream, first)

    async def _serve_command(self, stream: ByteStream, raw: bytes) -> None:
        naks = 0
        waited = False
        while True:
            if raw[0] == codec.ADDRESS_PREFIX and not self._is_for_me(raw):
                return  # another meter on the bus: stay silent
            try:
                if self.nak_commands > 0:
                    self.nak_commands -= 1
                    raise FrameError("simulated CRC error")
                command = codec.decode_command(raw)
            except FrameError:
                naks += 1
                await stream.write(bytes((codec.NAK,)))
                if naks >= codec.MAX_NAKS:
                    return
                block = await self._next_block(stream)
                if block is None:
                    return
                raw = block
                continue
            if self.waits_per_command and not waited:
                waited = True
                for _ in range(self.waits_per_command):
                    await stream.write(bytes((codec.WAIT,)))
                    await asyncio.sleep(self.wait_interval_s)
                await stream.write(bytes((codec.ENQ,)))
                block = await self._next_block(stream)
                if block is None:
                    return
                raw = block
                continue
            break
        await self._send_response(stream, self.respond(command))

    def _is_for_me(self, raw: bytes) -> bool:
        try:
            return codec.decode_bcd(raw[1 : codec.ADDRESS_SIZE], "address") == self.serial
        except FrameError:
            return False

    async def _send_response(self, stream: ByteStream, frame: bytes) -> None:
        naks = 0
        while True:
            out = frame
            if self.corrupt_responses > 0:
                self.corrupt_responses -= 1
                out = frame[:-1] + bytes((frame[-1] ^ 0xFF,))
            await stream.write(out)
            try:
                reply = await stream.read_byte(self.ack_timeout_s)
            except MeterTimeout:
                return
            if reply != codec.NAK:
                return  # ACK ends the exchange; anything else breaks the sequence
            naks += 1
            if naks >= codec.MAX_NAKS:
                return

    def respond(self, command: codec.Command) -> bytes:
        """The response frame to a well-formed command (pure apart from the meter's state)."""
        state = self.meter.state()
        if command.code == codec.Code.INSTANTANEOUS:
            return codec.encode_instantaneous(self.serial, _instantaneous(state))
        if command.code == codec.Code.CURRENT_REGISTERS:
            registers = codec.Registers(
                _wall_clock(state),
                codec.wh_register(state.import_wh),
                codec.wh_register(state.export_wh),
            )
            return codec.encode_registers(self.serial, registers)
        if codec.is_relay_command(command):
            try:
                target = codec.relay_target(command)
            except ValueError:
                return codec.occurrence_response(
                    self.serial, codec.OCCURRENCE_INVALID_PARAMETER, command.code
                )
            action = codec.RELAY_ACTION_READ
            if target is not None:
                action = codec.RELAY_ACTION_SET
                self.meter.set_relay(target)
            status = codec.RelayStatus(self.meter.relay, _wall_clock(state))
            return codec.encode_relay_status(self.serial, action, status)
        return codec.not_implemented_response(self.serial, command.code)


def _wall_clock(state: MeterState) -> datetime:
    """The simulated meter keeps UTC on its clock."""
    return state.timestamp.astimezone(UTC).replace(tzinfo=None)


def _instantaneous(state: MeterState) -> codec.Instantaneous:
    """A single-phase meter: everything on phase A, B and C read zero."""
    return codec.Instantaneous(
        meter_clock=_wall_clock(state),
        voltage_v=(state.voltage_v, 0.0, 0.0),
        current_a=(state.current_a, 0.0, 0.0),
        power_w=(state.power_w, 0.0, 0.0),
        total_power_w=state.power_w,
        frequency_hz=GRID_FREQUENCY_HZ,
        temperature_c=METER_TEMPERATURE_C,
    )


async def serve_tcp(simulator: Nbr14522Simulator, host: str, port: int) -> RunningServer:
    """Serve an already configured simulator on TCP (port 0 picks a free port)."""
    return await start_tcp_server(simulator.serve, host, port)


async def serve_serial(
    simulator: Nbr14522Simulator, device: str, baud: int = 9600
) -> RunningServer:
    """Serve an already configured simulator on a serial device (8N1)."""
    return await start_serial_server(simulator.serve, device, SerialSettings(baud=baud))


async def start_tcp(meter: PhysicalMeter, host: str, port: int) -> RunningServer:
    return await serve_tcp(Nbr14522Simulator(meter, enq_interval_s=TCP_ENQ_INTERVAL_S), host, port)


async def start_serial(meter: PhysicalMeter, device: str) -> RunningServer:
    return await serve_serial(
        Nbr14522Simulator(meter, enq_interval_s=SERIAL_ENQ_INTERVAL_S), device
    )
