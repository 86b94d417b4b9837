"""Running the web interface: uvicorn in the event loop that also runs the monitor agent
(and, for the demo, the whole community), so a page's change reaches the bus directly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from meterchain.agents.monitor import MonitorAgent
from meterchain.agents.runtime import Bus
from meterchain.clock import WallClock
from meterchain.config import Scenario
from meterchain.store.db import Store, open_store
from meterchain.web.app import create_app
from meterchain.web.chain_actions import ChainActions
from meterchain.web.demo import DemoCommunity
from meterchain.web.services import WebServices
from meterchain.web.settings import WebSettings

log = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    scenario: Scenario
    work_dir: Path
    interval_wall_s: float = 3.0


@dataclass
class RunningWeb:
    """A serving web interface and what it runs beside."""

    url: str
    services: WebServices
    server: uvicorn.Server
    demo: DemoCommunity | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        self.server.should_exit = True
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.demo is not None:
            await self.demo.stop()
        elif self.services.monitor is not None:
            with contextlib.suppress(Exception):
                await self.services.monitor.stop()
        self.services.store.close()


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start_web(
    settings: WebSettings,
    *,
    demo: DemoOptions | None = None,
    bus: Bus | None = None,
    chain: ChainActions | None = None,
    webhook_url: str | None = None,
    store: Store | None = None,
) -> RunningWeb:
    """Open the database (migrating it), start the monitor or the demo, and serve."""
    store = store or open_store(settings.db_url)
    services = WebServices(store, settings, chain=chain)
    community: DemoCommunity | None = None
    try:
        if demo is not None:
            community = DemoCommunity(
                demo.scenario, store, demo.work_dir, demo.interval_wall_s, webhook_url
            )
            await community.start()
            services.monitor = community.monitor
            services.chain = community.chain
        elif bus is not None:
            reader = None if chain is None else chain.balances
            states = None if chain is None or not chain.has_prepaid else chain.prepaid_state_changes
            monitor = MonitorAgent(
                "monitor", bus, store=store, clock=WallClock(), interval_s=settings.interval_s,
                balances=reader, webhook_url=webhook_url, prepaid_states=states,
                decimals=2 if chain is None else chain.decimals,
            )  # fmt: skip
            await monitor.start()
            services.monitor = monitor
    except BaseException:
        if community is not None:
            await community.stop()
        store.close()
        raise
    app = create_app(services)
    sock = _socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    running = RunningWeb(f"http://{host}:{port}", services, server, community)
    running.tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="web"))
    if community is not None:
        running.tasks.append(asyncio.create_task(community.run(), name="demo"))
    while not server.started:
        await asyncio.sleep(0.02)
        for task in running.tasks:
            if task.done():
                await running.stop()
                task.result()
                raise RuntimeError("the web server stopped while starting")
    return running


async def serve_until(
    running: RunningWeb, stop: asyncio.Event, announce: Callable[[str], None]
) -> None:
    """Serve until `stop` is set (or the server ends)."""
    stopper = asyncio.create_task(stop.wait())
    web = running.tasks[0]
    try:
        await asyncio.wait({stopper, web}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        await running.stop()
        announce("web interface stopped")
