"""The web interface on a month of a 1,000-household community in PostgreSQL.

1,000 households × 30 days of 15-minute intervals (2,880,000 rows of `meter_intervals`, plus
the market's 2,880 intervals and their trades) are written into a real PostgreSQL server
started in a temporary directory. Then, through the real server (uvicorn on loopback, logged
in like a browser):

- the operator's community page and a household's month chart (the JSON the chart draws)
  are timed; target p95 < 200 ms each;
- a live update: an interval settles (the monitor agent handles the market's delivery
  notice, as it does in production) while the community page is open in chromium; the time
  until the page has redrawn is measured; target < 2 s.

Writes bench/results/web.json.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx
import numpy as np
import psycopg
from rich.console import Console
from rich.progress import Progress

from bench.common import write_result
from meterchain.agents.bus_local import LocalBus
from meterchain.agents.messages import DeliveryNotice
from meterchain.agents.monitor import MonitorAgent
from meterchain.agents.runtime import Agent, Performative
from meterchain.clock import ManualClock
from meterchain.store.db import open_store
from meterchain.web.security import create_user
from meterchain.web.server import RunningWeb, start_web
from meterchain.web.settings import WebSettings
from postgres_server import PostgresServer, start_postgres

ROOT = Path(__file__).resolve().parent.parent
HOUSEHOLDS = 1000
DAYS = 30
STEP_S = 900
INTERVALS = DAYS * 86400 // STEP_S
START = datetime(2026, 10, 25, 3, tzinfo=UTC)
REQUESTS = 60
TARGET_P95_MS = 200.0
TARGET_LIVE_S = 2.0
LIVE_ROUNDS = 8
OPERATOR = ("operador", "operador-bench")
PROSUMER = ("casa-10000500", "casa-10000500-bench")
console = Console(highlight=False)


def meter_id(index: int) -> str:
    return f"{10_000_000 + index:08d}"


def populate(server: PostgresServer, url: str) -> dict[str, float]:
    """Write the month with COPY (the fastest way in); returns how long each part took."""
    timings: dict[str, float] = {}
    store = open_store(url)  # migrates
    with store.session() as session:
        create_user(session, *OPERATOR, role="operator")
        create_user(session, *PROSUMER, role="prosumer", meter_id="10000500")
    store.close()
    rng = np.random.default_rng(1)
    began = time.perf_counter()
    dsn = server.dsn(url.rsplit("/", 1)[1])
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY meters (meter_id, protocol, kind, revoked, pv_kwp, battery_kwh, "
            "nominal_voltage_v, board_status, last_seen_at, last_power_w, last_voltage_v, "
            "last_import_wh, last_export_wh, relay, last_settled_interval, balance_units, "
            "config_version) FROM STDIN"
        ) as copy:
            last = START + timedelta(seconds=STEP_S * (INTERVALS - 1))
            for i in range(HOUSEHOLDS):
                copy.write_row((
                    meter_id(i), ("modbus", "dlms", "iec62056-21", "nbr14522")[i % 4],
                    "prosumer", False, 4.0 if i % 2 else 0.0, 10.0 if i % 5 == 0 else 0.0,
                    220.0, "online", last, float(rng.normal(300, 400)), 221.0, 1e6, 2e5, "on",
                    int(last.timestamp()), 50_000, 0,
                ))  # fmt: skip
        times = [START + timedelta(seconds=STEP_S * n) for n in range(INTERVALS)]
        hours = np.array([((t.hour - 3) % 24) + t.minute / 60 for t in times])
        sun = np.clip(np.sin((hours - 6) / 12 * np.pi), 0, None)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("meter_intervals", total=HOUSEHOLDS)
            with cursor.copy(
                "COPY meter_intervals (meter_id, interval_start, import_wh, export_wh, "
                "imported_wh, exported_wh, bought_wh, sold_wh, power_w, voltage_v, "
                "soc_fraction, savings, balance_units) FROM STDIN"
            ) as copy:
                for i in range(HOUSEHOLDS):
                    load = np.clip(rng.normal(250, 80, INTERVALS), 20, None)
                    pv = sun * (1000 if i % 2 else 0) * rng.uniform(0.7, 1.0, INTERVALS)
                    net = load - pv
                    imported = np.clip(net, 0, None)
                    exported = np.clip(-net, 0, None)
                    imports = 1e6 + np.cumsum(imported)
                    exports = 2e5 + np.cumsum(exported)
                    voltage = 220 + 8 * np.sin(np.arange(INTERVALS) / 40 + i)
                    mid = meter_id(i)
                    for n in range(INTERVALS):
                        copy.write_row((
                            mid, times[n], float(imports[n]), float(exports[n]),
                            float(imported[n]), float(exported[n]), float(imported[n] * 0.4),
                            float(exported[n] * 0.5), float(net[n] * 4), float(voltage[n]),
                            None, float(imported[n] * 0.0003), 50_000 - n,
                        ))  # fmt: skip
                    progress.advance(task)
        with cursor.copy(
            "COPY market_intervals (interval, interval_start, price, retail_price, "
            "feed_in_price, orders, trades, traded_wh, imported_wh, exported_wh, savings, "
            "batch_tx, batch_gas, delivery_tx, delivery_gas, cleared_at, delivered_at) FROM STDIN"
        ) as copy:
            for n, moment in enumerate(times):
                copy.write_row((
                    int(moment.timestamp()), moment, 0.6, 0.95, 0.25, 1000, 20, 40_000.0,
                    250_000.0, 60_000.0, 14.0, "0x" + f"{n:064x}", 600_000, "0x" + f"{n:064x}",
                    400_000, moment, moment,
                ))  # fmt: skip
        with cursor.copy(
            "COPY trades (interval, buyer, seller, quantity_wh, price) FROM STDIN"
        ) as copy:
            for moment in times:
                for k in range(20):
                    copy.write_row(
                        (int(moment.timestamp()), meter_id(2 * k), meter_id(2 * k + 1), 2000, 0.6)
                    )
        connection.commit()
        timings["copy_s"] = time.perf_counter() - began
        began = time.perf_counter()
        cursor.execute("ANALYZE")
        timings["analyze_s"] = time.perf_counter() - began
        cursor.execute("SELECT count(*) FROM meter_intervals")
        row = cursor.fetchone()
        timings["meter_interval_rows"] = float(row[0]) if row else 0.0
    return timings


def login(base: str, user: tuple[str, str]) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/login", data={"username": user[0], "password": user[1], "csrf_token": token[1]}
    )
    assert response.status_code == 303, response.text
    return client


def timed(client: httpx.Client, path: str) -> dict[str, float]:
    for _ in range(5):  # warm up: connection pool, plans, Jinja
        assert client.get(path).status_code == 200
    samples = []
    size = 0
    for _ in range(REQUESTS):
        began = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.text[:300]
        size = len(response.content)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 1),
        "max_ms": round(samples[-1], 1),
        "bytes": size,
    }


class WebThread:
    """The web server and a monitor agent in their own event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running: RunningWeb | None = None
        self.monitor: MonitorAgent | None = None
        self.market: Agent | None = None
        self.ready = threading.Event()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self.main()), daemon=True)
        self.thread.start()
        self.ready.wait(60)

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self.running = await start_web(WebSettings(port=0, db_url=self.url))
        bus = LocalBus()
        clock = ManualClock(START + timedelta(days=DAYS))
        self.monitor = MonitorAgent("monitor", bus, store=self.running.services.store, clock=clock)
        self.market = Agent("market", bus)
        await self.monitor.start()
        await self.market.start()
        self.ready.set()
        await self.stop_event.wait()
        await self.monitor.stop()
        await self.running.stop()

    def settle(self, interval: int) -> float:
        """Send the market's delivery notice of `interval`; returns when it was sent."""
        assert self.loop is not None and self.market is not None
        notice = DeliveryNotice(interval=interval, tx_hash="0x" + "e" * 64, gas_used=400_000)
        sent = time.perf_counter()
        asyncio.run_coroutine_threadsafe(
            self.market.send("monitor", Performative.INFORM, notice), self.loop
        ).result(10)
        return sent

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


def live_update(web: WebThread, base: str) -> dict[str, Any]:
    """Seconds from a delivery notice to the open community page having redrawn, in chromium."""
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run"]  # fmt: skip
    samples = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(f"{base}/login")
        page.fill("#username", OPERATOR[0])
        page.fill("#password", OPERATOR[1])
        with page.expect_navigation():
            page.click("form[action='/login'] button[type=submit]")
        page.wait_for_selector("body[data-live-connected='1']", timeout=30_000)
        next_interval = int((START + timedelta(days=DAYS)).timestamp())
        for _ in range(LIVE_ROUNDS):
            before = page.locator("body").get_attribute("data-last-update") or ""
            sent = web.settle(next_interval)
            deadline = time.perf_counter() + 10
            while (page.locator("body").get_attribute("data-last-update") or "") == before:
                if time.perf_counter() > deadline:
                    raise AssertionError("the page did not update within 10 s")
                time.sleep(0.01)
            samples.append(time.perf_counter() - sent)
            assert page.locator("body").get_attribute("data-live-interval") == str(next_interval)
            next_interval += STEP_S
            time.sleep(0.5)
        browser.close()
    return {
        "rounds": len(samples),
        "median_s": round(statistics.median(samples), 3),
        "max_s": round(max(samples), 3),
        "target_s": TARGET_LIVE_S,
        "met": max(samples) < TARGET_LIVE_S,
    }


def main() -> int:
    server = start_postgres()
    try:
        url = server.create_database("bench_web")
        console.print(f"writing {HOUSEHOLDS} households × {DAYS} days into PostgreSQL …")
        loading = populate(server, url)
        console.print(f"  {loading['meter_interval_rows']:,.0f} rows in {loading['copy_s']:.0f} s")
        web = WebThread(url)
        try:
            assert web.running is not None
            base = web.running.url
            operator = login(base, OPERATOR)
            prosumer = login(base, PROSUMER)
            results: dict[str, Any] = {
                "households": HOUSEHOLDS,
                "days": DAYS,
                "loading": loading,
                "community_page": timed(operator, "/community"),
                "community_api": timed(operator, "/api/community"),
                "month_chart": timed(prosumer, "/api/meters/10000500/readings?span=month"),
                "meter_page": timed(prosumer, "/meters/10000500"),
                "live_update": live_update(web, base),
                "target_p95_ms": TARGET_P95_MS,
            }
        finally:
            web.stop()
    finally:
        server.stop()
    results["met"] = (
        results["community_page"]["p95_ms"] < TARGET_P95_MS
        and results["month_chart"]["p95_ms"] < TARGET_P95_MS
        and results["live_update"]["met"]
    )
    path = write_result("web", results)
    for name in ("community_page", "community_api", "month_chart", "meter_page"):
        r = results[name]
        size = f"{r['bytes']:,} bytes"
        console.print(f"{name:15} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  ({size})")
    live = results["live_update"]
    console.print(f"live update     median {live['median_s']:.3f} s, max {live['max_s']:.3f} s")
    console.print(f"targets {'met' if results['met'] else 'MISSED'}; {path}")
    return 0 if results["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
