"""The registers of a simulated SunSpec inverter (storage or PV), computed from a PhysicalMeter.

Reads recompute the live points from `meter.state()` through the device map's codec; writes
to the points the simulated device emulates are checked (range, access), stored as written
and applied to the physical model, so the meter simulators see what the device does. Writes
to any other point are refused with exception 2 (illegal data address), values out of range
with exception 3 (illegal data value), as a device does.

`faults` makes a misbehaving device for tests: "refuse-writes" answers every write with
exception 4 (server device failure); "ignore-writes" acknowledges writes and keeps the old
values, so a read-back shows the write did not take.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from meterchain.devices.maps import DeviceMap
from meterchain.meters.modbus_maps import (
    Point,
    decode_raw,
    encode_raw,
    encode_text,
    unimplemented_words,
)
from meterchain.meters.sim.modbus_serving import sim_device
from meterchain.meters.sim.physical import MeterState, PhysicalMeter

SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_END = (0xFFFF, 0)
FAULTS = ("refuse-writes", "ignore-writes")
NOMINAL_BATTERY_V = 51.2
PV_DC_EFFICIENCY = 0.97

# ChaSt (model 124 and 802) and St (model 101) values, from the SunSpec model definitions.
CHA_ST = {"EMPTY": 2, "DISCHARGING": 3, "CHARGING": 4, "FULL": 5, "HOLDING": 6}
INVERTER_ST = {"SLEEPING": 2, "MPPT": 4, "THROTTLED": 5}
CHARGE_BIT, DISCHARGE_BIT = 1, 2  # StorCtl_Mod bit 0 (CHARGE) and bit 1 (DiSCHARGE)


class Refused(Exception):
    """A write the simulated device refuses, with the Modbus exception it answers."""

    def __init__(self, code: ExcCodes) -> None:
        super().__init__(code.name)
        self.code = code


class Behaviour:
    """What one kind of SunSpec device does: its live points and its controls."""

    kind = ""
    #: control point -> value (in the point's unit) the device starts with
    defaults: ClassVar[Mapping[str, float]] = {}
    #: the controls without which the device cannot work (the others are optional models')
    required: ClassVar[frozenset[str]] = frozenset()

    def live(self, state: MeterState) -> dict[str, float]:
        raise NotImplementedError

    def shown(self, state: MeterState, controls: dict[str, float]) -> dict[str, float]:
        """The controls as the device shows them now (a revert timer may have reset some)."""
        return controls

    def apply(self, meter: PhysicalMeter, controls: dict[str, float]) -> None:
        """Act on the controls (raise Refused for values the device does not take)."""
        raise NotImplementedError


class StorageBehaviour(Behaviour):
    """Models 124 + 802: a battery that follows the site's surplus inside the limits set."""

    kind = "battery"
    defaults: ClassVar[Mapping[str, float]] = {
        "StorCtl_Mod": 0,
        "InWRte": 100.0,
        "OutWRte": 100.0,
        "InOutWRte_RvrtTms": 0,
        "MinRsvPct": 5,
        "ChaGriSet": 1,
        "SoCRsvMin": 5.0,
        "SocRsvMax": 100.0,
    }
    required = frozenset({"StorCtl_Mod", "InWRte", "OutWRte", "InOutWRte_RvrtTms"})

    def __init__(self, meter: PhysicalMeter) -> None:
        spec = meter.battery_spec
        if spec is None:
            raise ValueError(f"meter {meter.meter_id} has no battery to serve")
        self.max_power_w = spec.max_power_w
        self.capacity_wh = spec.capacity_wh

    def live(self, state: MeterState) -> dict[str, float]:
        soc_pct = 100 * (state.battery_soc_fraction or 0.0)
        power = state.battery_power_w
        if power > 0.5:
            status = CHA_ST["CHARGING"]
        elif power < -0.5:
            status = CHA_ST["DISCHARGING"]
        elif soc_pct >= 99.99:
            status = CHA_ST["FULL"]
        elif soc_pct <= 0.01:
            status = CHA_ST["EMPTY"]
        else:
            status = CHA_ST["HOLDING"]
        return {
            "WChaMax": self.max_power_w,
            "ChaState": soc_pct,
            "ChaSt": status,
            "AHRtg": self.capacity_wh / NOMINAL_BATTERY_V,
            "WHRtg": self.capacity_wh,
            "WChaRteMax": self.max_power_w,
            "WDisChaRteMax": self.max_power_w,
            "SoC": soc_pct,
            "ChaSt_802": status,
            "W": power,
            "A": power / NOMINAL_BATTERY_V,
        }

    def shown(self, state: MeterState, controls: dict[str, float]) -> dict[str, float]:
        if state.battery_window_w is None and controls["StorCtl_Mod"]:
            return {**controls, "StorCtl_Mod": 0}  # the revert timer handed control back
        return controls

    def window_w(self, controls: dict[str, float]) -> tuple[float, float] | None:
        mode = int(controls["StorCtl_Mod"])
        if mode & ~(CHARGE_BIT | DISCHARGE_BIT):
            raise Refused(ExcCodes.ILLEGAL_VALUE)
        if not mode:
            return None
        high = self.max_power_w
        low = -self.max_power_w
        if mode & CHARGE_BIT:
            high = controls["InWRte"] / 100 * self.max_power_w
        if mode & DISCHARGE_BIT:
            low = -controls["OutWRte"] / 100 * self.max_power_w
        if low > high:
            raise Refused(ExcCodes.ILLEGAL_VALUE)
        return (low, high)

    def apply(self, meter: PhysicalMeter, controls: dict[str, float]) -> None:
        for name in ("InWRte", "OutWRte"):
            if not -100 <= controls[name] <= 100:
                raise Refused(ExcCodes.ILLEGAL_VALUE)
        for name in ("MinRsvPct", "SoCRsvMin", "SocRsvMax"):
            if not 0 <= controls.get(name, 0) <= 100:
                raise Refused(ExcCodes.ILLEGAL_VALUE)
        if controls.get("ChaGriSet", 0) not in (0, 1):
            raise Refused(ExcCodes.ILLEGAL_VALUE)
        window = self.window_w(controls)
        revert = controls["InOutWRte_RvrtTms"] or None
        meter.set_battery_window(window, revert)


class PvBehaviour(Behaviour):
    """Models 101 + 121 + 123: a PV inverter whose output WMaxLimPct can cap."""

    kind = "pv"
    defaults: ClassVar[Mapping[str, float]] = {
        "WMaxLimPct": 100.0,
        "WMaxLim_Ena": 0,
        "WMaxLimPct_RvrtTms": 0,
    }

    def __init__(self, rated_power_w: float) -> None:
        if not rated_power_w > 0:
            raise ValueError(f"a PV inverter needs a rated power above 0 W, got {rated_power_w}")
        self.rated_power_w = rated_power_w

    def live(self, state: MeterState) -> dict[str, float]:
        power = state.pv_power_w
        if power <= 0:
            status = INVERTER_ST["SLEEPING"]
        elif state.pv_limit_w is not None and state.pv_available_w > state.pv_limit_w:
            status = INVERTER_ST["THROTTLED"]
        else:
            status = INVERTER_ST["MPPT"]
        current = power / state.voltage_v
        return {
            "A": current,
            "AphA": current,
            "PhVphA": state.voltage_v,
            "W": power,
            "WH": state.pv_energy_wh,
            "DCW": power / PV_DC_EFFICIENCY,
            "St": status,
            "WMax": self.rated_power_w,
        }

    def shown(self, state: MeterState, controls: dict[str, float]) -> dict[str, float]:
        if state.pv_limit_w is None and controls["WMaxLim_Ena"]:
            return {**controls, "WMaxLim_Ena": 0}
        return controls

    def apply(self, meter: PhysicalMeter, controls: dict[str, float]) -> None:
        percent = controls["WMaxLimPct"]
        if not 0 <= percent <= 100 or controls["WMaxLim_Ena"] not in (0, 1):
            raise Refused(ExcCodes.ILLEGAL_VALUE)
        if controls["WMaxLim_Ena"]:
            revert = controls["WMaxLimPct_RvrtTms"] or None
            meter.set_pv_limit_w(percent / 100 * self.rated_power_w, revert)
        else:
            meter.set_pv_limit_w(None)


@dataclass(frozen=True)
class _Located:
    point: Point
    address: int
    scale_factor: int


class SunSpecRegisters:
    """The holding registers of one simulated SunSpec device under one map."""

    def __init__(
        self,
        meter: PhysicalMeter,
        device_map: DeviceMap,
        behaviour: Behaviour,
        *,
        device_id: str,
        omit_models: Iterable[int] = (),
        faults: Iterable[str] = (),
    ) -> None:
        self.meter = meter
        self.device_map = device_map
        self.behaviour = behaviour
        self.kind = behaviour.kind
        self.faults = frozenset(faults)
        unknown = sorted(self.faults - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault {', '.join(unknown)}; known: {', '.join(FAULTS)}")
        omitted = set(omit_models)
        if 1 in omitted:
            raise ValueError("a SunSpec device always has the common model 1")
        layout = device_map.sunspec
        self.base = layout.base
        self.models = [(m, length) for m, length in layout.models if m not in omitted]
        starts: dict[int, int] = {}
        address = self.base + 2
        for model_id, length in self.models:
            starts[model_id] = address
            address += 2 + length
        self.size = address + 2 - self.base
        self.static = [0] * self.size
        self._put(self.base, SUNSPEC_MARKER)
        for model_id, length in self.models:
            self._put(starts[model_id], (model_id, length))
        self._put(address, SUNSPEC_END)
        register_map = device_map.register_map
        self.located: dict[str, _Located] = {}
        for name, point in register_map.points.items():
            if point.model not in starts:
                continue
            assert point.offset is not None
            located = _Located(point, starts[point.model] + point.offset, self._factor(point))
            self.located[name] = located
            if point.quantity == "meter_id" or name == register_map.identity:
                self._put(located.address, encode_text(device_id, point.registers))
            elif point.value is None:
                self._put(located.address, unimplemented_words(register_map, point))
            elif isinstance(point.value, str):
                self._put(located.address, encode_text(point.value, point.registers))
            else:
                self._put(located.address, encode_raw(register_map, point, float(point.value)))
        missing = sorted(behaviour.required - set(self.located))
        if missing:
            raise ValueError(f"map {device_map.name!r} lacks control point(s) {missing}")
        self.controls = {k: v for k, v in behaviour.defaults.items() if k in self.located}
        self.behaviour.apply(self.meter, self.controls)

    def _factor(self, point: Point) -> int:
        if point.scale_factor is None:
            return 0
        value = self.device_map.points[point.scale_factor].value
        return int(value) if isinstance(value, int | float) else 0

    def _put(self, address: int, words: Iterable[int], image: list[int] | None = None) -> None:
        target = self.static if image is None else image
        values = list(words)
        offset = address - self.base
        target[offset : offset + len(values)] = values

    def _encode(self, located: _Located, value: float) -> list[int]:
        register_map = self.device_map.register_map
        raw = value / 10.0**located.scale_factor
        if located.point.type == "acc32":
            raw = math.floor(raw)
        try:
            return encode_raw(register_map, located.point, float(round(raw)))
        except ValueError:
            return unimplemented_words(register_map, located.point)

    def image(self) -> list[int]:
        """Every register from the SunSpec marker to the end marker, as the device shows them."""
        state = self.meter.state()
        image = list(self.static)
        values = {**self.behaviour.live(state), **self.behaviour.shown(state, self.controls)}
        for name, value in values.items():
            located = self.located.get(name)
            if located is not None:
                self._put(located.address, self._encode(located, value), image)
        return image

    def write(self, address: int, words: list[int]) -> None:
        """A client writes `words` from `address`: check, store and act, or raise Refused."""
        if "refuse-writes" in self.faults:
            raise Refused(ExcCodes.DEVICE_FAILURE)
        end = address + len(words)
        touched = [
            (name, located)
            for name, located in self.located.items()
            if located.address < end and address < located.address + located.point.registers
        ]
        covered = sum(located.point.registers for _, located in touched)
        if covered != len(words) or any(
            located.address < address or located.address + located.point.registers > end
            for _, located in touched
        ):
            raise Refused(ExcCodes.ILLEGAL_ADDRESS)  # a write must cover whole points only
        new = dict(self.controls)
        register_map = self.device_map.register_map
        for name, located in touched:
            if name not in self.controls or name not in self.device_map.writable:
                raise Refused(ExcCodes.ILLEGAL_ADDRESS)
            offset = located.address - address
            raw = decode_raw(
                register_map, located.point, words[offset : offset + located.point.registers]
            )
            if raw is None:
                raise Refused(ExcCodes.ILLEGAL_VALUE)
            new[name] = raw * 10.0**located.scale_factor
        if "ignore-writes" in self.faults:
            return
        self.behaviour.apply(self.meter, new)
        self.controls = new

    def sim_device(self, unit: int) -> SimDevice:
        """A pymodbus SimDevice whose action serves and takes these registers."""
        holding = SimData(self.base, values=list(self.static), datatype=DataType.REGISTERS)
        return sim_device(unit, self.action, holding=holding)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before it answers; reads are filled in place."""
        if function_code not in (3, 6, 16):
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            try:
                self.write(address, [int(v) for v in set_values])
            except Refused as refused:
                return refused.code
            return None
        try:
            words = self.image()
        except ValueError:
            return ExcCodes.DEVICE_FAILURE
        registers[: len(words)] = words
        return None
