"""End to end: two boards and a market, three separate processes, over Mosquitto and anvil.

A PV house speaking Modbus and a plain house speaking DLMS/COSEM are served by `meterchain
meter serve`; each has its board's `meterchain agent run`; `meterchain market run` clears and
settles. The meters are registered and funded with `meterchain agent register` / `fund`. On a
virtual clock 300 times faster than real time, a few 15-minute intervals go by; then the chain
must show them settled, and each meter's balance must be exactly what the meters' registers
and the recorded trades say.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from community_harness import (
    HOUSE,
    INTERVAL_S,
    PV_HOUSE,
    Community,
    MeterCheck,
    check_settlement,
    start_community,
)

from meterchain.chain.client import IntervalStatus

SETTLED_INTERVALS = 4  # beyond the first, whose start the boards were not up to read
GRID_RETAIL, GRID_FEED_IN = 0.90, 0.20  # announced by the grid; the boards' files say 0.80/0.30


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Community]:
    running = start_community(tmp_path_factory.mktemp("e2e"), [PV_HOUSE, HOUSE], via_cli=True)
    try:
        running.start_market()
        running.start_grid(GRID_RETAIL, GRID_FEED_IN)
        running.start_boards(running.meters)
        # A reading carries both ends of its interval: the first interval a board can sign is
        # the one after the first whose end it read.
        first = running.first_interval_read_after(running.virtual_now()) + INTERVAL_S
        running.first_full_interval = first
        last = first + SETTLED_INTERVALS * INTERVAL_S
        running.wait_until_delivered(
            lambda d: bool(d) and d[-1] >= last,
            timeout_s=60,
            what=f"intervals up to {last} delivered",
        )
        running.stop_agents()
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def checks(community: Community) -> dict[str, MeterCheck]:
    return check_settlement(community)


pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def test_every_settled_interval_is_delivered_on_chain(community: Community) -> None:
    delivered = community.delivered_intervals()
    assert len(delivered) >= SETTLED_INTERVALS + 1
    for interval in delivered:
        assert community.market.interval_status(interval) is IntervalStatus.DELIVERED
    assert delivered == sorted(set(delivered)), "an interval was settled twice"


def test_intervals_follow_each_other_without_gaps(community: Community) -> None:
    delivered = [i for i in community.delivered_intervals() if i >= community.first_full_interval]
    assert all(b - a == INTERVAL_S for a, b in itertools.pairwise(delivered)), delivered


def test_every_meter_balance_matches_its_registers_and_trades(
    checks: dict[str, MeterCheck],
) -> None:
    for check in checks.values():
        assert check.chain_balance == check.expected_balance
        assert check.chain_balance != 0


def test_no_reading_is_missing_once_every_board_runs(
    community: Community, checks: dict[str, MeterCheck]
) -> None:
    first = community.first_full_interval
    for spec in community.meters:
        check = checks[spec.meter_id]
        assert [i for i in check.intervals_without_reading if i >= first] == []
        assert len([i for i in check.intervals_with_reading if i >= first]) > SETTLED_INTERVALS


def test_the_pv_house_trades_with_the_plain_house(checks: dict[str, MeterCheck]) -> None:
    assert checks[PV_HOUSE.meter_id].traded_wh > 0
    assert checks[HOUSE.meter_id].traded_wh > 0


def test_boards_bid_at_the_tariffs_the_grid_announces(community: Community) -> None:
    orders = community.market_records().all("order").values()
    # From the second full interval on, a tariff notice came after every board was listening.
    later = [o for o in orders if o["interval"] > community.first_full_interval + INTERVAL_S]
    buys = {o["limit_price_units"] for o in later if o["side"] == "buy"}
    sells = {o["limit_price_units"] for o in later if o["side"] == "sell"}
    # The plan prices energy it can always get from the grid at the grid's price.
    assert round(GRID_RETAIL * 100) in buys and 80 not in buys, buys
    assert round(GRID_FEED_IN * 100) in sells and 30 not in sells, sells


def test_agents_stop_cleanly_on_sigterm(community: Community) -> None:
    processes = [*community.boards.values(), community.market_process, community.grid_process]
    for process in processes:
        assert process is not None and process.popen is not None
        assert process.popen.returncode == 0, process.output()[-2000:]
        assert "stopped" in process.output()


def test_boards_never_talk_to_the_chain(community: Community) -> None:
    for spec in community.meters:
        config = (community.root / f"board-{spec.meter_id}.toml").read_text()
        assert "rpc" not in config
        assert community.node.rpc_url not in config
