"""The board's side of prepaid supply: it switches its meter's relay through the meter's own
protocol as the chain decided, never at a forbidden hour nor on a never-cut meter, and keeps
the rules working on its own estimate while the chain's word does not reach it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from pydantic import BaseModel

from meterchain.agents.bus_local import LocalBus
from meterchain.agents.messages import DeviceAlarmNotice
from meterchain.agents.planning import DerPlanner
from meterchain.agents.prepaid import PrepaidBoard, PrepaidUpdate, RelayAck
from meterchain.agents.prosumer import ProsumerAgent
from meterchain.agents.runtime import Agent, Envelope, Performative
from meterchain.chain.signing import MarketDomain
from meterchain.clock import ManualClock
from meterchain.der.site import Site
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.dlms_server import DEFAULT_PASSWORD as DLMS_PASSWORD
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.registry import client_url, start_simulator
from meterchain.model import RelayState
from meterchain.prepaid.ledger import ChainState
from meterchain.store.db import open_store
from meterchain.store.records import Records

METER_ID = "40020003"
BOARD = f"prosumer-{METER_ID}"
LOAD_W = 2000.0  # 0.5 kWh per 15 minutes: 48 cents at 95 cents/kWh
RETAIL = 95


class Operator(Agent):
    """Stands for the operator's PrepaidAgent (and the monitoring): collects what it gets."""

    def __init__(self, name: str, bus: LocalBus) -> None:
        super().__init__(name, bus)
        self.received: list[BaseModel] = []

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        self.received.append(content)

    def acks(self) -> list[RelayAck]:
        return [m for m in self.received if isinstance(m, RelayAck)]


@dataclass
class Board:
    clock: ManualClock
    model: PhysicalMeter
    prosumer: ProsumerAgent
    prepaid: PrepaidBoard
    operator: Operator
    monitor: Operator

    async def update(self, **fields: Any) -> RelayAck:
        """The operator sends a PrepaidUpdate (the chain's word, registers as read now) and
        waits for the board's acknowledgement."""
        state = self.model.state()
        content = {
            "meter_id": METER_ID,
            "command_id": f"c{len(self.operator.acks())}",
            "credit_units": 100,
            "state": ChainState.SUPPLIED,
            "since": int(self.clock.now().timestamp()),
            "emergency_units": 100,
            "settled_import_wh": int(state.import_wh),
            "settled_export_wh": int(state.export_wh),
            "retail_units": RETAIL,
            "feed_in_units": 25,
            "utc_offset_s": -3 * 3600,
            "cut_from_hour": 8,
            "cut_to_hour": 18,
            "cut_weekdays": 0b0011110,
            "thresholds": [300, 0],
        }
        content.update(fields)
        before = len(self.operator.acks())
        await self.operator.send(BOARD, Performative.REQUEST, PrepaidUpdate(**content))
        await eventually(lambda: len(self.operator.acks()) > before)
        return self.operator.acks()[-1]

    def advance(self, minutes: float) -> float:
        """Let time pass; the import the meter counted meanwhile (Wh)."""
        before = self.model.state().import_wh
        self.clock.advance(minutes * 60)
        return self.model.state().import_wh - before


def relay_url(protocol: str, port: int) -> str:
    """The driver's URL, with DLMS's management client: the public one may not switch."""
    url = client_url(protocol, port)
    if protocol == "dlms":
        return url.replace("client=16", f"client=17&password={DLMS_PASSWORD}")
    return url


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


@asynccontextmanager
async def board(
    clock: ManualClock, tmp_path: Path, protocol: str = "nbr14522", *, never_cut: bool = False
) -> AsyncIterator[Board]:
    model = PhysicalMeter(METER_ID, clock, load_w=flat_load_w(LOAD_W), import_wh=10_000.0)
    server = await start_simulator(protocol, model)
    meter = open_meter(relay_url(protocol, server.port))
    bus = LocalBus()
    store = open_store(f"sqlite:///{tmp_path / 'board.sqlite'}")
    prepaid = PrepaidBoard(METER_ID, meter, clock, never_cut=never_cut, offline_after_s=1800)
    prosumer = ProsumerAgent(
        BOARD,
        bus,
        meter_id=METER_ID,
        meter=meter,
        signer=Account.create(),
        domain=MarketDomain(31337, "0x" + "11" * 20),
        planner=DerPlanner(
            Site(name=METER_ID), lambda _s, n: ([0.0] * n, [LOAD_W] * n), meter_id=METER_ID
        ),
        records=Records(store, BOARD),
        clock=clock,
        alarms_to="monitor",
        prepaid=prepaid,
    )
    operator, monitor = Operator("prepaid", bus), Operator("monitor", bus)
    agents = [prosumer, operator, monitor]
    for agent in agents:
        await agent.start()
    try:
        yield Board(clock, model, prosumer, prepaid, operator, monitor)
    finally:
        for agent in agents:
            await agent.stop()
        await meter.close()
        await server.close()
        store.close()


@pytest.mark.parametrize("protocol", ["modbus", "dlms", "iec62056-21", "nbr14522"])
async def test_a_cut_off_opens_the_relay_through_the_meter_s_protocol_and_import_stops(
    clock: ManualClock, tmp_path: Path, protocol: str
) -> None:
    async with board(clock, tmp_path, protocol) as b:  # Tuesday 12:00 in Fortaleza
        assert b.advance(15) > 0
        ack = await b.update(state=ChainState.CUT_OFF, credit_units=-150, event="cut-off")
        assert (ack.relay, ack.switched, ack.error) == ("off", True, None)
        assert b.model.relay is RelayState.OFF
        assert b.advance(60) == 0  # the meter really imports nothing
        assert b.prepaid.relay_open
        ack = await b.update(state=ChainState.SUPPLIED, credit_units=2_000, event="reconnect")
        assert (ack.relay, ack.switched) == ("on", True)
        assert b.advance(15) == pytest.approx(LOAD_W / 4, rel=0.01)


async def test_a_cut_off_reaching_the_board_after_18h_waits_for_the_morning(
    clock: ManualClock, tmp_path: Path
) -> None:
    clock.advance(6 * 3600 + 60)  # 18:01 local
    async with board(clock, tmp_path) as b:
        ack = await b.update(state=ChainState.CUT_OFF, credit_units=-150, event="cut-off")
        assert (ack.relay, ack.switched) == ("on", False)
        assert "not now" in ack.why and "hours" in ack.why
        assert b.advance(30) > 0


async def test_a_never_cut_board_refuses_a_cut_off_whatever_the_message_says(
    clock: ManualClock, tmp_path: Path
) -> None:
    async with board(clock, tmp_path, never_cut=True) as b:
        ack = await b.update(state=ChainState.CUT_OFF, credit_units=-10_000, event="cut-off")
        assert (ack.relay, ack.switched) == ("on", False)
        assert "never-cut" in ack.why
        assert b.model.relay is RelayState.ON


async def test_without_the_chain_s_word_the_board_cuts_by_itself_and_then_reconciles(
    clock: ManualClock, tmp_path: Path
) -> None:
    async with board(clock, tmp_path) as b:
        # The chain's last word: 100 of credit, 100 of emergency credit, registers as now.
        await b.update(credit_units=100, emergency_units=100)
        # The broker goes away. 0.5 kWh costs 48: after 1 h (-92) still within the emergency
        # credit; after 1h45 (-236) past it: the board cuts at its next reading.
        b.advance(60)
        await b.prosumer.read_meter()
        assert b.model.relay is RelayState.ON
        b.advance(45)
        await b.prosumer.read_meter()
        assert b.model.relay is RelayState.OFF
        assert b.advance(30) == 0
        cut_at = b.model.state().import_wh
        alarms = [m for m in b.monitor.received if isinstance(m, DeviceAlarmNotice)]
        assert any(a.code == "prepaid-low-credit" for a in alarms)
        # The broker returns with a stale word (the chain has not settled that energy yet):
        # the board keeps its cut rather than reconnect for an interval and cut again.
        ack = await b.update(credit_units=50, settled_import_wh=int(cut_at) - 2_500)
        assert ack.relay == "off" and "has not settled" in ack.why
        # A top-up the chain made meanwhile brings the credit above zero: reconnected.
        ack = await b.update(credit_units=3_000, settled_import_wh=int(cut_at) - 2_500)
        assert (ack.relay, ack.switched) == ("on", True)


async def test_without_the_chain_s_word_the_board_never_cuts_at_night(
    clock: ManualClock, tmp_path: Path
) -> None:
    clock.advance(5 * 3600)  # 17:00 local
    async with board(clock, tmp_path) as b:
        await b.update(credit_units=0, emergency_units=0)
        b.advance(61)  # 18:01, credit exhausted
        await b.prosumer.read_meter()
        assert b.model.relay is RelayState.ON
        b.advance(14 * 60)  # 08:01 next day
        await b.prosumer.read_meter()
        assert b.model.relay is RelayState.OFF


async def test_a_board_with_its_relay_open_places_no_orders(
    clock: ManualClock, tmp_path: Path
) -> None:
    async with board(clock, tmp_path) as b:
        await b.update(state=ChainState.CUT_OFF, credit_units=-150)
        start = clock.now().replace(minute=0, second=0) + timedelta(hours=1)
        prepared = await b.prosumer._prepare_orders(start)
        assert prepared["orders"] == []


async def test_a_meter_that_refuses_the_relay_command_raises_an_alarm(
    clock: ManualClock, tmp_path: Path
) -> None:
    model = PhysicalMeter(METER_ID, clock, load_w=flat_load_w(LOAD_W))
    server = await start_simulator("dlms", model)
    bus = LocalBus()
    meter = open_meter(client_url("dlms", server.port))  # the public client: may not switch
    prepaid = PrepaidBoard(METER_ID, meter, clock)
    store = open_store(f"sqlite:///{tmp_path / 'b.sqlite'}")
    prosumer = ProsumerAgent(
        BOARD, bus, meter_id=METER_ID, meter=meter, signer=Account.create(),
        domain=MarketDomain(31337, "0x" + "11" * 20),
        planner=DerPlanner(Site(name=METER_ID), lambda _s, n: ([0.0] * n, [0.0] * n),
                           meter_id=METER_ID),
        records=Records(store, BOARD), clock=clock, alarms_to="monitor", prepaid=prepaid,
    )  # fmt: skip
    operator, monitor = Operator("prepaid", bus), Operator("monitor", bus)
    for agent in (prosumer, operator, monitor):
        await agent.start()
    try:
        b = Board(clock, model, prosumer, prepaid, operator, monitor)
        ack = await b.update(state=ChainState.CUT_OFF, credit_units=-150, event="cut-off")
        assert ack.relay == "on" and ack.error is not None
        assert "may not switch the relay" in ack.error
        await eventually(lambda: any(isinstance(m, DeviceAlarmNotice) for m in monitor.received))
        [alarm] = [m for m in monitor.received if isinstance(m, DeviceAlarmNotice)]
        assert (alarm.kind, alarm.code, alarm.active) == ("prepaid", "prepaid-relay-failed", True)
    finally:
        for agent in (prosumer, operator, monitor):
            await agent.stop()
        await meter.close()
        await server.close()
        store.close()
