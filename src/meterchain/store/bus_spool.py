"""What a process's bus has not finished with, kept across restarts.

Two queues per owner (the agent a process runs):
- outgoing: messages the agent sent that the broker has not acknowledged yet. A send only
  writes here and returns, so an agent never waits for the broker; the bus publishes the
  queue in order whenever it is connected and deletes each message once the broker has it.
- incoming: messages taken from the broker that the agent has not handled yet. The bus writes
  a message here before it acknowledges it to the broker and deletes it once the agent has
  handled it, so a process killed in between finds it again when it restarts.

`MemorySpool` is the same without a database, for a process that keeps no store (the grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, Text, delete, func, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from meterchain.store.db import Base, Store


class OutgoingRow(Base):
    __tablename__ = "bus_outgoing"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    topic: Mapped[str] = mapped_column(String(300))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IncomingRow(Base):
    __tablename__ = "bus_incoming"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    receiver: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Spooled:
    """One kept message: its row id, where it goes (topic or receiver) and its JSON."""

    id: int
    address: str
    payload: str


_INSERT_OUT = insert(OutgoingRow)
_INSERT_IN = insert(IncomingRow)


class MessageSpool:
    """One owner's outgoing and incoming messages in a store (SQLite or PostgreSQL)."""

    def __init__(self, store: Store, owner: str) -> None:
        self.store = store
        self.owner = owner

    # ---- outgoing ------------------------------------------------------------------------------

    def push(self, topic: str, payload: str) -> int:
        """Queue a message for `topic`; returns its id (ids grow in sending order)."""
        with self.store.quick_write() as connection:
            result = connection.execute(
                _INSERT_OUT,
                {"owner": self.owner, "topic": topic, "payload": payload, "created_at": _now()},
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def peek(self, limit: int = 100) -> list[Spooled]:
        """The oldest queued messages, in sending order."""
        with self.store.session() as session:
            rows = session.execute(
                select(OutgoingRow.id, OutgoingRow.topic, OutgoingRow.payload)
                .where(OutgoingRow.owner == self.owner)
                .order_by(OutgoingRow.id)
                .limit(limit)
            )
            return [Spooled(int(i), topic, payload) for i, topic, payload in rows]

    def sent(self, message_id: int) -> None:
        """The broker has the message: forget it."""
        with self.store.quick_write() as connection:
            connection.execute(delete(OutgoingRow).where(OutgoingRow.id == message_id))

    def pending_count(self) -> int:
        with self.store.session() as session:
            count = session.scalar(
                select(func.count()).select_from(OutgoingRow).where(OutgoingRow.owner == self.owner)
            )
            return int(count or 0)

    # ---- incoming ------------------------------------------------------------------------------

    def keep(self, receiver: str, payload: str) -> int:
        """Write down a message taken from the broker, before it is acknowledged."""
        with self.store.quick_write() as connection:
            result = connection.execute(
                _INSERT_IN,
                {
                    "owner": self.owner,
                    "receiver": receiver,
                    "payload": payload,
                    "created_at": _now(),
                },
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def handled(self, message_ids: list[int]) -> None:
        """The agent has handled these messages: forget them."""
        if not message_ids:
            return
        with self.store.quick_write() as connection:
            connection.execute(delete(IncomingRow).where(IncomingRow.id.in_(message_ids)))

    def unhandled(self, receiver: str) -> list[Spooled]:
        """Messages for `receiver` that were taken but not handled, oldest first."""
        with self.store.session() as session:
            rows = session.execute(
                select(IncomingRow.id, IncomingRow.receiver, IncomingRow.payload)
                .where(IncomingRow.owner == self.owner, IncomingRow.receiver == receiver)
                .order_by(IncomingRow.id)
            )
            return [Spooled(int(i), to, payload) for i, to, payload in rows]

    def unhandled_count(self) -> int:
        with self.store.session() as session:
            count = session.scalar(
                select(func.count()).select_from(IncomingRow).where(IncomingRow.owner == self.owner)
            )
            return int(count or 0)


@dataclass
class MemorySpool:
    """The same queues in memory: they do not outlive the process."""

    owner: str = "memory"
    _outgoing: dict[int, tuple[str, str]] = field(default_factory=dict)
    _incoming: dict[int, tuple[str, str]] = field(default_factory=dict)
    _next_id: int = 1

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def push(self, topic: str, payload: str) -> int:
        message_id = self._id()
        self._outgoing[message_id] = (topic, payload)
        return message_id

    def peek(self, limit: int = 100) -> list[Spooled]:
        ids = sorted(self._outgoing)[:limit]
        return [Spooled(i, *self._outgoing[i]) for i in ids]

    def sent(self, message_id: int) -> None:
        self._outgoing.pop(message_id, None)

    def pending_count(self) -> int:
        return len(self._outgoing)

    def keep(self, receiver: str, payload: str) -> int:
        message_id = self._id()
        self._incoming[message_id] = (receiver, payload)
        return message_id

    def handled(self, message_ids: list[int]) -> None:
        for message_id in message_ids:
            self._incoming.pop(message_id, None)

    def unhandled(self, receiver: str) -> list[Spooled]:
        return [
            Spooled(i, to, payload)
            for i, (to, payload) in sorted(self._incoming.items())
            if to == receiver
        ]

    def unhandled_count(self) -> int:
        return len(self._incoming)


Spool = MessageSpool | MemorySpool


def _now() -> datetime:
    return datetime.now(UTC)
