"""A board's agent drives real device simulators: curtailment from the grid within the same
interval, the feeder's export limit, the safe local rule when the market is lost, and alarms
published on the bus. The meter is read over Modbus; the devices share its physical model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from device_site import HEATER_W, LOAD_W, site_meter
from eth_account import Account

from listener import Listener
from meterchain.agents.bus_local import LocalBus
from meterchain.agents.grid import GridAgent
from meterchain.agents.messages import (
    ClearingNotice,
    DeviceAlarmNotice,
    TariffNotice,
    Tick,
)
from meterchain.agents.planning import DerPlanner
from meterchain.agents.prosumer import ProsumerAgent
from meterchain.agents.runtime import Agent, Envelope, Performative
from meterchain.chain.signing import MarketDomain
from meterchain.clock import ManualClock
from meterchain.config import DerConfig, DevicesConfig, SwitchedLoadConfig
from meterchain.der.equipment import with_devices
from meterchain.der.site import Site
from meterchain.devices.board import open_board_devices
from meterchain.devices.sim.site import SWITCHED_LOAD, serve_site_tcp, site_units
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.modbus_server import start_tcp as start_meter
from meterchain.meters.sim.physical import PhysicalMeter
from meterchain.store.db import open_store
from meterchain.store.records import Records

METER_ID = "40010001"
AGENT = f"prosumer-{METER_ID}"
TARIFFS = TariffNotice(retail_price=0.95, feed_in_price=0.25)


@dataclass
class Street:
    clock: ManualClock
    meter: PhysicalMeter
    grid: GridAgent
    prosumer: ProsumerAgent
    monitor: Listener


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


@asynccontextmanager
async def street(
    clock: ManualClock,
    tmp_path: Path,
    *,
    export_limit_w: float | None = None,
    feeder_export_limit_w: float | None = None,
    faults: tuple[str, ...] = (),
    equipment: DerConfig | None = None,
) -> AsyncIterator[Street]:
    """One household (PV 4 kWp, battery 10 kWh, a 2 kW heater on a relay), its meter, its
    devices, the grid agent."""
    meter = site_meter(clock)
    meter.add_switched_load(SWITCHED_LOAD, HEATER_W)
    meter_server = await start_meter(meter, "127.0.0.1", 0, map="sdm630")
    device_server, urls = await serve_site_tcp(
        site_units(meter, ["battery", "pv", "load"], pv_rated_w=4000.0, faults=faults)
    )
    devices = open_board_devices(
        DevicesConfig(
            battery=urls["battery"],
            pv=urls["pv"],
            battery_capacity_wh=10_000,
            battery_max_w=3000,
            export_limit_w=export_limit_w,
            loads=[SwitchedLoadConfig(name="heater", url=urls["load"])],
            timeout_s=0.5,
            tries=1,
        )
    )
    bus = LocalBus()
    store = open_store(f"sqlite:///{tmp_path / 'board.sqlite'}")
    prosumer = ProsumerAgent(
        AGENT,
        bus,
        meter_id=METER_ID,
        meter=open_meter(f"modbus+tcp://127.0.0.1:{meter_server.port}?unit=1&map=sdm630"),
        signer=Account.create(),
        domain=MarketDomain(31337, "0x" + "11" * 20),
        planner=DerPlanner(
            Site(name=METER_ID),
            lambda _s, n: ([0.0] * n, [LOAD_W] * n),
            meter_id=METER_ID,
            equipment=equipment,
        ),
        records=Records(store, AGENT),
        clock=clock,
        devices=devices,
        alarms_to="monitor",
    )
    grid = GridAgent(
        "grid",
        bus,
        tariffs=TARIFFS,
        prosumers=[AGENT],
        feeder_export_limit_w=feeder_export_limit_w,
    )
    monitor = Listener("monitor", bus)
    agents: list[Agent] = [prosumer, grid, monitor]
    for agent in agents:
        await agent.start()
    try:
        yield Street(clock, meter, grid, prosumer, monitor)
    finally:
        for agent in agents:
            await agent.stop()
        await prosumer.meter.close()
        await devices.close()
        await device_server.close()
        await meter_server.close()
        store.close()


async def hold_battery(street: Street, power_w: float) -> None:
    devices = street.prosumer.devices
    assert devices is not None and devices.battery is not None
    await devices.battery.set_power_w(power_w)


async def test_a_curtailment_request_lowers_the_export_within_the_same_interval(
    clock: ManualClock, tmp_path: Path
) -> None:
    async with street(clock, tmp_path) as site:
        interval_start = clock.now()
        await hold_battery(site, 0)  # the battery stays out of it: the PV surplus is exported
        exporting_w = -site.meter.state().power_w
        assert exporting_w > 3000  # sunny noon, 500 W of load
        clock.advance(300)  # five minutes into the interval
        before = site.meter.state()
        await site.grid.request_curtailment(interval_start, 200.0, [AGENT])
        await eventually(lambda: site.meter.state().pv_limit_w is not None)
        during = site.meter.state()
        assert during.timestamp < interval_start.replace(minute=interval_start.minute + 15)
        assert -during.power_w <= 200.0  # the export fell to the limit at once
        assert -during.power_w > 190.0  # and no further than the PV limit's resolution
        clock.advance(600)  # the rest of the interval
        after = site.meter.state()
        assert after.export_wh - during.export_wh == pytest.approx(-during.power_w / 6, abs=0.5)
        assert during.export_wh - before.export_wh < 1  # nothing exported while it was asked


async def test_the_feeders_export_limit_binds_at_the_order_phase(
    clock: ManualClock, tmp_path: Path
) -> None:
    async with street(clock, tmp_path, feeder_export_limit_w=1000.0) as site:
        await hold_battery(site, 500)  # charging 500 W: the cap leaves room for it
        await site.grid.handle(_envelope(), Tick(interval_start=clock.now(), phase="order"))
        await eventually(lambda: site.meter.state().pv_limit_w is not None)
        state = site.meter.state()
        assert state.pv_limit_w == pytest.approx(1000 + LOAD_W + 500, abs=4)
        assert 990 <= -state.power_w <= 1000


async def test_losing_the_market_puts_the_devices_on_the_safe_local_rule(
    clock: ManualClock, tmp_path: Path
) -> None:
    async with street(clock, tmp_path, export_limit_w=0.0) as site:
        await hold_battery(site, -2000)  # the last plan: discharge into the neighbours
        assert site.meter.state().power_w < -5000
        failed = ClearingNotice(interval=int(clock.now().timestamp()), price=None, trades=[],
                                error="the chain did not answer")  # fmt: skip
        await site.prosumer.handle(_envelope(), failed)
        state = site.meter.state()
        low, high = state.battery_window_w or (0.0, 0.0)
        assert low < 0 < high  # the battery follows the house, no longer a fixed discharge
        assert state.battery_power_w > 0  # soaking up the noon surplus
        assert -state.power_w <= 0.5  # nothing goes out over the connection's limit (0 W)
        clock.advance(900)
        assert site.meter.state().export_wh == pytest.approx(state.export_wh, abs=0.5)


async def test_a_device_that_refuses_raises_an_alarm_on_the_bus(
    clock: ManualClock, tmp_path: Path
) -> None:
    async with street(clock, tmp_path, faults=("refuse-writes",)) as site:
        await site.grid.request_curtailment(clock.now(), 0.0, [AGENT])
        await eventually(lambda: bool(site.monitor.received))
        (alarm,) = site.monitor.received
        assert isinstance(alarm, DeviceAlarmNotice)
        assert alarm.meter_id == METER_ID and alarm.kind == "pv" and alarm.active
        assert alarm.code == "device-write-not-confirmed"
        assert "exception 4" in alarm.message
        assert site.meter.state().pv_limit_w is None  # never assumed to have obeyed


async def test_the_planners_schedule_switches_the_relay(clock: ManualClock, tmp_path: Path) -> None:
    # 12:00 in Fortaleza; the heater needs 2 kWh between 10:00 and 13:00: on for the whole hour.
    heater = SwitchedLoadConfig(
        name="heater",
        url="relay+tcp://127.0.0.1:1?unit=3",
        power_w=HEATER_W,
        energy_wh=2000,
        start_hour=10,
        end_hour=13,
    )
    equipment = with_devices(None, DevicesConfig(loads=[heater]))
    async with street(clock, tmp_path, equipment=equipment) as site:
        before = site.meter.state().load_power_w
        interval = int(clock.now().timestamp())
        await site.prosumer.handle(_envelope(), Tick(interval_start=clock.now(), phase="order"))
        cleared = ClearingNotice(interval=interval, price=None, trades=[])
        await site.prosumer.handle(_envelope(), cleared)
        assert site.meter.switched_load_on(SWITCHED_LOAD)
        assert site.meter.state().load_power_w == pytest.approx(before + HEATER_W)
        daily = site.prosumer.planner.daily
        assert daily is not None
        assert daily.horizon(clock.now(), 96)[0].energy_wh == 1500  # 500 Wh given


def _envelope() -> Envelope:
    return Envelope(
        performative=Performative.INFORM,
        sender="test",
        receiver=AGENT,
        content_type="x",
        content={},
    )
