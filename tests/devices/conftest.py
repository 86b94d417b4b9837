"""Fixtures of the device tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from device_site import Site, serve_site

from meterchain.clock import ManualClock


@pytest.fixture(params=["tcp", "rtu"])
async def site(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Site]:
    """The site served over TCP, then over a serial cable (Modbus RTU)."""
    async for served in serve_site(clock, request.param):
        yield served
