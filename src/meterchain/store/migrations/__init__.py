"""Alembic migrations of the meterchain store (run by `meterchain.store.migrate`)."""
