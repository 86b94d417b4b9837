"""The monitor agent: what boards and the market say becomes rows the web reads, and alarms
start, end, go out on the bus and to a webhook."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from meterchain.agents.bus_local import LocalBus
from meterchain.agents.messages import (
    ClearingNotice,
    ConfigAck,
    DeliveryNotice,
    Heartbeat,
    TradeNotice,
    VoidNotice,
)
from meterchain.agents.monitor import AlarmListener, MonitorAgent, new_meter
from meterchain.agents.runtime import Agent, Performative
from meterchain.clock import ManualClock
from meterchain.store.community import (
    AlarmRow,
    BoardConfigRow,
    MarketIntervalRow,
    MeterIntervalRow,
    MeterRow,
)
from meterchain.store.db import Store, open_store

START = datetime(2026, 11, 24, 15, tzinfo=UTC)
INTERVAL = int(START.timestamp())


class Webhook:
    """A local HTTP endpoint that keeps what was posted to it."""

    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.posted.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alarms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'web.db'}")
    with store.session() as session:
        session.add(new_meter("40000001", nominal_voltage_v=220.0))
        session.add(new_meter("40000002", nominal_voltage_v=220.0))
    yield store
    store.close()


def beat(meter_id: str = "40000001", **fields: Any) -> Heartbeat:
    values: dict[str, Any] = {
        "meter_id": meter_id, "interval": INTERVAL, "phase": "delivery", "at": START,
        "import_wh": 1000.0, "export_wh": 500.0, "power_w": 300.0, "voltage_v": 221.0,
        "relay": "on",
    }  # fmt: skip
    values.update(fields)
    return Heartbeat(**values)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def _community(
    store: Store, clock: ManualClock, webhook_url: str | None = None
) -> tuple[LocalBus, MonitorAgent, AlarmListener, Agent]:
    bus = LocalBus()
    monitor = MonitorAgent(
        "monitor", bus, store=store, clock=clock, webhook_url=webhook_url, check_every_s=3600,
        balances=lambda ids: {m: 12345 for m in ids},
    )  # fmt: skip
    listener = AlarmListener("ops-console", bus)
    board = Agent("prosumer-40000001", bus)
    for agent in (monitor, listener, board):
        await agent.start()
    return bus, monitor, listener, board


def alarms(store: Store, kind: str) -> list[AlarmRow]:
    with store.session() as session:
        return list(session.scalars(select(AlarmRow).where(AlarmRow.kind == kind)))


async def test_a_silent_meter_raises_an_alarm_that_ends_when_it_answers(
    store: Store, clock: ManualClock, webhook: Webhook
) -> None:
    _bus, monitor, listener, board = await _community(store, clock, webhook.url)
    try:
        await board.send(
            "monitor",
            Performative.INFORM,
            beat(import_wh=None, meter_error="timeout after 3 tries"),
        )
        await settle()
        [alarm] = alarms(store, "meter-not-answering")
        assert alarm.ended_at is None and "timeout after 3 tries" in alarm.message
        with store.session() as session:
            meter = session.get(MeterRow, "40000001")
            assert meter is not None and meter.board_status == "meter-error"
        await board.send("monitor", Performative.INFORM, beat(at=START + timedelta(minutes=15)))
        await settle()
        [alarm] = alarms(store, "meter-not-answering")
        assert alarm.ended_at is not None
        kinds = [(n.kind, n.active) for n in listener.received if n.kind == "meter-not-answering"]
        assert kinds == [("meter-not-answering", True), ("meter-not-answering", False)]
        posted = [
            (p["kind"], p["active"]) for p in webhook.posted if p["kind"] == "meter-not-answering"
        ]
        assert posted == kinds
    finally:
        await monitor.stop()


async def test_voltage_outside_the_adequate_range_is_an_alarm_with_its_class(
    store: Store, clock: ManualClock
) -> None:
    _bus, monitor, _listener, board = await _community(store, clock)
    try:
        await board.send("monitor", Performative.INFORM, beat(voltage_v=232.0))
        await settle()
        [alarm] = alarms(store, "voltage")
        assert alarm.severity == "warning" and "precarious" in alarm.message
        await board.send("monitor", Performative.INFORM, beat(voltage_v=236.0))
        await settle()
        [alarm] = alarms(store, "voltage")  # the same alarm, now critical
        assert alarm.severity == "critical" and "critical" in alarm.message
        await board.send("monitor", Performative.INFORM, beat(voltage_v=220.0))
        await settle()
        assert alarms(store, "voltage")[0].ended_at is not None
    finally:
        await monitor.stop()


async def test_a_board_gone_quiet_is_offline_until_it_beats_again(
    store: Store, clock: ManualClock
) -> None:
    _bus, monitor, _listener, board = await _community(store, clock)
    try:
        await board.send("monitor", Performative.INFORM, beat(at=clock.now()))
        await settle()
        clock.advance(1799)
        await monitor.check()
        assert alarms(store, "agent-offline") == []
        clock.advance(2)
        await monitor.check()
        [alarm] = alarms(store, "agent-offline")
        assert alarm.ended_at is None
        await board.send("monitor", Performative.INFORM, beat(at=clock.now()))
        await settle()
        assert alarms(store, "agent-offline")[0].ended_at is not None
    finally:
        await monitor.stop()


async def test_a_battery_outside_its_limits_is_an_alarm(store: Store, clock: ManualClock) -> None:
    _bus, monitor, _listener, board = await _community(store, clock)
    try:
        limits = {"soc_min_fraction": 0.4, "soc_max_fraction": 0.95}
        await board.send("monitor", Performative.INFORM, beat(soc_fraction=0.3, **limits))
        await settle()
        assert alarms(store, "battery-limits")[0].ended_at is None
        await board.send("monitor", Performative.INFORM, beat(soc_fraction=0.5, **limits))
        await settle()
        assert alarms(store, "battery-limits")[0].ended_at is not None
    finally:
        await monitor.stop()


async def test_clearing_and_delivery_become_intervals_trades_savings_and_balances(
    store: Store, clock: ManualClock
) -> None:
    _bus, monitor, _listener, board = await _community(store, clock)
    try:
        previous = beat(interval=INTERVAL - 900, import_wh=900.0, export_wh=100.0)
        await board.send("monitor", Performative.INFORM, previous)
        trade = TradeNotice(buy_order="40000002:0", sell_order="40000001:0", buyer="40000002",
                            seller="40000001", quantity_wh=400, price=0.55)  # fmt: skip
        notice = ClearingNotice(
            interval=INTERVAL, price=0.55, trades=[trade], tx_hash="0x" + "a" * 64, gas_used=60000
        )
        await board.send("monitor", Performative.INFORM, notice)
        await settle()
        await board.send("monitor", Performative.INFORM, beat())
        await board.send(
            "monitor", Performative.INFORM,
            DeliveryNotice(interval=INTERVAL, tx_hash="0x" + "b" * 64, gas_used=40000),
        )  # fmt: skip
        await settle()
        with store.session() as session:
            row = session.get(MarketIntervalRow, INTERVAL)
            assert row is not None
            assert (row.price, row.trades, row.traded_wh) == (0.55, 1, 400.0)
            assert row.delivered_at is not None and row.delivery_tx == "0x" + "b" * 64
            mine = session.scalars(
                select(MeterIntervalRow).where(MeterIntervalRow.interval_start == START)
            ).one()
            assert (mine.imported_wh, mine.exported_wh, mine.sold_wh) == (100.0, 400.0, 400.0)
            # sold at 0.55 instead of the feed-in 0.25: 0.4 kWh × 0.30 = R$ 0.12 saved
            assert mine.savings == pytest.approx(0.12)
            assert mine.balance_units == 12345
            meter = session.get(MeterRow, "40000001")
            assert meter is not None and meter.last_settled_interval == INTERVAL
    finally:
        await monitor.stop()


async def test_a_failed_settlement_is_an_instant_alarm(store: Store, clock: ManualClock) -> None:
    _bus, monitor, _listener, board = await _community(store, clock)
    try:
        notice = ClearingNotice(
            interval=INTERVAL, price=None, trades=[], error="PriceAboveBuyLimit"
        )
        await board.send("monitor", Performative.INFORM, notice)
        await settle()
        [alarm] = alarms(store, "settlement-failed")
        assert alarm.ended_at == alarm.started_at and "PriceAboveBuyLimit" in alarm.message
    finally:
        await monitor.stop()


async def test_orders_without_a_clearing_raise_a_late_settlement_alarm_until_it_comes(
    store: Store, clock: ManualClock, webhook: Webhook
) -> None:
    _bus, monitor, listener, board = await _community(store, clock, webhook.url)
    try:
        # A board has sent its orders for the interval (its heartbeat of the order phase).
        await board.send("monitor", Performative.INFORM, beat(phase="order", at=clock.now()))
        await settle()
        clock.set(START + timedelta(seconds=monitor.late_after_s - 1))
        await monitor.check()
        assert alarms(store, "settlement-late") == []
        clock.advance(2)
        await monitor.check()
        await monitor.check()  # raised once, not at every check
        [alarm] = alarms(store, "settlement-late")
        assert alarm.severity == "critical" and alarm.ended_at is None
        assert "had orders but no clearing" in alarm.message
        assert any(p["kind"] == "settlement-late" and p["active"] for p in webhook.posted)
        await board.send(
            "monitor", Performative.INFORM, ClearingNotice(interval=INTERVAL, price=0.6, trades=[])
        )
        await settle()
        assert alarms(store, "settlement-late")[0].ended_at is not None
        assert [n.kind for n in listener.received if not n.active] == ["settlement-late"]
    finally:
        await monitor.stop()


async def test_a_void_interval_is_shown_with_its_reason(store: Store, clock: ManualClock) -> None:
    _bus, monitor, _listener, board = await _community(store, clock)
    try:
        notice = VoidNotice(interval=INTERVAL, reason="the market was down at its gate closure")
        await board.send("monitor", Performative.INFORM, notice)
        await settle()
        [alarm] = alarms(store, "interval-void")
        assert "the market was down" in alarm.message
        with store.session() as session:
            row = session.get(MarketIntervalRow, INTERVAL)
            assert row is not None and row.void_reason == notice.reason
    finally:
        await monitor.stop()


async def test_a_config_ack_and_the_first_plan_with_it_are_recorded(
    store: Store, clock: ManualClock
) -> None:
    _bus, monitor, _listener, board = await _community(store, clock)
    with store.session() as session:
        session.add(
            BoardConfigRow(
                meter_id="40000001",
                version=1,
                config="{}",
                status="sent",
                requested_by="alice",
                requested_at=START,
            )
        )
    try:
        effective = START + timedelta(minutes=15)
        ack = ConfigAck(meter_id="40000001", version=1, accepted=True, effective_from=effective)
        await board.send("monitor", Performative.INFORM, ack)
        await settle()
        with store.session() as session:
            row = session.scalars(select(BoardConfigRow)).one()
            assert row.status == "accepted"
        applied = beat(phase="order", interval=int(effective.timestamp()), config_version=1)
        await board.send("monitor", Performative.INFORM, applied)
        await settle()
        with store.session() as session:
            row = session.scalars(select(BoardConfigRow)).one()
            assert row.status == "applied"
    finally:
        await monitor.stop()
