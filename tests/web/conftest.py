"""Web test fixtures: a seeded app for HTTP-level tests; the live demo (PostgreSQL, anvil,
meters, agents, uvicorn) and a real chromium for the browser tests, started once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web_fixtures import WebApp, make_web_app


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebApp]:
    app = make_web_app(f"sqlite:///{tmp_path / 'web.db'}")
    yield app
    app.store.close()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def live(postgres_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The demo community and the web interface on PostgreSQL, once for the browser tests
    (module scope: it stops stepping intervals when they are done)."""
    from live_harness import LiveWeb

    url = postgres_server.create_database()  # type: ignore[attr-defined]
    harness = LiveWeb(url, tmp_path_factory.mktemp("live-demo"))
    harness.start()
    yield harness
    harness.stop()
    postgres_server.drop_database(url)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's chromium, driven by Playwright (no browser download). Module scope: the sync
    API keeps an event loop running in this thread, which asyncio tests after it need free."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def ledger_web(
    postgres_server: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    """The demo street on a real chain, stepped four intervals of a sunny morning and left
    idle: certificates issued and retired at issuance, the plant's fund, a prepaid meter, and
    the web app on it (households' wallets are the demo's). Shared by the ledger and prepaid
    HTTP tests, which leave one another's changes alone. On PostgreSQL, like the operator's
    server: the monitor's writes and the requests' run side by side."""
    from live_harness import SteppedDemo
    from web_fixtures import ChainWebApp

    url = postgres_server.create_database()  # type: ignore[attr-defined]
    stepped = SteppedDemo(url, tmp_path_factory.mktemp("ledger-web"))
    stepped.start()
    assert stepped.store is not None and stepped.demo is not None
    yield ChainWebApp.on(stepped)
    stepped.stop()
    postgres_server.drop_database(url)  # type: ignore[attr-defined]
