"""What agents remember across restarts: readings taken, orders sent, intervals settled.

One table of JSON records keyed by (agent, kind, key). `put_once` is how an agent makes a step
idempotent: the first write wins, and a restarted agent finds what it already did.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, select
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


class Records:
    """One agent's records in a store."""

    def __init__(self, store: Store, agent: str) -> None:
        self.store = store
        self.agent = agent
        store.create_all()

    def put_once(self, kind: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Store `payload` unless a record exists; return the record that is kept."""
        with self.store.session() as session:
            row = session.scalar(self._query(kind, key))
            if row is not None:
                existing: dict[str, Any] = json.loads(row.payload)
                return existing
            session.add(
                RecordRow(
                    agent=self.agent,
                    kind=kind,
                    key=key,
                    payload=json.dumps(payload, default=str),
                    created_at=datetime.now(UTC),
                )
            )
        return payload

    def put(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Store or replace a record."""
        with self.store.session() as session:
            row = session.scalar(self._query(kind, key))
            text = json.dumps(payload, default=str)
            if row is None:
                session.add(
                    RecordRow(
                        agent=self.agent,
                        kind=kind,
                        key=key,
                        payload=text,
                        created_at=datetime.now(UTC),
                    )
                )
            else:
                row.payload = text

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        with self.store.session() as session:
            row = session.scalar(self._query(kind, key))
            return None if row is None else dict(json.loads(row.payload))

    def all(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every record of `kind`, by key, oldest first."""
        with self.store.session() as session:
            rows = session.scalars(
                select(RecordRow)
                .where(RecordRow.agent == self.agent, RecordRow.kind == kind)
                .order_by(RecordRow.id)
            )
            return {row.key: dict(json.loads(row.payload)) for row in rows}

    def _query(self, kind: str, key: str) -> Any:
        return select(RecordRow).where(
            RecordRow.agent == self.agent, RecordRow.kind == kind, RecordRow.key == key
        )
