"""The store: SQLite in WAL mode by default, and errors that say the disk is full or locked."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import LargeBinary, event, text
from sqlalchemy.orm import Mapped, mapped_column

from meterchain.store.db import Base, Store, StoreError, StoreFull, StoreLocked, open_store


class BlobRow(Base):
    """A table another area might add: proves Base is extensible by plain subclassing."""

    __tablename__ = "test_blobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


def _store_with_blobs(url: str, **kwargs: Any) -> Store:
    """A store with this module's test table (outside the migrations) created too."""
    store = open_store(url, **kwargs)
    store.create_all()
    return store


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}", busy_timeout_ms=1234)
    with store.session() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == 1234


def test_the_database_directory_is_created(tmp_path: Path) -> None:
    open_store(f"sqlite:///{tmp_path / 'var' / 'deep' / 'm.db'}").close()
    assert (tmp_path / "var" / "deep" / "m.db").exists()


def test_tables_of_other_areas_are_created_from_base(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    store.create_all()
    with store.session() as session:
        session.add(BlobRow(payload=b"x"))
    with store.session() as session:
        assert session.get(BlobRow, 1) is not None


def test_creating_tables_while_another_process_writes_waits_instead_of_failing(
    tmp_path: Path,
) -> None:
    # CI saw it: a harness opened the market's live database while the market wrote; its
    # create_all read the schema, the market committed, and the CREATE then failed at once
    # with "database is locked" (a deferred SQLite transaction cannot write on a stale
    # snapshot, whatever the busy timeout).
    url = f"sqlite:///{tmp_path / 'm.db'}"
    writer = open_store(url)
    with writer.session() as session:
        session.execute(text("CREATE TABLE market_side (n INTEGER)"))
    reader = open_store(url)

    committed: list[threading.Thread] = []

    def another_process_commits(*_args: Any, **_kwargs: Any) -> None:
        def insert() -> None:
            with writer.session() as session:
                session.execute(text("INSERT INTO market_side VALUES (1)"))

        thread = threading.Thread(target=insert)
        thread.start()
        thread.join(timeout=0.5)  # done at once unless create_all holds the write lock
        committed.append(thread)

    event.listen(BlobRow.__table__, "before_create", another_process_commits)
    try:
        reader.create_all()
    finally:
        event.remove(BlobRow.__table__, "before_create", another_process_commits)
    committed[0].join()
    with reader.session() as session:
        assert session.execute(text("SELECT count(*) FROM market_side")).scalar() == 1
        assert session.execute(text("SELECT count(*) FROM test_blobs")).scalar() == 0


def test_a_session_that_reads_then_writes_waits_for_another_process_s_commit(
    tmp_path: Path,
) -> None:
    # The web's forms read a row and then change it while the monitor writes: on SQLite a
    # deferred transaction failed with "database is locked" whenever the monitor committed
    # between the two.
    url = f"sqlite:///{tmp_path / 'm.db'}"
    web, monitor = _store_with_blobs(url), open_store(url)
    with web.session() as session:
        session.add(BlobRow(payload=b"old"))

    def monitor_writes() -> None:
        with monitor.session() as session:
            session.add(BlobRow(payload=b"alarm"))

    thread = threading.Thread(target=monitor_writes)
    with web.session() as session:
        row = session.get(BlobRow, 1)
        assert row is not None
        thread.start()
        thread.join(timeout=0.5)  # commits at once unless this session holds the write lock
        row.payload = b"new"
    thread.join()
    with web.session() as session:
        assert sorted(r.payload for r in session.query(BlobRow)) == [b"alarm", b"new"]


def test_a_failed_session_rolls_back(tmp_path: Path) -> None:
    store = _store_with_blobs(f"sqlite:///{tmp_path / 'm.db'}")
    with pytest.raises(RuntimeError), store.session() as session:
        session.add(BlobRow(payload=b"x"))
        session.flush()
        raise RuntimeError
    with store.session() as session:
        assert session.get(BlobRow, 1) is None


def test_a_full_database_says_it_is_full(tmp_path: Path) -> None:
    store = _store_with_blobs(f"sqlite:///{tmp_path / 'm.db'}")

    @event.listens_for(store.engine, "connect")
    def _tiny(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA max_page_count = 12")  # stands for a full disk

    store.engine.dispose()
    with pytest.raises(StoreFull, match=r"is full.*free disk space"), store.session() as session:
        for _ in range(20):
            session.add(BlobRow(payload=bytes(4096)))
            session.flush()


def test_a_locked_database_says_it_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = _store_with_blobs(f"sqlite:///{path}", busy_timeout_ms=50)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(StoreLocked, match="locked"), store.session() as session:
            session.add(BlobRow(payload=b"x"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_bad_url_is_reported() -> None:
    with pytest.raises(StoreError, match="bad database URL"):
        open_store("not a url")
