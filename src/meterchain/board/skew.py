"""How far the board's clock is off, from the market's messages, and a clock that corrects it.

A board may have no NTP (a mobile link that is often down, a router without it). Every
envelope carries `sent_at`, the sender's wall clock when it sent it; the market and the grid
keep theirs on NTP. A message sent at true time t1 and received at t2 >= t1 by a board whose
clock reads t + e gives sent_at − received_at = t1 − t2 − e <= −e: so the largest of these
differences over recent messages bounds −e from below, and equals it when a message came
straight through (a few milliseconds on a LAN). Messages that waited at the broker (an
outage) only give smaller differences, which the maximum ignores.

`CorrectedClock` moves the agent's clock by the estimate (times the clock's speed, for a
virtual clock anchored on the wall clock), so the board's phases fall when the market's do.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

from meterchain.clock import Clock

WINDOW = 16  # recent messages from the operator's agents
MIN_CORRECTION_S = 0.05  # below this, leave the clock alone (network jitter)


class SkewEstimator:
    """Estimates this host's wall-clock error from the operator's messages."""

    def __init__(self, trusted: set[str], window: int = WINDOW) -> None:
        self.trusted = trusted
        self._differences: deque[float] = deque(maxlen=window)

    def observe(self, sender: str, sent_at: datetime, received_at: datetime | None = None) -> None:
        if sender not in self.trusted:
            return
        received = received_at or datetime.now(UTC)
        self._differences.append((sent_at - received).total_seconds())

    @property
    def samples(self) -> int:
        return len(self._differences)

    @property
    def offset_s(self) -> float | None:
        """How far ahead (positive) or behind this host's wall clock is; None before a message."""
        if not self._differences:
            return None
        return -max(self._differences)


class CorrectedClock:
    """The agent's clock moved by the estimated error of the host's wall clock."""

    def __init__(self, base: Clock, estimator: SkewEstimator, speed: float = 1.0) -> None:
        self.base = base
        self.estimator = estimator
        self.speed = speed

    @property
    def correction_s(self) -> float:
        """Seconds of this clock's time added to the base clock's (virtual seconds)."""
        offset = self.estimator.offset_s
        if offset is None or abs(offset) < MIN_CORRECTION_S:
            return 0.0
        return -offset * self.speed

    def now(self) -> datetime:
        return self.base.now() + timedelta(seconds=self.correction_s)
