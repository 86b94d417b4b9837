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
