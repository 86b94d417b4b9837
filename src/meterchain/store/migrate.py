"""Bring a database to the newest schema with Alembic, keeping its rows.

`open_store` calls `upgrade` for every database it opens; a database already at the newest
revision costs one small query. A database written before migrations existed (tables, no
`alembic_version`) is upgraded from the baseline, which creates only the tables it lacks.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, text

from meterchain.store.db import IMMEDIATE
from meterchain.store.schema import HEAD_REVISION

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as connection:
        if "alembic_version" not in inspect(connection).get_table_names():
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the migrations up to `revision` (default the newest) in one transaction."""
    if revision == "head" and current_revision(engine) == HEAD_REVISION:
        return
    config = alembic_config()
    # Two processes starting on one new SQLite file: the second waits, then finds it done.
    with engine.execution_options(sqlite_begin=IMMEDIATE).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
