"""A void interval (issue 14: "the web interface and the report show it"): the operator's
interval list marks it, its page and the API give the reason."""

from __future__ import annotations

from datetime import UTC, datetime

from web_fixtures import OPERATOR, START, WebApp

from meterchain.store.community import MarketIntervalRow

REASON = "its batch failed on chain: the node was down at gate closure"


def test_a_void_interval_shows_its_reason_on_the_pages_and_in_the_api(web: WebApp) -> None:
    interval = int(START.timestamp()) + 900 * 10
    with web.store.session() as session:
        session.add(
            MarketIntervalRow(
                interval=interval, interval_start=datetime.fromtimestamp(interval, UTC),
                retail_price=0.95, feed_in_price=0.25, orders=3, void_reason=REASON,
            )
        )  # fmt: skip
    operator = web.login(*OPERATOR)
    listing = operator.get("/intervals")
    assert listing.status_code == 200
    assert f'title="{REASON}"' in listing.text
    assert "void: orders cancelled, settled with the grid" in listing.text
    page = operator.get(f"/intervals/{interval}")
    assert page.status_code == 200 and REASON in page.text
    api = operator.get(f"/api/intervals/{interval}")
    assert api.status_code == 200 and api.json()["void_reason"] == REASON
