"""Alembic migrations: a database written before them keeps its rows; the migrated schema is
exactly what the models say; on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    inspect,
    select,
)

from meterchain.store.db import open_store
from meterchain.store.migrate import current_revision
from meterchain.store.outbox import Outbox, OutboxStatus
from meterchain.store.records import Records
from meterchain.store.schema import HEAD_REVISION, metadata

# The schema `create_all` wrote before the migrations existed (commit eacad35), frozen here.
LEGACY = MetaData()
Table(
    "outbox", LEGACY,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(200), unique=True, index=True, nullable=False),
    Column("sender", String(42), index=True, nullable=False),
    Column("chain_id", BigInteger, nullable=False),
    Column("nonce", BigInteger, nullable=False),
    Column("tx_hash", String(66), index=True, nullable=False),
    Column("raw_tx", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("block_number", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
)  # fmt: skip
Table(
    "agent_records", LEGACY,
    Column("id", Integer, primary_key=True),
    Column("agent", String(100), index=True, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("key", String(200), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("agent", "kind", "key"),
)  # fmt: skip

SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def _write_legacy(url: str) -> None:
    engine = create_engine(url)
    LEGACY.create_all(engine)
    now = datetime(2026, 11, 24, 15, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            LEGACY.tables["outbox"].insert(),
            [
                {
                    "key": f"batch:{n}", "sender": SENDER, "chain_id": 31337, "nonce": n,
                    "tx_hash": f"0x{n:064x}", "raw_tx": bytes([n]) * 8, "status": "mined",
                    "created_at": now, "updated_at": now, "block_number": 100 + n, "error": None,
                }
                for n in range(3)
            ],
        )  # fmt: skip
        connection.execute(
            LEGACY.tables["agent_records"].insert(),
            {
                "agent": "market", "kind": "cleared", "key": "1764000000",
                "payload": '{"price": 0.61}', "created_at": now,
            },
        )  # fmt: skip
    engine.dispose()


def test_a_database_from_before_the_migrations_is_upgraded_with_its_rows(store_url: str) -> None:
    _write_legacy(store_url)
    store = open_store(store_url)
    try:
        assert current_revision(store.engine) == HEAD_REVISION
        entry = Outbox(store).get("batch:2")
        assert entry is not None
        assert (entry.nonce, entry.status, entry.block_number) == (2, OutboxStatus.MINED, 102)
        assert entry.raw_tx == bytes([2]) * 8
        assert Records(store, "market").get("cleared", "1764000000") == {"price": 0.61}
        tables = set(inspect(store.engine).get_table_names())
        assert {"users", "meters", "meter_intervals", "alarms", "board_configs"} <= tables
        # and the old tables still take new rows
        Outbox(store).record(
            key="batch:9", sender=SENDER, chain_id=31337, nonce=9, tx_hash="0x" + "9" * 64,
            raw_tx=b"\x09",
        )  # fmt: skip
        assert Outbox(store).get("batch:9") is not None
    finally:
        store.close()


def test_a_partly_created_old_database_gets_its_missing_tables(store_url: str) -> None:
    engine = create_engine(store_url)
    LEGACY.tables["outbox"].create(engine)  # a board's store that never had agent records
    engine.dispose()
    store = open_store(store_url)
    try:
        Records(store, "board").put("orders", "1", {"n": 1})
        assert Records(store, "board").get("orders", "1") == {"n": 1}
    finally:
        store.close()


def test_the_migrated_schema_is_what_the_models_describe(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.engine.connect() as connection:
            context = MigrationContext.configure(connection)
            differences = compare_metadata(context, metadata())
        # tables other test modules define on Base, outside the migrations, do not count
        differences = [
            d for d in differences if not (d[0] == "add_table" and d[1].name.startswith("test_"))
        ]
        assert differences == []
    finally:
        store.close()


def test_opening_a_migrated_database_again_changes_nothing(store_url: str) -> None:
    store = open_store(store_url)
    with store.session() as session:
        session.execute(select(1))
    store.close()
    again = open_store(store_url)
    try:
        assert current_revision(again.engine) == HEAD_REVISION
    finally:
        again.close()
