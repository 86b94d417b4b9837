"""Prepaid supply's warnings reach the web through the monitor: the prepaid agent's
low-credit warnings and the boards' own estimates become alarms (the board repeating the
chain's word does not count twice), relay failures start and end, and the PrepaidMeter's
state changes (grace, cut off, supplied again) start and end their alarms, read from where
the last reading stopped, even after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from meterchain.agents.bus_local import LocalBus
from meterchain.agents.messages import DeviceAlarmNotice
from meterchain.agents.monitor import AlarmListener, MonitorAgent, PrepaidStateChange, new_meter
from meterchain.agents.prepaid import CreditWarning
from meterchain.agents.runtime import Agent, Performative
from meterchain.clock import ManualClock
from meterchain.store.community import AlarmRow
from meterchain.store.db import Store, open_store

METER = "40000004"
AT = datetime(2026, 11, 24, 15, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'web.db'}")
    with store.session() as session:
        session.add(new_meter(METER))
    yield store
    store.close()


def alarms(store: Store, kind: str) -> list[AlarmRow]:
    with store.session() as session:
        return list(
            session.scalars(select(AlarmRow).where(AlarmRow.kind == kind).order_by(AlarmRow.id))
        )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


def change(state: str, block: int, reason: str = "none", credit: str = "0") -> PrepaidStateChange:
    return PrepaidStateChange(METER, "supplied", state, reason, Decimal(credit), block)


async def test_low_credit_warnings_from_the_chain_and_the_board_become_alarms(
    store: Store, clock: ManualClock
) -> None:
    bus = LocalBus()
    monitor = MonitorAgent("monitor", bus, store=store, clock=clock, check_every_s=3600)
    listener = AlarmListener("ops-console", bus)
    prepaid, board = Agent("prepaid", bus), Agent(f"prosumer-{METER}", bus)
    for agent in (monitor, listener, prepaid, board):
        await agent.start()
    try:
        warning = CreditWarning(meter_id=METER, threshold_units=500, credit_units=450, at=AT)
        await prepaid.send("monitor", Performative.INFORM, warning)
        echo = DeviceAlarmNotice(
            meter_id=METER, device="nbr14522+tcp://127.0.0.1:1", kind="prepaid",
            code="prepaid-low-credit", active=True, at=AT,
            message=f"prepaid credit of meter {METER} is 450 units (on chain), below the warning "
            "level 500: top up",
        )  # fmt: skip
        await board.send("monitor", Performative.INFORM, echo)
        await settle()
        [alarm] = alarms(store, "prepaid-low-credit")
        assert alarm.meter_id == METER and alarm.ended_at is not None  # instant: acknowledge it
        assert "is 4.50 (on chain), below the warning level 5.00" in alarm.message
        assert [n.kind for n in listener.received] == ["prepaid-low-credit"]  # on the bus too

        own = echo.model_copy(update={"message": echo.message.replace("on chain", "estimated "
                                                                      "on the board")})  # fmt: skip
        await board.send("monitor", Performative.INFORM, own)
        relay = echo.model_copy(
            update={"code": "prepaid-relay-failed", "message": "the meter refused the relay"}
        )
        await board.send("monitor", Performative.INFORM, relay)
        await settle()
        assert len(alarms(store, "prepaid-low-credit")) == 2  # the board's own estimate counts
        [failed] = alarms(store, "prepaid-relay-failed")
        assert failed.ended_at is None and failed.severity == "critical"
        await board.send("monitor", Performative.INFORM, relay.model_copy(update={"active": False}))
        await settle()
        assert alarms(store, "prepaid-relay-failed")[0].ended_at is not None
    finally:
        for agent in (monitor, listener, prepaid, board):
            await agent.stop()


async def test_grace_and_cut_off_start_and_end_with_the_prepaid_meters_state(
    store: Store, clock: ManualClock
) -> None:
    chain: list[PrepaidStateChange] = []  # the contract's StateChanged events, by block
    asked: list[int] = []

    def reader(from_block: int) -> tuple[list[PrepaidStateChange], int]:
        asked.append(from_block)
        latest = max((c.block for c in chain), default=0)
        return [c for c in chain if c.block >= from_block], latest + 1

    monitor = MonitorAgent("monitor", LocalBus(), store=store, clock=clock, prepaid_states=reader)
    chain.append(change("grace", 10, "night", "-1.20"))
    assert await monitor.poll_prepaid() == 1
    [grace] = alarms(store, "prepaid-grace")
    assert grace.ended_at is None and "in grace (night)" in grace.message
    assert "-1.20" in grace.message
    assert await monitor.poll_prepaid() == 0  # nothing new: nothing twice
    chain.append(change("cut_off", 12, credit="-2.10"))
    assert await monitor.poll_prepaid() == 1
    [cut] = alarms(store, "prepaid-cut-off")
    assert cut.ended_at is None and cut.severity == "critical"
    assert alarms(store, "prepaid-grace")[0].ended_at is not None
    assert asked == [0, 11, 11]  # each reading starts where the last one stopped

    # a restarted monitor goes on from the kept cursor
    chain.append(change("supplied", 15, credit="22.90"))
    again = MonitorAgent("monitor", LocalBus(), store=store, clock=clock, prepaid_states=reader)
    assert await again.poll_prepaid() == 1
    assert asked[-1] == 13
    assert alarms(store, "prepaid-cut-off")[0].ended_at is not None
    assert len(alarms(store, "prepaid-cut-off")) == 1 and len(alarms(store, "prepaid-grace")) == 1
