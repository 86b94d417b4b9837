"""What agents remember across restarts: readings taken, orders sent, intervals settled.

One table of JSON records keyed by (agent, kind, key). `put_once` is how an agent makes a step
idempotent: the first write wins, and a restarted agent finds what it already did.

An agent is the only writer of its own records, so each `Records` keeps a read-through cache:
a record is read from the database once, and a write is one short transaction.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from meterchain.store.db import Base, Store


class RecordRow(Base):
    __tablename__ = "agent_records"
    __table_args__ = (UniqueConstraint("agent", "kind", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


_INSERT = insert(RecordRow)  # built once; each write only binds its values


class Records:
    """One agent's records in a store."""

    def __init__(self, store: Store, agent: str) -> None:
        self.store = store
        self.agent = agent
        self._cache: dict[str, dict[str, dict[str, Any]]] = {}

    def all(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every record of `kind`, by key, oldest first."""
        cached = self._cache.get(kind)
        if cached is None:
            with self.store.session() as session:
                rows = session.execute(
                    select(RecordRow.key, RecordRow.payload)
                    .where(RecordRow.agent == self.agent, RecordRow.kind == kind)
                    .order_by(RecordRow.id)
                )
                cached = {key: dict(json.loads(payload)) for key, payload in rows}
            self._cache[kind] = cached
        return cached

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.all(kind).get(key)

    def put_once(self, kind: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Store `payload` unless a record exists; return the record that is kept."""
        records = self.all(kind)
        existing = records.get(key)
        if existing is not None:
            return existing
        self._write(kind, key, payload, replace=False)
        records[key] = payload
        return payload

    def put(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Store or replace a record."""
        records = self.all(kind)
        self._write(kind, key, payload, replace=key in records)
        records[key] = payload

    def _write(self, kind: str, key: str, payload: dict[str, Any], *, replace: bool) -> None:
        text = json.dumps(payload, default=str)
        with self.store.quick_write() as connection:
            if replace:
                connection.execute(
                    update(RecordRow)
                    .where(
                        RecordRow.agent == self.agent,
                        RecordRow.kind == kind,
                        RecordRow.key == key,
                    )
                    .values(payload=text)
                )
            else:
                connection.execute(
                    _INSERT,
                    {
                        "agent": self.agent,
                        "kind": kind,
                        "key": key,
                        "payload": text,
                        "created_at": datetime.now(UTC),
                    },
                )
