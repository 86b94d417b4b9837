"""The outbox: every signed transaction is recorded here before it is sent.

A crash between signing and sending (or between sending and seeing the receipt) then loses
nothing and doubles nothing: the sender finds the row by its key and re-sends the very same
signed bytes, which the chain accepts at most once (one nonce, one hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from meterchain.store.db import Base, Store, StoreConflict, StoreError


class OutboxStatus(StrEnum):
    PENDING = "pending"  # signed and recorded, maybe not sent yet
    SENT = "sent"  # the node accepted it; no receipt seen yet
    MINED = "mined"  # receipt with status 1
    FAILED = "failed"  # mined but reverted
    DROPPED = "dropped"  # its nonce was used by another transaction: it can never be mined


UNFINISHED = (OutboxStatus.PENDING, OutboxStatus.SENT)


class OutboxRow(Base):
    """One signed transaction, identified by the caller's idempotency key."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True, index=True)
    sender: Mapped[str] = mapped_column(String(42), index=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    nonce: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66), index=True)
    raw_tx: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


@dataclass(frozen=True)
class OutboxEntry:
    """A detached, immutable copy of one outbox row."""

    key: str
    sender: str
    chain_id: int
    nonce: int
    tx_hash: str
    raw_tx: bytes
    status: OutboxStatus
    created_at: datetime
    updated_at: datetime
    block_number: int | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


class DuplicateOutboxKey(StoreConflict):
    """A transaction is already recorded under this key."""


class Outbox:
    """Repository for the outbox table of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self, *, key: str, sender: str, chain_id: int, nonce: int, tx_hash: str, raw_tx: bytes
    ) -> OutboxEntry:
        """Record a freshly signed transaction (status pending); the key must be new."""
        now = _now()
        row = OutboxRow(
            key=key,
            sender=sender,
            chain_id=chain_id,
            nonce=nonce,
            tx_hash=tx_hash,
            raw_tx=raw_tx,
            status=OutboxStatus.PENDING.value,
            created_at=now,
            updated_at=now,
        )
        try:
            with self.store.session() as session:
                session.add(row)
                session.flush()
                return _entry(row)
        except StoreConflict:
            raise DuplicateOutboxKey(
                f"a transaction is already recorded in the outbox under key {key!r}"
            ) from None

    def get(self, key: str) -> OutboxEntry | None:
        with self.store.session() as session:
            row = session.scalars(select(OutboxRow).where(OutboxRow.key == key)).one_or_none()
            return None if row is None else _entry(row)

    def replace(self, key: str, *, nonce: int, tx_hash: str, raw_tx: bytes) -> OutboxEntry:
        """Swap in a re-signed transaction for a dropped one (its nonce was taken)."""
        return self._update(
            key,
            nonce=nonce,
            tx_hash=tx_hash,
            raw_tx=raw_tx,
            status=OutboxStatus.PENDING,
            block_number=None,
            error=None,
        )

    def mark_sent(self, key: str) -> OutboxEntry:
        return self._update(key, status=OutboxStatus.SENT)

    def mark_mined(self, key: str, block_number: int) -> OutboxEntry:
        return self._update(key, status=OutboxStatus.MINED, block_number=block_number)

    def mark_failed(self, key: str, block_number: int | None, error: str) -> OutboxEntry:
        return self._update(key, status=OutboxStatus.FAILED, block_number=block_number, error=error)

    def mark_dropped(self, key: str, error: str) -> OutboxEntry:
        return self._update(key, status=OutboxStatus.DROPPED, error=error)

    def unfinished(self, sender: str, chain_id: int) -> list[OutboxEntry]:
        """Pending and sent transactions of one account on one chain, by nonce."""
        with self.store.session() as session:
            rows = session.scalars(
                select(OutboxRow)
                .where(
                    OutboxRow.sender == sender,
                    OutboxRow.chain_id == chain_id,
                    OutboxRow.status.in_([s.value for s in UNFINISHED]),
                )
                .order_by(OutboxRow.nonce, OutboxRow.id)
            ).all()
            return [_entry(row) for row in rows]

    def _update(
        self,
        key: str,
        *,
        status: OutboxStatus,
        nonce: int | None = None,
        tx_hash: str | None = None,
        raw_tx: bytes | None = None,
        block_number: int | None = None,
        error: str | None = None,
    ) -> OutboxEntry:
        with self.store.session() as session:
            row = session.scalars(select(OutboxRow).where(OutboxRow.key == key)).one_or_none()
            if row is None:
                raise StoreError(f"no transaction in the outbox under key {key!r}")
            row.status = status.value
            row.updated_at = _now()
            if nonce is not None:
                row.nonce = nonce
            if tx_hash is not None:
                row.tx_hash = tx_hash
            if raw_tx is not None:
                row.raw_tx = raw_tx
            if status in (OutboxStatus.MINED, OutboxStatus.FAILED, OutboxStatus.PENDING):
                row.block_number = block_number
            if error is not None or status is OutboxStatus.PENDING:
                row.error = error
            session.flush()
            return _entry(row)


def _entry(row: OutboxRow) -> OutboxEntry:
    return OutboxEntry(
        key=row.key,
        sender=row.sender,
        chain_id=row.chain_id,
        nonce=row.nonce,
        tx_hash=row.tx_hash,
        raw_tx=bytes(row.raw_tx),
        status=OutboxStatus(row.status),
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        block_number=row.block_number,
        error=row.error,
    )


def _aware(moment: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)
