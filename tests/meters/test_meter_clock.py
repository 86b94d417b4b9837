"""A simulated meter's clock agrees with the agents' clock when given the same anchors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterchain.clock import anchored_clock
from meterchain.commands.errors import OptionError
from meterchain.commands.meter import simulator_clock


def test_meter_and_agent_clocks_given_the_same_anchors_agree() -> None:
    wall_start = datetime.now(UTC) - timedelta(seconds=10)
    morning = datetime(2026, 11, 24, 13, tzinfo=UTC)
    meter = simulator_clock(300, wall_start.isoformat(), morning.isoformat())
    agent = anchored_clock(wall_start, morning, 300, datetime.now(UTC))
    assert abs((meter.now() - agent.now()).total_seconds()) < 300 * 0.5
    assert morning + timedelta(seconds=2900) < meter.now() < morning + timedelta(seconds=3300)


def test_without_anchors_the_meter_runs_from_now() -> None:
    clock = simulator_clock(1, None, None)
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 1


@pytest.mark.parametrize(
    ("speed", "start", "virtual", "complaint"),
    [
        (0, None, None, "--speed must be positive"),
        (1, "yesterday", None, "not an ISO 8601 time"),
        (1, None, "2026-11-24T13:00:00", "needs a time zone"),
    ],
)
def test_bad_clock_options_are_named(
    speed: float, start: str | None, virtual: str | None, complaint: str
) -> None:
    with pytest.raises(OptionError, match=complaint):
        simulator_clock(speed, start, virtual)
