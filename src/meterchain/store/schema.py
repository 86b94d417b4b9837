"""Every table the migrations manage, registered on one metadata (for Alembic's comparisons)."""

from __future__ import annotations

from sqlalchemy import MetaData

from meterchain.store.db import Base

HEAD_REVISION = "0004"


def metadata() -> MetaData:
    """Base's metadata with every store module's tables imported onto it."""
    from meterchain.store import accounts, bus_spool, community, outbox, records  # noqa: F401

    return Base.metadata
