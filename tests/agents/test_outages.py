"""Outages a newcomer saw lose intervals (issue 14), reproduced in a running community.

Two boards, a market and a grid, as separate processes over Mosquitto and anvil, 300 times
faster than real time, with the schedule's short settlement delay (300 virtual seconds, one
real second): so a broker outage longer than an interval spans several readings' deadlines.

- The broker stopped for longer than an interval: no board skips a reading, and every interval
  is settled on chain (the readings that could not reach the market in time are settled by the
  gap rules), never recorded as delivered without a transaction.
- The market killed across several gate closures: each of those intervals is cleared late (if
  the market is back before it ends) or void, and the boards are told.
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Community]:
    running = start_community(tmp_path_factory.mktemp("outages"), [PV_HOUSE, HOUSE])
    try:
        running.start_market()
        running.start_grid(0.80, 0.30)
        running.start_boards(running.meters)
        first = running.first_interval_read_after(running.virtual_now())
        running.first_full_interval = first
        running.wait_until_delivered(
            lambda d: bool(d) and d[-1] >= first, timeout_s=30, what="a first full interval"
        )
        yield running
    finally:
        running.close()


def settled_or_void(community: Community, since: int, until: int) -> dict[int, str]:
    """Each interval from `since` to `until`: 'settled' (one DeliverySettled) or 'void'."""
    delivered = community.delivered_intervals()
    void = {int(k) for k in community.market_records().all("void")}
    outcome = {}
    for interval in range(since, until + 1, INTERVAL_S):
        settled = delivered.count(interval)
        assert settled <= 1, f"interval {interval} was settled {settled} times"
        assert not (settled == 0 and interval not in void), (
            f"interval {interval} is neither settled on chain nor void:\n{community.logs_tail()}"
        )
        outcome[interval] = "settled" if settled else "void"
    return outcome


def test_a_broker_outage_longer_than_an_interval_loses_no_interval(community: Community) -> None:
    start = community.current_interval() + INTERVAL_S
    community.sleep_until_virtual(community.interval_moment(start, 100))
    offsets = {p.name: len(p.output()) for p in community.all_processes()}
    community.broker.stop()
    time.sleep(4.5)  # 1.5 intervals: two readings come due and their settlements pass
    community.broker = community.broker.restart()
    last = start + 3 * INTERVAL_S
    community.wait_until_delivered(lambda d: bool(d) and d[-1] >= last, 40, f"{last} delivered")

    for board in community.boards.values():
        assert "came after its deadline" not in board.output()[offsets[board.name] :]
        assert "deadline of interval" not in board.output()[offsets[board.name] :]
    outcome = settled_or_void(community, start, last)
    assert set(outcome.values()) == {"settled"}, outcome
    # Every board read its meter for every interval, outage or not: nothing was skipped.
    for spec in community.meters:
        taken = community.board_records(spec).all("delivery")
        assert all(str(i) in taken for i in outcome), (spec.meter_id, sorted(taken))
    for key, record in community.market_records().all("delivered").items():
        assert record["tx_hash"], f"interval {key} recorded as delivered without a transaction"
    check_settlement(community)


def test_a_market_down_across_gate_closures_clears_or_voids_each_interval(
    community: Community,
) -> None:
    market = community.market_process
    assert market is not None
    first = community.current_interval() + INTERVAL_S
    community.sleep_until_virtual(community.interval_moment(first, -200))  # before gate closure
    market.kill()
    time.sleep(7.5)  # 2.5 intervals: three gate closures pass while it is down
    community.start_market()
    last = first + 3 * INTERVAL_S
    community.wait_until_delivered(lambda d: bool(d) and d[-1] >= last, 40, f"{last} delivered")

    records = community.market_records()
    cleared, void = records.all("cleared"), records.all("void")
    for interval in range(first, first + 3 * INTERVAL_S, INTERVAL_S):
        assert (str(interval) in cleared) != (str(interval) in void), (
            f"interval {interval} must be cleared or void, once: {community.logs_tail()}"
        )
        if str(interval) in void:
            assert "down" in void[str(interval)]["reason"]
            for spec in (PV_HOUSE, HOUSE):  # every board was told
                told = community.board_records(spec).get("void", str(interval))
                assert told is not None, f"board {spec.meter_id} was not told {interval} is void"
    assert any(str(i) in void for i in range(first, first + 2 * INTERVAL_S, INTERVAL_S))
    settled_or_void(community, first, last)
    batches = [int(e["args"]["interval"]) for e in community.market.events("BatchSettled")]
    assert not set(batches) & {int(k) for k in void}, "a void interval has a batch on chain"
    check_settlement(community)
