"""Agent records: idempotent steps that survive a restart."""

from __future__ import annotations

from meterchain.store.db import open_store
from meterchain.store.records import Records


def test_the_first_write_wins_and_a_restarted_agent_finds_it(store_url: str) -> None:
    url = store_url
    first = Records(open_store(url), "prosumer-1")
    assert first.put_once("orders", "100", {"n": 1}) == {"n": 1}
    assert first.put_once("orders", "100", {"n": 2}) == {"n": 1}

    first.store.close()
    restarted = Records(open_store(url), "prosumer-1")
    assert restarted.get("orders", "100") == {"n": 1}
    assert restarted.put_once("orders", "100", {"n": 3}) == {"n": 1}
    assert restarted.get("orders", "200") is None
    restarted.store.close()


def test_put_replaces_and_agents_do_not_see_each_other(store_url: str) -> None:
    store = open_store(store_url)
    market, board = Records(store, "market"), Records(store, "board")
    market.put("cleared", "1", {"price": 0.5})
    market.put("cleared", "1", {"price": 0.6})
    market.put("cleared", "2", {"price": 0.7})
    assert Records(store, "market").all("cleared") == {"1": {"price": 0.6}, "2": {"price": 0.7}}
    assert board.all("cleared") == {}
    store.close()
