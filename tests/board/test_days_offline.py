"""Three simulated days without the broker (issue 13, "Days offline").

A board with a meter, a battery and a PV inverter (the device tests' simulated site over
Modbus TCP, one physical model on a manual clock) runs two intervals with the market's side
listening, then loses the broker for three days. It keeps reading and storing; its devices
follow the safe local rule (self-consume, never over the export limit); its retention keeps
what it is told to (one day here; 90 by default). When the broker returns it sends what is
still of use (what the market would take: orders before gate closure, readings before
settlement) and drops the rest, and its next reading settles the three days by the existing
rules: the energy between the last settled registers and that reading's start is a gap,
billed at the tariffs, to the watt-hour.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from board_harness import AGENT, MARKET_ADDRESS, METER_ID, MarketListener
from device_site import serve_site
from eth_account import Account

from meterchain.agents.broker import start_mosquitto
from meterchain.agents.forecasting import BoardForecast
from meterchain.agents.messages import Tick
from meterchain.agents.planning import DerPlanner
from meterchain.agents.prosumer import ProsumerAgent
from meterchain.agents.runtime import Envelope, Performative
from meterchain.chain.batch import MeterAccountState, Metered, measure_reading
from meterchain.chain.signing import MarketDomain, ReadingMessage, meter_id_to_bytes32
from meterchain.clock import ManualClock
from meterchain.config import DevicesConfig
from meterchain.der.site import Battery, Site
from meterchain.devices.board import open_board_devices
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.registry import client_url, start_simulator
from meterchain.roles import SiteConfig
from meterchain.store.db import open_store
from meterchain.store.records import Records
from meterchain.store.retention import Retention

STEP_S = 900
ORDER_LEAD_S, GATE_S, READING_DELAY_S, SETTLE_S = 450, 150, 30, 300
EXPORT_LIMIT_W = 1500.0
DAYS_OFFLINE = 3
TICK = Envelope(performative=Performative.INFORM, sender=AGENT, receiver=AGENT,
                content_type="tick", content={})  # fmt: skip


class Phases:
    """Posts the board's phases in time order, as its ticker would, and watches the export."""

    def __init__(self, agent: ProsumerAgent, clock: ManualClock) -> None:
        self.agent, self.clock = agent, clock
        self.ordered: set[datetime] = set()
        self.worst_export_w = 0.0

    async def _at(self, moment: datetime, phase: str, start: datetime) -> None:
        if moment > self.clock.now():
            self.clock.set(moment)
        await self.agent.handle(TICK, Tick(interval_start=start, phase=phase))  # type: ignore[arg-type]

    async def interval(self, start: datetime) -> None:
        """Interval `start`: its orders (if not sent yet), the site through it, its reading,
        and the next interval's orders where they fall (before this one's reading)."""
        if start not in self.ordered:
            await self._at(start - timedelta(seconds=ORDER_LEAD_S), "order", start)
        following = start + timedelta(seconds=STEP_S)
        for second in range(60, STEP_S, 300):
            moment = start + timedelta(seconds=second)
            if following - timedelta(seconds=ORDER_LEAD_S) <= moment and following not in (
                self.ordered
            ):
                await self._at(following - timedelta(seconds=ORDER_LEAD_S), "order", following)
                self.ordered.add(following)
            self.clock.set(max(moment, self.clock.now()))
            reading = await self.agent.read_meter()
            self.worst_export_w = max(self.worst_export_w, -reading.power_w)
        await self._at(start + timedelta(seconds=STEP_S + READING_DELAY_S), "delivery", start)


async def test_three_days_offline_the_board_reads_stores_runs_safely_and_catches_up(
    tmp_path: Path,
) -> None:
    broker = start_mosquitto(agents=[AGENT], data_dir=tmp_path / "broker")
    listener = MarketListener(broker)
    first = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # local midnight in Fortaleza
    clock = ManualClock(first - timedelta(seconds=ORDER_LEAD_S + 1))
    store = open_store(f"sqlite:///{tmp_path / 'board.db'}", durable=True)
    records = Records(store, AGENT)
    async with contextlib.asynccontextmanager(serve_site)(clock, "tcp") as site:
        server = await start_simulator("modbus", site.meter)
        devices = open_board_devices(
            DevicesConfig(
                battery=site.url("battery"), battery_capacity_wh=10_000, battery_max_w=3_000,
                pv=site.url("pv"), export_limit_w=EXPORT_LIMIT_W,
            )
        )  # fmt: skip
        bus = broker.bus(AGENT, wait_for_broker=False, clock=clock, backoff_max_s=0.2)
        planner = DerPlanner(
            Site(name=METER_ID, battery=Battery(capacity_wh=10_000, max_charge_power_w=3_000,
                                                max_discharge_power_w=3_000)),
            BoardForecast(SiteConfig(pv_kwp=4.0), records, step_s=STEP_S),
            meter_id=METER_ID, horizon_steps=16, step_s=STEP_S,
        )  # fmt: skip
        agent = ProsumerAgent(
            AGENT, bus, meter_id=METER_ID, meter=open_meter(client_url("modbus", server.port)),
            signer=Account.create(), domain=MarketDomain(31337, MARKET_ADDRESS),
            planner=planner, records=records, clock=clock, devices=devices,
        )  # fmt: skip
        agent.order_expiry_s, agent.reading_expiry_s = STEP_S, STEP_S + SETTLE_S + 4 * STEP_S
        agent.monitor = None
        retention = Retention(store, AGENT, days=1)
        await agent.start()
        try:
            async with asyncio.timeout(10):
                while not bus.connected:
                    await asyncio.sleep(0.05)
            phases = Phases(agent, clock)
            # Two intervals online: the market hears the second's reading.
            for k in range(2):
                await phases.interval(first + timedelta(seconds=k * STEP_S))
            async with asyncio.timeout(10):
                while not listener.of_type("reading"):
                    await asyncio.sleep(0.05)
            last_heard = ReadingMessage(**{
                k: v for k, v in listener.of_type("reading")[-1].items()
                if k not in ("meter_id", "signature")
            }, meter_id=meter_id_to_bytes32(METER_ID))  # fmt: skip

            # The broker goes away for three days.
            broker.stop()
            offline_from = first + timedelta(seconds=2 * STEP_S)
            phases.worst_export_w = 0.0
            intervals = DAYS_OFFLINE * 86400 // STEP_S
            for k in range(intervals):
                await phases.interval(offline_from + timedelta(seconds=k * STEP_S))
                if k % 24 == 23:
                    retention.prune(clock.now())
                    records._cache.clear()
            assert not bus.connected
            # It kept reading and storing: a signed reading for every interval it kept.
            kept = {int(k) for k in records.all("delivery")}
            newest = int((offline_from + timedelta(seconds=(intervals - 1) * STEP_S)).timestamp())
            assert max(kept) == newest
            # Retention: one day of records, not three (96 intervals a day).
            assert 90 <= len(kept) <= 96 + 24, len(kept)
            # The devices ran on the safe local rule: never over the export limit.
            assert phases.worst_export_w <= EXPORT_LIMIT_W + 50, phases.worst_export_w

            # The broker returns: the board catches up with what is still of use.
            broker = broker.restart()
            # From here the spool may flush at any moment of the next interval's phases.
            restarted_at = clock.now()
            back = offline_from + timedelta(seconds=intervals * STEP_S)
            await phases.interval(back)
            async with asyncio.timeout(15):
                while not bus.connected or bus.pending:
                    await asyncio.sleep(0.05)

            def late_readings() -> list[dict[str, int]]:
                heard = listener.of_type("reading")
                return [r for r in heard if r["interval"] > last_heard.interval]

            async with asyncio.timeout(15):  # the listener reconnects too (its session waited)
                while not late_readings():
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            late = late_readings()
            # Only readings the market could still settle: none of the three days' old ones.
            # (A reading still due when the broker came back may go out as the clock runs on.)
            settle_by = restarted_at - timedelta(seconds=STEP_S + SETTLE_S + 4 * STEP_S)
            assert late and all(r["interval"] >= settle_by.timestamp() for r in late), late
            # Orders and readings that had had their time (all but the last hour's readings).
            assert bus.expired > 2 * intervals - 8

            # The next reading settles the three days as a gap, by the contract's rules.
            after = late[0]
            reading = ReadingMessage(meter_id=meter_id_to_bytes32(METER_ID), **{
                k: v for k, v in after.items() if k not in ("meter_id", "signature")})  # fmt: skip
            account = MeterAccountState(
                last_heard.interval, last_heard.end_import_wh, last_heard.end_export_wh
            )
            metered = measure_reading(reading, account, max_power_w=15_000, interval_s=STEP_S)
            assert isinstance(metered, Metered), metered
            assert metered.gap_import_wh + metered.import_wh == (
                reading.end_import_wh - last_heard.end_import_wh
            )
            assert metered.gap_export_wh + metered.export_wh == (
                reading.end_export_wh - last_heard.end_export_wh
            )
            assert metered.gap_export_wh > 10_000  # three days of PV beyond what the house used
        finally:
            await agent.stop()
            await bus.close(flush_s=0)
            await devices.close()
            await server.close()
            listener.close()
            broker.stop()
            store.close()
