"""A board asked twice for the same interval's reading (a restarted agent, a duplicated tick)
sends the reading it signed the first time, even though its meter has moved on since: two
different signed readings for one interval are equivocation, which the contract punishes by
revoking the board's key (`EnergyMarket.proveReadingEquivocation`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eth_account import Account

from listener import Listener
from meterchain.agents.bus_local import LocalBus
from meterchain.agents.messages import ReadingSubmission, Tick
from meterchain.agents.planning import DerPlanner
from meterchain.agents.prosumer import ProsumerAgent
from meterchain.agents.runtime import Envelope, Performative
from meterchain.chain.signing import MarketDomain
from meterchain.clock import ManualClock
from meterchain.der.site import Site
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.registry import client_url, start_simulator
from meterchain.store.db import open_store
from meterchain.store.records import Records

METER = "10000001"
FIRST = datetime(2026, 11, 24, 15, tzinfo=UTC)
TICK = Envelope(performative=Performative.INFORM, sender="ticker", receiver="board",
                content_type="tick", content={})  # fmt: skip


async def test_asked_again_the_board_resends_what_it_signed_and_never_signs_anew(
    tmp_path: Path,
) -> None:
    clock = ManualClock(FIRST)
    model = PhysicalMeter(METER, clock, load_w=flat_load_w(2000.0))
    server = await start_simulator("modbus", model)
    meter = open_meter(client_url("modbus", server.port))
    store = open_store(f"sqlite:///{tmp_path / 'board.db'}", durable=True)
    bus = LocalBus()
    board = ProsumerAgent(
        "board", bus, meter_id=METER, meter=meter, signer=Account.create(),
        domain=MarketDomain(31337, "0x" + "11" * 20),
        planner=DerPlanner(Site(name=METER), lambda _s, n: ([0.0] * n, [2000.0] * n),
                           meter_id=METER),
        records=Records(store, "board"), clock=clock,
    )  # fmt: skip
    market = Listener("market", bus)
    for agent in (board, market):
        await agent.start()

    async def delivery(start: datetime) -> None:
        clock.set(max(clock.now(), start + timedelta(seconds=930)))
        await board.handle(TICK, Tick(interval_start=start, phase="delivery"))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)

    try:
        await delivery(FIRST - timedelta(seconds=900))  # records where FIRST starts
        await delivery(FIRST)
        clock.advance(600)  # the house keeps drawing 2 kW: the registers move on
        await delivery(FIRST)  # asked again, as after a restart
        ours = [r for r in market.of(ReadingSubmission) if r.interval == int(FIRST.timestamp())]
        assert len(ours) == 2
        assert ours[0] == ours[1]  # the same registers, the same signature
        assert ours[0].end_import_wh - ours[0].start_import_wh > 0
    finally:
        for agent in (board, market):
            await agent.stop()
        await meter.close()
        await server.close()
        store.close()
