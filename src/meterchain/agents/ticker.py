"""The ticker: the phases of every market interval, on a clock, for one deployed process.

In the simulation a coordinator sends the phase ticks; in a deployment every process (each
board, the market, the grid) has its own Ticker that posts them into its own agent's mailbox
when the clock reaches them. The processes agree only through their clocks and the schedule,
so each is given the same `[clock]` and `[schedule]` sections.

A process that starts (or restarts) late still gets the ticks it missed, oldest first, as long
as they are before their deadline: a board restarted before gate closure re-sends its orders,
one restarted after its interval ended still sends its reading before settlement. The agents
make every phase idempotent, so a tick posted twice does no harm.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meterchain.agents.messages import PhaseName, Tick
from meterchain.clock import Clock, WallClock, anchored_clock
from meterchain.roles import ClockConfig, ScheduleConfig

log = logging.getLogger(__name__)


def build_clock(config: ClockConfig, *, wall_now: datetime | None = None) -> Clock:
    """The clock a config describes: anchored so that every process agrees on virtual time."""
    if config.start is None:
        return WallClock()
    wall = wall_now or datetime.now(UTC)
    return anchored_clock(config.start, config.virtual_start, config.speed, wall)


@dataclass(frozen=True)
class PhaseSpec:
    """A tick at `offset_s` from each interval's start; a missed one is still posted until
    `deadline_s` from the start (None: always, within the catch-up window). With
    `post_overdue` a missed tick past its deadline is posted all the same, marked overdue,
    for an agent that must answer for it (the market voids a clearing it can no longer do)."""

    phase: PhaseName
    offset_s: float
    deadline_s: float | None
    post_overdue: bool = False


def board_phases(schedule: ScheduleConfig) -> list[PhaseSpec]:
    """Orders before gate closure; the reading after the interval, before settlement."""
    end = schedule.interval_s
    return [
        PhaseSpec("order", -schedule.order_lead_s, -schedule.gate_closure_s),
        PhaseSpec("delivery", end + schedule.reading_delay_s, end + schedule.settle_delay_s),
    ]


def market_phases(schedule: ScheduleConfig) -> list[PhaseSpec]:
    """Gate closure (clear, settle the batch) and delivery settlement, never skipped.

    A clearing missed while the market was down is still done until the interval ends; past
    that its tick comes overdue and the market voids the interval (and says so).
    """
    end = schedule.interval_s
    return [
        PhaseSpec("clear", -schedule.gate_closure_s, end, post_overdue=True),
        PhaseSpec("settle", end + schedule.settle_delay_s, None),
    ]


def grid_phases(schedule: ScheduleConfig) -> list[PhaseSpec]:
    """Tariffs (and curtailment requests) a little before the boards plan."""
    lead = schedule.order_lead_s + schedule.tariff_lead_s
    return [PhaseSpec("order", -lead, -schedule.gate_closure_s)]


@dataclass(frozen=True)
class ScheduledTick:
    moment: datetime
    interval_start: datetime
    spec: PhaseSpec

    @property
    def deadline(self) -> datetime | None:
        if self.spec.deadline_s is None:
            return None
        return self.interval_start + timedelta(seconds=self.spec.deadline_s)

    def tick(self, *, overdue: bool = False) -> Tick:
        return Tick(
            interval_start=self.interval_start,
            phase=self.spec.phase,
            deadline=self.deadline,
            overdue=overdue,
        )


class Ticker:
    """Posts each phase's Tick when `clock` reaches it; catches up on missed ones first."""

    def __init__(
        self,
        clock: Clock,
        *,
        interval_s: int,
        phases: list[PhaseSpec],
        post: Callable[[Tick], Awaitable[None]],
        speed: float = 1.0,
        catch_up_intervals: int = 4,
    ) -> None:
        if not phases:
            raise ValueError("a ticker needs at least one phase")
        self.clock = clock
        self.interval_s = interval_s
        self.phases = phases
        self.post = post
        self.speed = speed
        self.catch_up_intervals = catch_up_intervals
        self.posted = 0
        self.skipped = 0

    def schedule(self, since: datetime) -> _TickIterator:
        """Every tick strictly after `since`, in time order (phases in list order on ties)."""
        return _TickIterator(self, since)

    async def run(self) -> None:
        """Post ticks until cancelled."""
        now = started = self.clock.now()
        longest = max(abs(p.offset_s) for p in self.phases)
        since = now - timedelta(seconds=self.catch_up_intervals * self.interval_s + longest)
        for scheduled in self.schedule(since):
            await self._sleep_until(scheduled.moment)
            now = self.clock.now()
            deadline = scheduled.deadline
            overdue = deadline is not None and now >= deadline
            if overdue and not scheduled.spec.post_overdue:
                self.skipped += 1
                assert deadline is not None
                # Phases missed while the process was down are expected at start; one missed
                # while running means the process or its clock was late: say so.
                log.log(
                    logging.WARNING if scheduled.moment >= started else logging.DEBUG,
                    "sitting out the %s phase of interval %s: its deadline passed %.0f s ago "
                    "(this process was down, or its clock was late)",
                    scheduled.spec.phase,
                    scheduled.interval_start.isoformat(),
                    (now - deadline).total_seconds(),
                    extra={"event": "phase_skipped", "phase": scheduled.spec.phase},
                )
                continue
            late = (now - scheduled.moment).total_seconds()
            if late > self.interval_s / 10:
                log.info(
                    "posting the %s tick of interval %s late (%.0f s after its moment)",
                    scheduled.spec.phase,
                    scheduled.interval_start.isoformat(),
                    late,
                )
            self.posted += 1
            await self.post(scheduled.tick(overdue=overdue))

    async def _sleep_until(self, moment: datetime) -> None:
        while True:
            remaining_s = (moment - self.clock.now()).total_seconds()
            if remaining_s <= 0:
                return
            await asyncio.sleep(remaining_s / self.speed)


class _TickIterator:
    """Merges the phases' tick sequences in time order."""

    def __init__(self, ticker: Ticker, since: datetime) -> None:
        self._ticker = ticker
        seconds = since.timestamp()
        interval = ticker.interval_s
        # Per phase, the index of the next interval whose tick is strictly after `since`.
        self._next = [
            math.floor((seconds - spec.offset_s) / interval) + 1 for spec in ticker.phases
        ]
        for i, spec in enumerate(ticker.phases):
            if self._next[i] * interval + spec.offset_s <= seconds:
                self._next[i] += 1

    def __iter__(self) -> _TickIterator:
        return self

    def __next__(self) -> ScheduledTick:
        interval = self._ticker.interval_s
        phases = self._ticker.phases
        best = min(
            range(len(phases)), key=lambda i: (self._next[i] * interval + phases[i].offset_s, i)
        )
        index = self._next[best]
        self._next[best] += 1
        start = datetime.fromtimestamp(index * interval, UTC)
        return ScheduledTick(
            moment=start + timedelta(seconds=phases[best].offset_s),
            interval_start=start,
            spec=phases[best],
        )
