"""A board's trading configuration: checked against its equipment, kept, acknowledged, and
obeyed by the next plans (limits, battery reserve and target, deferrable loads, fixed)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from eth_account import Account
from pydantic import BaseModel

from meterchain.agents.board_config import BoardConfigHandler, ConfiguredPlanner, deferrable_loads
from meterchain.agents.bus_local import LocalBus
from meterchain.agents.messages import (
    ConfigAck,
    ConfigUpdate,
    DeferrableLoadSetting,
    TariffNotice,
    TradingConfig,
)
from meterchain.agents.prosumer import ProsumerAgent
from meterchain.agents.runtime import Agent, Envelope, Performative
from meterchain.chain.signing import MarketDomain
from meterchain.clock import ManualClock
from meterchain.der.site import Battery, Site
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import PhysicalMeter
from meterchain.meters.sim.registry import client_url, start_simulator
from meterchain.model import Side
from meterchain.store.db import open_store
from meterchain.store.records import Records

NOON = datetime(2026, 11, 24, 15, tzinfo=UTC)  # 12:00 in Fortaleza
TARIFFS = TariffNotice(retail_price=0.95, feed_in_price=0.25)
BATTERY = Battery(capacity_wh=10_000, max_charge_power_w=3000, max_discharge_power_w=3000)


def planner(tmp_path: Path, site: Site, pv: float, load: float) -> ConfiguredPlanner:
    planner = ConfiguredPlanner(
        site, lambda _start, steps: ([pv] * steps, [load] * steps), meter_id="m1", horizon_steps=16
    )
    records = Records(open_store(f"sqlite:///{tmp_path / 'b.db'}"), "prosumer-m1")
    planner.handler = BoardConfigHandler(records, site, step_s=900, timezone="America/Fortaleza")
    return planner


def configure(planner: ConfiguredPlanner, **fields: object) -> None:
    assert planner.handler is not None
    planner.handler.config = TradingConfig.model_validate(fields)


def test_sell_orders_never_ask_less_than_the_minimum_sell_price(tmp_path: Path) -> None:
    plan_for = planner(tmp_path, Site(name="m1"), pv=3000.0, load=500.0)
    before = plan_for.plan(NOON, TARIFFS, None, NOON)
    assert [o.side for o in before.orders] == [Side.SELL]
    assert before.orders[0].limit_price == pytest.approx(0.25)
    configure(plan_for, min_sell_price=0.6)
    after = plan_for.plan(NOON, TARIFFS, None, NOON)
    assert after.orders[0].limit_price == pytest.approx(0.6)
    assert after.orders[0].quantity_wh == before.orders[0].quantity_wh


def test_buy_orders_never_offer_more_than_the_maximum_buy_price(tmp_path: Path) -> None:
    plan_for = planner(tmp_path, Site(name="m1"), pv=0.0, load=2000.0)
    configure(plan_for, max_buy_price=0.5)
    plan = plan_for.plan(NOON, TARIFFS, None, NOON)
    assert [o.side for o in plan.orders] == [Side.BUY]
    assert plan.orders[0].limit_price == pytest.approx(0.5)


def test_the_battery_reserve_stops_discharging_below_it(tmp_path: Path) -> None:
    site = Site(name="m1", battery=BATTERY)
    plan_for = planner(tmp_path, site, pv=0.0, load=1500.0)  # evening: the battery would serve
    free = plan_for.plan(NOON, TARIFFS, 0.6, NOON)
    assert free.battery_power_w is not None and free.battery_power_w < -100
    configure(plan_for, battery_reserve_fraction=0.8)
    held = plan_for.plan(NOON, TARIFFS, 0.6, NOON)
    assert held.battery_power_w is not None and held.battery_power_w >= -1e-6


def test_the_target_state_of_charge_is_the_plans_end_point(tmp_path: Path) -> None:
    site = Site(name="m1", battery=BATTERY)
    plan_for = planner(tmp_path, site, pv=0.0, load=300.0)
    configure(plan_for, target_soc_fraction=0.9, battery_reserve_fraction=0.2)
    problem = plan_for.problem(NOON, TARIFFS, 0.5)
    assert problem.target_soc_fraction == pytest.approx(0.9)
    assert problem.site.battery is not None
    assert problem.site.battery.soc_min_fraction == pytest.approx(0.2)
    from meterchain.der.optimiser import optimise

    assert optimise(problem).soc_fraction[-1] == pytest.approx(0.9, abs=1e-3)


def test_fixed_limits_bid_the_net_load_at_the_set_prices_with_the_battery_idle(
    tmp_path: Path,
) -> None:
    plan_for = planner(tmp_path, Site(name="m1", battery=BATTERY), pv=0.0, load=2000.0)
    configure(plan_for, strategy="fixed", max_buy_price=0.7, min_sell_price=0.4)
    plan = plan_for.plan(NOON, TARIFFS, 0.5, NOON)
    assert [(o.side, o.quantity_wh, o.limit_price) for o in plan.orders] == [(Side.BUY, 500, 0.7)]
    assert plan.battery_power_w == 0.0


def test_a_deferrable_load_is_placed_in_its_window() -> None:
    from zoneinfo import ZoneInfo

    config = TradingConfig(
        deferrable_loads=[
            DeferrableLoadSetting(
                name="pump", energy_wh=2000, max_power_w=1000, window_start="14:00",
                window_end="16:00",
            )
        ]
    )  # fmt: skip
    loads = deferrable_loads(config, NOON, 96, 900, ZoneInfo("America/Fortaleza"))
    assert [(load.start_step, load.end_step, load.energy_wh) for load in loads] == [(8, 16, 2000)]
    # half-way through the window, half the energy is left to place
    inside = deferrable_loads(
        config, NOON + timedelta(hours=3), 96, 900, ZoneInfo("America/Fortaleza")
    )
    assert [(load.start_step, load.end_step, load.energy_wh) for load in inside] == [(0, 4, 1000)]


def test_battery_settings_on_a_board_without_battery_are_refused(tmp_path: Path) -> None:
    handler = planner(tmp_path, Site(name="m1"), 0.0, 0.0).handler
    assert handler is not None
    problem = handler.problem_with(TradingConfig(battery_reserve_fraction=0.3))
    assert problem is not None and "no battery" in problem
    assert handler.problem_with(TradingConfig(min_sell_price=0.5)) is None


class Sender(Agent):
    def __init__(self, bus: LocalBus) -> None:
        super().__init__("monitor", bus)
        self.acks: asyncio.Queue[ConfigAck] = asyncio.Queue()

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, ConfigAck):
            await self.acks.put(content)


async def test_the_board_acknowledges_keeps_and_refuses_over_the_bus(
    tmp_path: Path, clock: ManualClock
) -> None:
    model = PhysicalMeter("40000001", clock)
    server = await start_simulator("modbus", model)
    meter = open_meter(client_url("modbus", server.port))
    bus = LocalBus()
    store = open_store(f"sqlite:///{tmp_path / 'board.db'}")
    records = Records(store, "prosumer-40000001")
    site = Site(name="40000001", battery=BATTERY)
    plan_for = ConfiguredPlanner(site, lambda _s, n: ([0.0] * n, [500.0] * n), meter_id="40000001")
    plan_for.handler = BoardConfigHandler(records, site, step_s=900, timezone="America/Fortaleza")
    board = ProsumerAgent(
        "prosumer-40000001", bus, meter_id="40000001", meter=meter,
        signer=Account.create(), domain=MarketDomain(31337, "0x" + "11" * 20),
        planner=plan_for, records=records, clock=clock,
    )  # fmt: skip
    sender = Sender(bus)
    await board.start()
    await sender.start()
    try:
        good = TradingConfig(min_sell_price=0.5, battery_reserve_fraction=0.4, relay="off")
        await sender.send(
            board.name, Performative.REQUEST,
            ConfigUpdate(meter_id="40000001", version=1, config=good, requested_by="alice"),
        )  # fmt: skip
        ack = await asyncio.wait_for(sender.acks.get(), 5)
        assert ack.accepted and ack.version == 1
        assert ack.effective_from == datetime(2026, 11, 24, 15, 15, tzinfo=UTC)
        assert model.relay.value == "off"  # the relay really switched
        kept = Records(store, "prosumer-40000001").get("config", "current")
        assert kept is not None and kept["version"] == 1

        bad = TradingConfig(target_soc_fraction=0.99)
        await sender.send(
            board.name, Performative.REQUEST,
            ConfigUpdate(meter_id="40000001", version=2, config=bad, requested_by="alice"),
        )  # fmt: skip
        refused = await asyncio.wait_for(sender.acks.get(), 5)
        assert not refused.accepted and refused.reason is not None
        assert "target state of charge 99%" in refused.reason
        assert plan_for.handler.version == 1  # the one in force stays
    finally:
        await sender.stop()
        await board.stop()
        await meter.close()
        await server.close()
        store.close()


async def test_a_change_made_in_the_web_reaches_a_board_over_mqtt_and_its_ack_comes_back(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The deployed path: the web's monitor and the board on separate MQTT connections."""
    from sqlalchemy import select

    from meterchain.agents.broker import start_mosquitto
    from meterchain.agents.monitor import MonitorAgent, new_meter
    from meterchain.store.community import BoardConfigRow
    from meterchain.web.actions import change_config
    from meterchain.web.security import create_user
    from meterchain.web.services import WebServices
    from meterchain.web.settings import WebSettings

    broker = start_mosquitto(agents=["prosumer-40000001"])
    web_store = open_store(f"sqlite:///{tmp_path / 'web.db'}")
    board_store = open_store(f"sqlite:///{tmp_path / 'board.db'}")
    model = PhysicalMeter("40000001", clock)
    server = await start_simulator("modbus", model)
    meter = open_meter(client_url("modbus", server.port))
    operator_bus, board_bus = broker.bus("monitor"), broker.bus("prosumer-40000001")
    monitor = MonitorAgent("monitor", operator_bus, store=web_store, clock=clock)
    records = Records(board_store, "prosumer-40000001")
    site = Site(name="40000001", battery=BATTERY)
    plan_for = ConfiguredPlanner(site, lambda _s, n: ([0.0] * n, [500.0] * n), meter_id="40000001")
    plan_for.handler = BoardConfigHandler(records, site, step_s=900, timezone="America/Fortaleza")
    board = ProsumerAgent(
        "prosumer-40000001", board_bus, meter_id="40000001", meter=meter,
        signer=Account.create(), domain=MarketDomain(31337, "0x" + "11" * 20),
        planner=plan_for, records=records, clock=clock,
    )  # fmt: skip
    with web_store.session() as session:
        session.add(new_meter("40000001"))
        user = create_user(session, "alice", "alice-password", role="prosumer", meter_id="40000001")
    try:
        await monitor.start()
        await board.start()
        services = WebServices(web_store, WebSettings(), monitor=monitor)
        stored = await change_config(services, user, "40000001", TradingConfig(max_buy_price=0.7))
        assert stored["status"] == "sent"

        async def acked() -> BoardConfigRow:
            while True:
                with web_store.session() as session:
                    row = session.scalars(select(BoardConfigRow)).one()
                    if row.status != "sent":
                        return row
                await asyncio.sleep(0.05)

        row = await asyncio.wait_for(acked(), 10)
        assert row.status == "accepted" and row.effective_from is not None
        assert plan_for.handler.config == TradingConfig(max_buy_price=0.7)
    finally:
        await board.stop()
        await monitor.stop()
        await operator_bus.close()
        await board_bus.close()
        await meter.close()
        await server.close()
        web_store.close()
        board_store.close()
        broker.stop()
