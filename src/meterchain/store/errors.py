"""Store errors, apart from db.py so the command line can name them without SQLAlchemy."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked; the message says why and what to do."""


class StoreFull(StoreError):
    """The disk (or the database's size limit) is full."""


class StoreConflict(StoreError):
    """A write broke a constraint (a duplicate unique key, a missing foreign row)."""


class StoreLocked(StoreError):
    """Another process held a write lock for longer than the busy timeout."""
