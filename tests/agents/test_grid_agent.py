"""The grid agent: tariffs to the community at every order phase, the feeder's export limit
shared out as curtailment requests, the operator's changes taken, and each of these in the
info log (issue 14: "nothing to read in the logs")."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from listener import Listener
from meterchain.agents.bus_local import LocalBus
from meterchain.agents.grid import GridAgent
from meterchain.agents.messages import CurtailRequest, TariffNotice, Tick
from meterchain.agents.runtime import Agent, Performative

START = datetime(2026, 11, 24, 15, tzinfo=UTC)


async def test_tariffs_and_curtailment_go_out_and_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="meterchain.agents.grid")
    bus = LocalBus()
    homes = [Listener(f"prosumer-{n}", bus, ("community",)) for n in (1, 2)]
    grid = GridAgent(
        "grid", bus, tariffs=TariffNotice(retail_price=0.8, feed_in_price=0.3),
        prosumers=[h.name for h in homes],
    )  # fmt: skip
    operator = Agent("monitor", bus)
    for agent in (*homes, grid, operator):
        await agent.start()
    try:
        # The operator sets new tariffs and a 3 kW feeder export limit.
        notice = TariffNotice(retail_price=0.9, feed_in_price=0.25, max_export_w=3000)
        await operator.send("grid", Performative.INFORM, notice)
        await operator.send("grid", Performative.INFORM, Tick(interval_start=START, phase="order"))
        for _ in range(100):
            if all(len(h.received) >= 2 for h in homes):
                break
            await asyncio.sleep(0.01)
        for home in homes:
            tariffs = [c for c in home.received if isinstance(c, TariffNotice)]
            curtail = [c for c in home.received if isinstance(c, CurtailRequest)]
            assert [(t.retail_price, t.feed_in_price) for t in tariffs] == [(0.9, 0.25)]
            assert [c.max_export_w for c in curtail] == [1500.0]  # the limit shared out
        lines = [r.getMessage() for r in caplog.records]
        assert (
            "grid: monitor set the tariffs to retail 0.9, feed-in 0.25 per kWh; feeder "
            "export limit 3000 W" in lines
        )
        interval = int(START.timestamp())
        assert f"grid: tariffs for interval {interval}: retail 0.9, feed-in 0.25 per kWh" in lines
        assert (
            f"grid: asked 2 prosumers to export at most 1500 W each from {START.isoformat()}"
            in lines
        )
        events = {getattr(r, "event", None) for r in caplog.records}
        assert {"tariffs", "curtailment"} <= events  # JSON logs carry them as fields
    finally:
        for agent in (*homes, grid, operator):
            await agent.stop()
