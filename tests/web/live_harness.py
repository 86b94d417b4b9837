"""The live demo for the browser tests: a community (anvil, meter simulators on loopback,
agents) and the web interface on PostgreSQL, in a thread with its own event loop, so a test
can drive the browser and reach into the community (stop a meter) at the same time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from meterchain.config import FundConfig, Household, Scenario
from meterchain.store.db import Store, open_store
from meterchain.web.demo import DemoCommunity
from meterchain.web.server import DemoOptions, RunningWeb, start_web
from meterchain.web.settings import WebSettings

T = TypeVar("T")

PV_BATTERY, HOUSE, PV_ONLY = "40000001", "40000002", "40000003"
PREPAID, PLANT = "40000004", "40000005"  # a prepaid household; the community's PV plant
SCENARIO = Scenario(
    name="browser test street",
    start=datetime.fromisoformat("2026-11-24T12:00:00+00:00"),  # 09:00 in Fortaleza
    days=3,
    seed=11,
    cloudiness=0.1,
    households=[
        Household(meter_id=PV_BATTERY, protocol="modbus", daily_kwh=9, pv_kwp=5,
                  battery_kwh=10, battery_kw=3),
        Household(meter_id=HOUSE, protocol="dlms", daily_kwh=9),
        Household(meter_id=PV_ONLY, protocol="iec62056-21", daily_kwh=5, pv_kwp=4),
        Household(meter_id=PREPAID, protocol="nbr14522", daily_kwh=6, prepaid=True,
                  starting_credit=20),
        Household(meter_id=PLANT, protocol="modbus", daily_kwh=1, pv_kwp=10),
    ],
    fund=FundConfig(plant_meter_id=PLANT, price_per_share=10, backers={PV_BATTERY: 2, HOUSE: 3},
                    cap_shares=7),  # two shares left to buy: then the campaign closes
)  # fmt: skip
INTERVAL_WALL_S = 1.0


class LiveWeb:
    """Starts the demo and the web server in a background thread; `call` runs a coroutine
    there and returns its result."""

    def __init__(self, db_url: str, work_dir: Path) -> None:
        self.db_url = db_url
        self.work_dir = work_dir
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running: RunningWeb | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="live-web", daemon=True)

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    @property
    def demo(self) -> DemoCommunity:
        assert self.running is not None and self.running.demo is not None
        return self.running.demo

    def start(self, timeout_s: float = 120.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the live demo did not start in time")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            settings = WebSettings(host="127.0.0.1", port=0, db_url=self.db_url)
            demo = DemoOptions(SCENARIO, self.work_dir, INTERVAL_WALL_S)
            self.running = await start_web(settings, demo=demo)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.running.stop()

    def call(self, make: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
        assert self.loop is not None

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout_s)

    def read(self, get: Callable[[], T], timeout_s: float = 30.0) -> T:
        """Run a plain function in the loop's thread (a consistent view of the agents)."""

        async def run() -> T:
            return get()

        return self.call(run, timeout_s)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def orders_of(live: LiveWeb, meter_id: str) -> dict[int, dict[str, Any]]:
    """A board's prepared orders and battery set-points, by interval."""
    agent = live.demo.prosumer(meter_id)
    kept = live.read(lambda: dict(agent.records.all("orders")))
    return {int(k): v for k, v in kept.items()}


class SteppedDemo:
    """The demo community without its web server, stepped `intervals` times and then left
    idle (agents running, no more intervals): a chain with certificates, a fund and a prepaid
    meter for the HTTP-level tests, in a thread with its own event loop."""

    def __init__(self, db_url: str, work_dir: Path, intervals: int = 4) -> None:
        self.db_url = db_url
        self.work_dir = work_dir
        self.intervals = intervals
        self.loop: asyncio.AbstractEventLoop | None = None
        self.demo: DemoCommunity | None = None
        self.store: Store | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="stepped-demo", daemon=True)

    def start(self, timeout_s: float = 180.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the stepped demo did not start in time")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.store = open_store(self.db_url)
            self.demo = DemoCommunity(SCENARIO, self.store, self.work_dir, INTERVAL_WALL_S)
            await self.demo.start()
            for _ in range(self.intervals):
                await self.demo.step()
            certifier = self.demo.certifier
            assert certifier is not None
            async with asyncio.timeout(60):
                while len(certifier.issued) + len(certifier.refused) < self.intervals:
                    await asyncio.sleep(0.05)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            if self.demo is not None:
                await self.demo.stop()
            return
        self._ready.set()
        await self._stop.wait()
        await self.demo.stop()
        self.store.close()

    def call(self, make: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
        assert self.loop is not None

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout_s)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
