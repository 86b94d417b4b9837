"""A simulated site for the device tests: one physical model behind a meter, a battery
inverter, a PV inverter and a relay board, served over TCP or over a serial cable (RTU)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from meterchain.clock import ManualClock
from meterchain.devices.alarms import DeviceAlarm
from meterchain.devices.base import Actuator
from meterchain.devices.maps import load_device_map
from meterchain.devices.modbus_link import LinkPool
from meterchain.devices.registry import open_device
from meterchain.devices.sim.relay_board import RelayBoard
from meterchain.devices.sim.server import start_serial, start_tcp
from meterchain.devices.sim.sunspec_server import PvBehaviour, StorageBehaviour, SunSpecRegisters
from meterchain.meters.sim.physical import BatterySpec, PhysicalMeter, flat_load_w, pv_w
from meterchain.meters.sim.serial_link import VirtualSerialLink

BATTERY_UNIT, PV_UNIT, RELAY_UNIT = 1, 2, 3
HEATER_COIL, HEATER_W = 2, 2000.0
PV_PEAK_W = 4000.0
LOAD_W = 500.0


@dataclass
class Site:
    """What a test drives: the physical model, the devices' URLs and the alarms raised."""

    meter: PhysicalMeter
    clock: ManualClock
    transport: str
    base_url: dict[str, str]
    links: LinkPool
    alarms: list[DeviceAlarm] = field(default_factory=list)

    def url(self, kind: str, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        url = self.base_url[kind]
        return f"{url}&{query}" if query else url

    def open(self, kind: str, **options: str) -> Actuator:
        return open_device(
            self.url(kind, **options),
            kind,
            links=self.links,
            timeout_s=0.5,
            tries=2,
            on_alarm=self.alarms.append,
        )


def site_meter(clock: ManualClock) -> PhysicalMeter:
    meter = PhysicalMeter(
        "site-1",
        clock,
        load_w=flat_load_w(LOAD_W),
        pv_w=pv_w(PV_PEAK_W),
        battery=BatterySpec(capacity_wh=10_000, max_power_w=3_000, efficiency=1.0),
        import_wh=5_000.0,
    )
    meter.add_switched_load("heater", HEATER_W)
    return meter


def simulated_units(
    meter: PhysicalMeter,
    faults: Iterable[str] = (),
    omit_models: Iterable[int] = (),
    storage_map: str = "sunspec-storage",
) -> dict[int, SunSpecRegisters | RelayBoard]:
    return {
        BATTERY_UNIT: SunSpecRegisters(
            meter,
            load_device_map(storage_map),
            StorageBehaviour(meter),
            device_id="bat-7",
            faults=faults,
            omit_models=omit_models,
        ),
        PV_UNIT: SunSpecRegisters(
            meter,
            load_device_map("sunspec-pv"),
            PvBehaviour(PV_PEAK_W),
            device_id="pv-7",
            faults=faults,
        ),
        RELAY_UNIT: RelayBoard(meter, [None, None, "heater"], faults=faults),
    }


async def serve_site(
    clock: ManualClock,
    transport: str,
    faults: Iterable[str] = (),
    omit_models: Iterable[int] = (),
    storage_map: str = "sunspec-storage",
) -> AsyncIterator[Site]:
    meter = site_meter(clock)
    units = simulated_units(meter, faults, omit_models, storage_map)
    links = LinkPool(timeout_s=0.5, tries=2)
    if transport == "tcp":
        server = await start_tcp(units)
        where = f"+tcp://127.0.0.1:{server.port}"
        cable = None
    else:
        cable = VirtualSerialLink()
        server = await start_serial(units, cable.meter_end)
        where = f"+rtu://{cable.client_end}"
    base = {
        "battery": f"sunspec{where}?unit={BATTERY_UNIT}",
        "pv": f"sunspec{where}?unit={PV_UNIT}",
        "load": f"relay{where}?unit={RELAY_UNIT}&coil={HEATER_COIL}",
    }
    try:
        yield Site(meter, clock, transport, base, links)
    finally:
        await links.close()
        await server.close()
        if cable is not None:
            cable.close()
