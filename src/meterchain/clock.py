"""Clocks: the wall clock, and a virtual clock that runs faster than real time.

Lives beside `model` (not under `sim/`) because the meter simulators, which sit below `sim/`,
advance their physical model by it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current UTC time."""

    def now(self) -> datetime: ...


class WallClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ScaledClock:
    """Time that starts at `start` and runs `speed` times faster than the wall clock."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self._start = start or datetime.now(UTC)
        self._speed = speed
        self._origin = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        elapsed_s = (time.monotonic() - self._origin) * self._speed
        return self._start + timedelta(seconds=elapsed_s)


class ManualClock:
    """Time that moves only when told to: deterministic tests and stepped simulations."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError(f"time never goes backwards (asked to advance {seconds} s)")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, moment: datetime) -> None:
        if moment < self._now:
            raise ValueError(f"time never goes backwards ({moment} is before {self._now})")
        self._now = moment


def anchored_clock(
    wall_start: datetime, virtual_start: datetime | None, speed: float, wall_now: datetime
) -> ScaledClock:
    """A clock that read `virtual_start` at wall time `wall_start` and runs `speed` times fast.

    Every process given the same anchors agrees on virtual time, whenever it starts: the board
    agents, the market, and the simulated meters they read.
    """
    virtual_now = (virtual_start or wall_start) + (wall_now - wall_start) * speed
    return ScaledClock(virtual_now, speed)
