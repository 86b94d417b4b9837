"""A web app on a seeded database, without bus or chain, for the tests that need no browser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from meterchain.agents.monitor import new_meter
from meterchain.store.accounts import AuditRow
from meterchain.store.community import AlarmRow, MarketIntervalRow, MeterIntervalRow, TradeRow
from meterchain.store.db import Store, open_store
from meterchain.web.app import create_app
from meterchain.web.chain_actions import ChainActions
from meterchain.web.security import create_user
from meterchain.web.services import WebServices
from meterchain.web.settings import WebSettings

OPERATOR = ("operator", "operator-password")
ALICE = ("alice", "alice-password", "40000001")
BOB = ("bob", "bob-password", "40000002")
START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def seed(store: Store) -> None:
    """Two households, a few settled intervals with a trade between them, an alarm each."""
    with store.session() as session:
        create_user(session, *OPERATOR, role="operator", language="en")
        for username, password, meter_id in (ALICE, BOB):
            create_user(session, username, password, role="prosumer", meter_id=meter_id)
            session.add(
                new_meter(meter_id, protocol="modbus", board_status="online", balance_units=50000)
            )
            session.add(
                AlarmRow(
                    kind="voltage", severity="warning", meter_id=meter_id,
                    message=f"secret alarm of {meter_id}", started_at=START,
                )
            )  # fmt: skip
        for n in range(4):
            interval = int(START.timestamp()) + 900 * n
            session.add(
                MarketIntervalRow(
                    interval=interval, interval_start=datetime.fromtimestamp(interval, UTC),
                    price=0.5, retail_price=0.95, feed_in_price=0.25, orders=2, trades=1,
                    traded_wh=300.0, imported_wh=400.0, exported_wh=350.0, savings=0.21,
                    batch_tx="0x" + "ab" * 32, batch_gas=50000, delivery_tx="0x" + "cd" * 32,
                    delivery_gas=40000, delivered_at=START,
                )
            )  # fmt: skip
            session.add(TradeRow(interval=interval, buyer="40000002", seller="40000001",
                                 quantity_wh=300, price=0.5))  # fmt: skip
            for meter_id in ("40000001", "40000002"):
                session.add(
                    MeterIntervalRow(
                        meter_id=meter_id, interval_start=datetime.fromtimestamp(interval, UTC),
                        import_wh=1000.0 + n * 100, export_wh=500.0 + n * 80, imported_wh=100.0,
                        exported_wh=80.0, bought_wh=300.0 if meter_id == "40000002" else 0.0,
                        sold_wh=300.0 if meter_id == "40000001" else 0.0, power_w=400.0,
                        voltage_v=221.0, soc_fraction=0.5, savings=0.1, balance_units=50000 - n,
                    )
                )  # fmt: skip


@dataclass
class WebApp:
    store: Store
    services: WebServices
    client: TestClient
    app: FastAPI

    def login(self, username: str, password: str) -> TestClient:
        """A client logged in as `username` (cookies kept)."""
        client = TestClient(self.app, follow_redirects=False)
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        response = client.post(
            "/login", data={"username": username, "password": password, "csrf_token": token[1]}
        )
        assert response.status_code == 303, response.text
        return client


def csrf_of(client: TestClient, path: str = "/account") -> str:
    """The session's CSRF token, read from a page's form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found[1]


def make_web_app(url: str) -> WebApp:
    store = open_store(url)
    seed(store)
    services = WebServices(store, WebSettings())
    app = create_app(services)
    return WebApp(store, services, TestClient(app, follow_redirects=False), app)


@dataclass
class ChainWebApp(WebApp):
    """The web app on the stepped demo's chain and database (see conftest.ledger_web)."""

    stepped: Any = None

    @classmethod
    def on(cls, stepped: Any) -> ChainWebApp:
        demo = stepped.demo
        services = WebServices(stepped.store, WebSettings(), chain=demo.chain)
        app = create_app(services)
        return cls(stepped.store, services, TestClient(app, follow_redirects=False), app, stepped)

    @property
    def chain(self) -> ChainActions:
        chain = self.services.chain
        assert chain is not None
        return chain


def audit_entries(app: WebApp, action: str) -> list[AuditRow]:
    """The audit log's entries of `action`, oldest first."""
    with app.store.session() as session:
        return list(session.query(AuditRow).filter_by(action=action).order_by(AuditRow.id))
