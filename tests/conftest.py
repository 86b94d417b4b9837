"""Fixtures every test area shares."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from meterchain.clock import ManualClock
from meterchain.meters.sim.serial_link import VirtualSerialLink

NOON_FORTALEZA = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so, starting at noon in Fortaleza."""
    return ManualClock(NOON_FORTALEZA)


@pytest.fixture
def serial_link() -> Iterator[VirtualSerialLink]:
    """A virtual null-modem cable: `meter_end` for the simulator, `client_end` for the driver."""
    with VirtualSerialLink() as link:
        yield link


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """One real PostgreSQL server for the whole session (tests/postgres_server.py)."""
    from postgres_server import postgres

    with postgres() as server:
        yield server
