"""The outbox repository: one row per key, statuses that move forward, unfinished by nonce."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meterchain.store.db import open_store
from meterchain.store.outbox import DuplicateOutboxKey, Outbox, OutboxStatus

SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


@pytest.fixture
def outbox(store_url: str) -> Iterator[Outbox]:
    store = open_store(store_url)
    yield Outbox(store)
    store.close()


def record(outbox: Outbox, key: str, nonce: int) -> None:
    outbox.record(
        key=key, sender=SENDER, chain_id=31337, nonce=nonce,
        tx_hash=f"0x{nonce:064x}", raw_tx=bytes([nonce]) * 10,
    )  # fmt: skip


def test_a_recorded_transaction_is_found_by_its_key(outbox: Outbox) -> None:
    record(outbox, "settle-1", 4)
    entry = outbox.get("settle-1")
    assert entry is not None
    assert (entry.nonce, entry.raw_tx, entry.status) == (4, bytes([4]) * 10, OutboxStatus.PENDING)
    assert entry.created_at.tzinfo is not None
    assert outbox.get("other") is None


def test_a_key_is_recorded_once(outbox: Outbox) -> None:
    record(outbox, "settle-1", 4)
    with pytest.raises(DuplicateOutboxKey, match="settle-1"):
        record(outbox, "settle-1", 5)


def test_mined_and_failed_transactions_are_finished(outbox: Outbox) -> None:
    record(outbox, "a", 1)
    record(outbox, "b", 2)
    assert outbox.mark_sent("a").status is OutboxStatus.SENT
    mined = outbox.mark_mined("a", block_number=10)
    failed = outbox.mark_failed("b", block_number=11, error="reverted")
    assert mined.finished and mined.block_number == 10
    assert failed.finished and failed.error == "reverted"


def test_unfinished_transactions_come_in_nonce_order(outbox: Outbox) -> None:
    for key, nonce in (("c", 7), ("a", 5), ("b", 6)):
        record(outbox, key, nonce)
    outbox.mark_mined("b", block_number=3)
    assert [e.key for e in outbox.unfinished(SENDER, 31337)] == ["a", "c"]
    assert outbox.unfinished(SENDER, 1) == []


def test_a_dropped_transaction_can_be_replaced_under_its_key(outbox: Outbox) -> None:
    record(outbox, "a", 5)
    outbox.mark_dropped("a", "nonce 5 taken")
    replaced = outbox.replace("a", nonce=6, tx_hash="0x" + "ab" * 32, raw_tx=b"new")
    assert (replaced.nonce, replaced.raw_tx, replaced.status) == (6, b"new", OutboxStatus.PENDING)
    assert replaced.error is None


def test_the_outbox_survives_reopening_the_store(store_url: str) -> None:
    first = open_store(store_url)
    record(Outbox(first), "a", 1)
    first.close()
    again = open_store(store_url)
    entry = Outbox(again).get("a")
    again.close()
    assert entry is not None and entry.nonce == 1
