"""A simulated Modbus meter: pymodbus's server, its registers computed from a PhysicalMeter.

Every read request recomputes the registers from `meter.state()` through the register map's
codec (pymodbus 3.16 calls a SimDevice's `action` before it answers); writing the relay coil
calls `meter.set_relay`. Any shipped map can be served (`map="sunspec203"` lays out the SunSpec
marker, the common model and model 203 from holding register 40000).

Serving (TCP or RTU, unknown unit ids answered as a gateway or a bus would) is
`meters/sim/modbus_serving.py`, shared with the device simulators.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from meterchain.meters.errors import MeterError
from meterchain.meters.modbus_maps import (
    READING_FIELDS,
    Point,
    RegisterMap,
    encode_number,
    encode_raw,
    encode_text,
    load_map,
    unimplemented_words,
)
from meterchain.meters.sim.modbus_serving import serve_serial, serve_tcp, sim_device
from meterchain.meters.sim.physical import MeterState, PhysicalMeter
from meterchain.meters.sim.server import RunningServer
from meterchain.model import RelayState

SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_END = (0xFFFF, 0)
_TABLE_OF_FUNCTION = {3: "holding", 4: "input", 6: "holding", 16: "holding", 22: "holding"}
_COIL_FUNCTIONS = (1, 5, 15)


class MeterRegisters:
    """The registers of one simulated meter under one map, computed from its physical state."""

    def __init__(self, meter: PhysicalMeter, register_map: RegisterMap) -> None:
        self.meter = meter
        self.register_map = register_map
        self.where = register_map.locate()
        self.blocks = self._blocks()
        self._static = {table: [0] * size for table, (_, size) in self.blocks.items()}
        self._live: list[tuple[Point, str, int]] = []
        for name, point in register_map.points.items():
            table, address = self.where[name]
            if point.quantity in READING_FIELDS:
                self._live.append((point, table, address))
            else:
                self._put(self._static[table], table, address, self._fixed_words(point))
        layout = register_map.sunspec
        if layout is not None:
            holding = self._static["holding"]
            self._put(holding, "holding", layout.base, SUNSPEC_MARKER)
            address = layout.base + 2
            for model_id, length in layout.models:
                self._put(holding, "holding", address, (model_id, length))
                address += 2 + length
            self._put(holding, "holding", address, SUNSPEC_END)

    def _blocks(self) -> dict[str, tuple[int, int]]:
        """(first address, size) of the registers served in each table."""
        ranges: dict[str, tuple[int, int]] = {}
        for name, point in self.register_map.points.items():
            table, address = self.where[name]
            low, high = ranges.get(table, (address, address + point.registers))
            ranges[table] = (min(low, address), max(high, address + point.registers))
        layout = self.register_map.sunspec
        if layout is not None:
            low, high = ranges.get("holding", (layout.base, layout.end_address + 2))
            ranges["holding"] = (min(low, layout.base), max(high, layout.end_address + 2))
        return {table: (low, high - low) for table, (low, high) in ranges.items()}

    def _put(self, image: list[int], table: str, address: int, words: Sequence[int]) -> None:
        """Write `words` at `address` into `image`, the registers of `table`."""
        offset = address - self.blocks[table][0]
        image[offset : offset + len(words)] = words

    def _fixed_words(self, point: Point) -> list[int]:
        """Registers that do not change: constants, the meter's id, unimplemented points."""
        if point.quantity == "meter_id":
            return _identity_words(self.register_map, point, self.meter.meter_id)
        if point.value is None:
            return unimplemented_words(self.register_map, point)
        if isinstance(point.value, str):
            return encode_text(point.value, point.registers)
        return encode_raw(self.register_map, point, float(point.value))

    def _scale_factor(self, point: Point) -> int:
        if point.scale_factor is None:
            return 0
        value = self.register_map.points[point.scale_factor].value
        return int(value) if isinstance(value, int | float) else 0

    def image(self, table: str, state: MeterState) -> list[int]:
        """Every register of `table` as the meter in `state` shows it."""
        image = list(self._static[table])
        for point, point_table, address in self._live:
            if point_table != table:
                continue
            assert point.quantity is not None
            value = float(getattr(state, point.quantity))
            try:
                words = encode_number(self.register_map, point, value, self._scale_factor(point))
            except ValueError:
                if not self.register_map.sunspec_sentinels:
                    raise
                words = unimplemented_words(self.register_map, point)  # SunSpec: out of range
            self._put(image, table, address, words)
        return image

    def sim_device(self, unit: int) -> SimDevice:
        """A pymodbus SimDevice whose action recomputes the registers on every request."""

        def registers_of(table: str) -> SimData | None:
            if table not in self.blocks:
                return None
            start, size = self.blocks[table]
            words = self._static[table]
            return SimData(start, values=words[:size], datatype=DataType.REGISTERS, readonly=True)

        relay = self.register_map.relay
        coil = relay.coil if relay else 0
        return sim_device(
            unit,
            self.action,
            coils=SimData(coil, values=[False], datatype=DataType.BITS),
            holding=registers_of("holding"),
            input_registers=registers_of("input"),
        )

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before it answers; it fills `registers` in place."""
        if function_code in _COIL_FUNCTIONS:
            return self._coils(start_address, address, registers, set_values)
        table = _TABLE_OF_FUNCTION.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if table not in self.blocks or set_values is not None:
            return ExcCodes.ILLEGAL_ADDRESS
        try:
            words = self.image(table, self.meter.state())
        except ValueError:
            return ExcCodes.DEVICE_FAILURE
        registers[: len(words)] = words
        return None

    def _coils(
        self,
        start_register: int,
        address: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        relay = self.register_map.relay
        if relay is None:
            return ExcCodes.ILLEGAL_ADDRESS
        if set_values is not None:
            index = relay.coil - address
            if 0 <= index < len(set_values):
                connected = bool(set_values[index]) == relay.connected
                self.meter.set_relay(RelayState.ON if connected else RelayState.OFF)
        bit = relay.coil - 16 * start_register
        value = (self.meter.relay is RelayState.ON) == relay.connected
        mask = 1 << (bit % 16)
        word = registers[bit // 16]
        registers[bit // 16] = word | mask if value else word & ~mask
        return None


def _identity_words(register_map: RegisterMap, point: Point, meter_id: str) -> list[int]:
    if point.type == "string":
        try:
            return encode_text(meter_id, point.registers)
        except ValueError as exc:
            raise MeterError(
                f"map {register_map.name!r} cannot serve meter id {meter_id!r}: {exc}"
            ) from None
    if not meter_id.isdigit():
        raise MeterError(
            f"map {register_map.name!r} keeps the meter id as a {point.type} serial number; "
            f"{meter_id!r} is not a number"
        )
    try:
        return encode_raw(register_map, point, float(int(meter_id)))
    except ValueError as exc:
        raise MeterError(f"meter id {meter_id!r} does not fit: {exc}") from None


def _registers(meter: PhysicalMeter, map_name: str) -> MeterRegisters:
    return MeterRegisters(meter, load_map(map_name))


async def start_tcp(
    meter: PhysicalMeter, host: str, port: int, *, map: str = "sdm630", unit: int = 1
) -> RunningServer:
    """Serve `meter` as a Modbus TCP device (port 0 picks a free port; see `.port`)."""
    device = _registers(meter, map).sim_device(unit)
    return await serve_tcp([device], host, port, error=MeterError)


async def start_serial(
    meter: PhysicalMeter,
    device: str,
    *,
    map: str = "sdm630",
    unit: int = 1,
    baud: int = 9600,
) -> RunningServer:
    """Serve `meter` as a Modbus RTU device on a serial port (or one end of a virtual cable)."""
    sim_device = _registers(meter, map).sim_device(unit)
    return await serve_serial([sim_device], device, baud=baud, error=MeterError)
