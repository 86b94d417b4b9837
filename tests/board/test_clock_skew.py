"""A board whose clock is 2 minutes off (no NTP) still meets gate closure and settlement.

The board estimates its clock's error from the market's and the grid's messages (each carries
its sender's NTP-kept wall time) and corrects its agent's clock (`board.skew`). Without the
correction a board 2 minutes late sends its reading after the market settled the interval;
with it, both its phases fall where the market expects them. A phase the board can no longer
make in time is sat out, with a log line that says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from meterchain.agents.broker import Broker, start_mosquitto
from meterchain.agents.messages import TariffNotice, Tick
from meterchain.agents.runtime import Agent, Envelope, Performative
from meterchain.agents.ticker import Ticker, board_phases
from meterchain.board.skew import CorrectedClock, SkewEstimator
from meterchain.clock import ManualClock, anchored_clock
from meterchain.roles import ScheduleConfig

SKEW_S = 120.0
SPEED = 900.0
SCHEDULE = ScheduleConfig()  # the defaults: orders 300 s before, gate 60 s, settle 120 s after


class Quiet(Agent):
    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        return None


@pytest.fixture
def broker() -> Iterator[Broker]:
    running = start_mosquitto(agents=["prosumer-1"])
    yield running
    running.stop()


def test_the_estimate_ignores_messages_that_waited_at_the_broker() -> None:
    estimator = SkewEstimator({"market"})
    true = datetime(2026, 11, 24, 12, tzinfo=UTC)
    for k, delay_s in enumerate([0.004, 0.002, 40.0, 600.0, 0.003]):  # two waited in an outage
        sent = true + timedelta(seconds=k)
        received_on_board = sent + timedelta(seconds=delay_s + SKEW_S)
        estimator.observe("market", sent, received_on_board)
    estimator.observe("prosumer-2", true, true)  # a peer's clock is not trusted
    assert estimator.offset_s == pytest.approx(SKEW_S, abs=0.01)


@pytest.mark.parametrize("skew_s", [SKEW_S, -SKEW_S])
async def test_the_board_learns_its_error_from_the_markets_messages(
    broker: Broker, skew_s: float
) -> None:
    estimator = SkewEstimator({"market"})
    board_bus = broker.bus("prosumer-1")
    board_bus.on_receive = lambda envelope: estimator.observe(
        envelope.sender,
        envelope.sent_at,
        datetime.now(UTC) + timedelta(seconds=skew_s),  # the board's host clock
    )
    market_bus = broker.bus("market")
    board, market = Quiet("prosumer-1", board_bus), Quiet("market", market_bus)
    await board.start()
    await board_bus.join("prosumer-1", "community")
    await market.start()
    try:
        for _ in range(8):
            await market.send("community", Performative.INFORM, TariffNotice(
                retail_price=0.8, feed_in_price=0.3))  # fmt: skip
            await asyncio.sleep(0.05)
        async with asyncio.timeout(5):
            while estimator.samples < 8:
                await asyncio.sleep(0.02)
    finally:
        for agent in (board, market):
            await agent.stop()
            await agent.bus.close()  # type: ignore[attr-defined]
    assert estimator.offset_s == pytest.approx(skew_s, abs=0.2)  # loopback latency only


async def phases_in_true_time(skew_s: float, *, corrected: bool) -> list[tuple[Tick, datetime]]:
    """Run a board's ticker for two intervals at SPEED; each tick with the true time it came.

    The board's host clock is `skew_s` seconds of virtual time off (skew_s / SPEED of wall
    time, so a 2-minute error at speed 1 is the same error here)."""
    wall = datetime.now(UTC)
    anchor = wall.replace(microsecond=0)
    virtual_start = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    true_clock = anchored_clock(anchor, virtual_start, SPEED, wall)
    host_error = timedelta(seconds=skew_s / SPEED)
    board_base = anchored_clock(anchor, virtual_start, SPEED, wall + host_error)
    estimator = SkewEstimator({"market"})
    if corrected:  # what the market's messages told it (see the test above)
        estimator.observe("market", wall, wall + host_error)
    clock = CorrectedClock(board_base, estimator, SPEED)
    posted: list[tuple[Tick, datetime]] = []

    async def post(tick: Tick) -> None:
        posted.append((tick, true_clock.now()))

    ticker = Ticker(
        clock, interval_s=SCHEDULE.interval_s, phases=board_phases(SCHEDULE), post=post,
        speed=SPEED, catch_up_intervals=0,
    )  # fmt: skip
    task = asyncio.create_task(ticker.run())
    await asyncio.sleep(2.2 * SCHEDULE.interval_s / SPEED)
    task.cancel()
    return posted


def on_time(tick: Tick, true_moment: datetime) -> bool:
    start = tick.interval_start
    if tick.phase == "order":
        return true_moment < start - timedelta(seconds=SCHEDULE.gate_closure_s)
    end = start + timedelta(seconds=SCHEDULE.interval_s)
    return end <= true_moment < end + timedelta(seconds=SCHEDULE.settle_delay_s)


@pytest.mark.parametrize("skew_s", [SKEW_S, -SKEW_S])
async def test_a_skewed_board_meets_gate_closure_and_settlement(skew_s: float) -> None:
    corrected = await phases_in_true_time(skew_s, corrected=True)
    assert len(corrected) >= 3
    assert all(on_time(tick, moment) for tick, moment in corrected), corrected


async def test_uncorrected_a_late_board_would_miss_settlement() -> None:
    """Why the correction matters: 2 minutes late, the reading comes after the settlement."""
    late = await phases_in_true_time(-SKEW_S, corrected=False)
    deliveries = [(t, m) for t, m in late if t.phase == "delivery"]
    assert deliveries and not any(on_time(t, m) for t, m in deliveries)


async def test_a_phase_the_board_can_no_longer_make_is_sat_out_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The clock is corrected forward past an order's gate: the board does not send it."""
    clock = ManualClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    posted: list[Tick] = []

    async def post(tick: Tick) -> None:
        posted.append(tick)

    ticker = Ticker(
        clock, interval_s=900, phases=board_phases(SCHEDULE), post=post, speed=1e9,
        catch_up_intervals=0,
    )  # fmt: skip
    caplog.set_level(logging.WARNING)
    task = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.02)
    first = datetime(2026, 11, 24, 12, 15, tzinfo=UTC)  # its orders are due at 12:10
    clock.set(first - timedelta(seconds=30))  # corrected: it is later than the board thought
    await asyncio.sleep(0.05)
    task.cancel()
    assert all(t.phase != "order" or t.interval_start != first for t in posted)
    assert any(
        "sitting out the order phase" in r.getMessage() and "deadline passed" in r.getMessage()
        for r in caplog.records
    ), caplog.text
