"""Faults in a running community: a board killed mid-interval, the market killed after gate
closure, the broker and the chain node stopped for a while, a meter that stops answering.
Whatever happens, every interval settles, every Wh a meter counted is settled exactly once,
and nothing crashes.

One community (two meters, two boards, a market, over Mosquitto and anvil, 300 times faster
than real time) runs through the faults one after the other, in this file's order. After each
fault, each meter's balance on chain must still equal what its registers and trades say, to
the smallest unit. Delivery is settled a whole interval after it ends here (the e2e test
waits 5 virtual minutes), so a board restarted mid-interval (about 3 s, i.e. 15 virtual
minutes, to start) still sends its reading in time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from community_harness import (
    HOUSE,
    INTERVAL_S,
    PV_HOUSE,
    Community,
    check_settlement,
    start_community,
)
from sqlalchemy import select

from meterchain.store.db import open_store
from meterchain.store.outbox import OutboxRow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SETTLE_DELAY_S = 900


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Community]:
    running = start_community(
        tmp_path_factory.mktemp("faults"),
        [PV_HOUSE, HOUSE],
        schedule={"settle_delay_s": SETTLE_DELAY_S},
    )
    try:
        running.start_market()
        running.start_boards(running.meters)
        first = running.first_interval_read_after(running.virtual_now()) + INTERVAL_S
        running.first_full_interval = first
        running.wait_until_delivered(
            lambda d: bool(d) and d[-1] >= first, timeout_s=30, what="a first full interval"
        )
        yield running
    finally:
        running.close()


def next_interval(community: Community) -> int:
    return community.current_interval() + INTERVAL_S


def wait_delivered(community: Community, interval: int, timeout_s: float = 40) -> None:
    community.wait_until_delivered(
        lambda d: bool(d) and d[-1] >= interval, timeout_s, f"interval {interval} delivered"
    )


def used_readings(community: Community, interval: int) -> list[str]:
    record = community.market_records().get("delivered", str(interval))
    assert record is not None, f"the market has no record of delivering {interval}"
    return list(record["used_readings"])


def assert_everyone_alive(community: Community) -> None:
    for process in community.all_processes():
        if process.name.startswith("meter-") and not process.alive:
            continue  # a meter server a test stopped on purpose
        assert process.alive, f"{process.name} died:\n{process.output()[-3000:]}"


def test_a_board_killed_mid_interval_still_settles_it_after_restart(
    community: Community,
) -> None:
    board = community.boards[HOUSE.meter_id]
    interval = next_interval(community)
    community.sleep_until_virtual(community.interval_moment(interval, 100))
    records = community.board_records(HOUSE)
    orders_before = records.get("orders", str(interval))
    assert orders_before is not None, "the board had not sent its orders before gate closure"

    board.kill()  # SIGKILL: no goodbye, whatever was in memory is gone
    community.start_board(HOUSE)
    wait_delivered(community, interval + INTERVAL_S)

    assert HOUSE.meter_id in used_readings(community, interval), community.logs_tail()
    assert HOUSE.meter_id in used_readings(community, interval + INTERVAL_S)
    # The restarted board found what it had done: the same orders, nothing new made up.
    assert community.board_records(HOUSE).get("orders", str(interval)) == orders_before
    market_orders = {
        key: order
        for key, order in community.market_records().all("order").items()
        if order["meter_id"] == HOUSE.meter_id and order["interval"] == interval
    }
    assert sorted(o["signature"] for o in market_orders.values()) == sorted(
        o["signature"] for o in orders_before["orders"]
    )
    check_settlement(community)
    assert_everyone_alive(community)


def test_the_market_killed_after_gate_closure_settles_once_after_restart(
    community: Community,
) -> None:
    interval = next_interval(community)
    # Just after gate closure: the batch of `interval` is being (or has been) settled.
    community.sleep_until_virtual(community.interval_moment(interval, -100))
    market = community.market_process
    assert market is not None
    market.kill()
    community.start_market()
    wait_delivered(community, interval + INTERVAL_S)

    batches = [int(e["args"]["interval"]) for e in community.market.events("BatchSettled")]
    assert len(batches) == len(set(batches)), "a batch was settled twice"
    for settled in (interval, interval + INTERVAL_S):
        assert len(used_readings(community, settled)) == len(community.meters)
    check_settlement(community)
    assert_everyone_alive(community)


def test_the_broker_stopped_for_a_while_loses_nothing(community: Community) -> None:
    interval = next_interval(community)
    community.sleep_until_virtual(community.interval_moment(interval, 100))
    community.broker.stop()  # its sessions and queued messages are saved to disk
    time.sleep(3.0)  # 15 virtual minutes: a gate closure and an end-of-interval reading
    community.broker = community.broker.restart()
    wait_delivered(community, interval + 2 * INTERVAL_S)

    # The readings sent while the broker was away were published once it was back.
    for later in (interval, interval + 2 * INTERVAL_S):
        assert sorted(used_readings(community, later)) == sorted(
            m.meter_id for m in community.meters
        ), community.logs_tail()
    for process in [*community.boards.values(), community.market_process]:
        assert process is not None
        assert "reconnected to the broker" in process.output(), process.name
    check_settlement(community)
    assert_everyone_alive(community)


def test_the_chain_node_stopped_for_a_while_settles_once_it_is_back(
    community: Community,
) -> None:
    interval = next_interval(community)
    # Just before gate closure: the batch of `interval` meets a node that is gone.
    community.sleep_until_virtual(community.interval_moment(interval, -200))
    community.restart_node(down_s=2.0)
    wait_delivered(community, interval + INTERVAL_S)

    market = community.market_process
    assert market is not None
    assert "retrying" in market.output() and "failed tries" in market.output()
    for settled in (interval, interval + INTERVAL_S):
        assert len(used_readings(community, settled)) == len(community.meters)
    # Each interval's batch and delivery went to the chain once: the outbox finished every
    # transaction it began and never had to drop or replace one.
    store = open_store(f"sqlite:///{community.root / 'market.db'}")
    with store.session() as session:
        rows = list(session.scalars(select(OutboxRow)))
    store.close()
    assert rows and {row.status for row in rows} <= {"mined", "sent"}
    assert len({row.key for row in rows}) == len(rows)
    events = [int(e["args"]["interval"]) for e in community.market.events("DeliverySettled")]
    assert len(events) == len(set(events))
    check_settlement(community)
    assert_everyone_alive(community)


def test_a_meter_that_stops_answering_is_settled_with_the_grid(community: Community) -> None:
    interval = next_interval(community)
    community.sleep_until_virtual(community.interval_moment(interval, 100))
    community.meter_servers[HOUSE.meter_id].stop()
    wait_delivered(community, interval + INTERVAL_S)

    for settled in (interval, interval + INTERVAL_S):
        assert used_readings(community, settled) == [PV_HOUSE.meter_id]
    board = community.boards[HOUSE.meter_id]
    assert board.alive
    assert f"no reading for interval {interval}" in board.output()
    checks = check_settlement(community)
    assert interval in checks[HOUSE.meter_id].intervals_without_reading
    assert_everyone_alive(community)
