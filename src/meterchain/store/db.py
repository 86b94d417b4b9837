"""Engine, sessions and the declarative base every table of meterchain extends.

SQLite (WAL journal, a busy timeout) by default; any SQLAlchemy URL (PostgreSQL) otherwise.
Errors a person can act on — a full disk, a locked database — come out as StoreError
subclasses that say so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from meterchain.store.errors import StoreConflict, StoreError, StoreFull, StoreLocked

DEFAULT_URL = "sqlite:///var/meterchain.db"
# Writers wait this long for each other: long enough for a slow SD card, or a loaded machine
# where several agents of one process (market, certificates, prepaid) write their outboxes.
DEFAULT_BUSY_TIMEOUT_MS = 30_000
# A transaction that will write after reading takes SQLite's write lock at its start.
IMMEDIATE = "BEGIN IMMEDIATE"

__all__ = [
    "Base",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoreFull",
    "StoreLocked",
    "open_store",
    "translate_errors",
]


class Base(DeclarativeBase):
    """Declarative base: every model of every area derives from it (readings, orders, outbox…)."""


@dataclass
class Store:
    """An engine and its session factory for one database URL."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    _writer: Connection | None = field(default=None, init=False, repr=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error.

        On SQLite it holds the write lock from its start (`BEGIN IMMEDIATE`), so reading and
        then writing never fails on another process's commit in between. Database errors are
        translated into StoreError subclasses that name the database.
        """
        with translate_errors(self.url), self.sessions() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (see `meterchain.store.migrate`)."""
        from meterchain.store.migrate import upgrade

        with translate_errors(self.url):
            upgrade(self.engine)

    def create_all(self) -> None:
        """Create every table registered on Base that does not exist yet.

        The store's own tables come from the migrations (`migrate`); this is for tables a
        test or a plug-in defines on Base outside them.
        """
        # It reads the schema, then creates what is missing: take SQLite's write lock first.
        immediate = self.engine.execution_options(sqlite_begin=IMMEDIATE)
        with translate_errors(self.url), immediate.begin() as connection:
            Base.metadata.create_all(connection)

    @contextlib.contextmanager
    def quick_write(self) -> Iterator[Connection]:
        """One kept connection for small, frequent writes (an agent's records): a transaction
        on it costs a fifth of an ORM session's. Commits on success, rolls back on error."""
        with translate_errors(self.url):
            if self._writer is None or self._writer.closed:
                self._writer = self.engine.connect()
            try:
                yield self._writer
                self._writer.commit()
            except BaseException:
                self._writer.rollback()
                raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.engine.dispose()


def open_store(
    url: str = DEFAULT_URL,
    *,
    create: bool = True,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    echo: bool = False,
    durable: bool = False,
) -> Store:
    """Open (and by default create or upgrade, with the Alembic migrations) the database.

    For SQLite files the parent directory is created, the journal is switched to WAL (readers
    never block the writer) and a busy timeout makes writers wait for each other instead of
    failing at once. `durable` makes every commit reach the disk before it returns
    (`synchronous = FULL`): a board records what it signed before sending it, and a power cut
    must not undo that record, or the board could sign a second, different reading.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StoreError(f"bad database URL {url!r}: {exc}") from None
    engine_kwargs: dict[str, Any] = {"echo": echo}
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the directory for the database {database}: {exc}"
                ) from None
        engine_kwargs["connect_args"] = {
            "timeout": busy_timeout_ms / 1000,
            "check_same_thread": False,
        }
    try:
        engine = create_engine(url, **engine_kwargs)
    except Exception as exc:  # a missing driver, a malformed URL
        raise StoreError(f"cannot open the database {url}: {exc}") from None
    if is_sqlite:
        _configure_sqlite(engine, busy_timeout_ms, "FULL" if durable else "NORMAL")
    # A session often reads and then writes (get a row, change it). On SQLite a deferred
    # transaction that does so fails at once if another process committed in between, busy
    # timeout or not; so a session takes the write lock when it begins (sessions are short:
    # the wait is milliseconds, and WAL still lets plain connections read meanwhile).
    bind = engine.execution_options(sqlite_begin=IMMEDIATE) if is_sqlite else engine
    store = Store(url=url, engine=engine, sessions=sessionmaker(bind, expire_on_commit=False))
    if create:
        try:
            store.migrate()
        except BaseException:
            engine.dispose()
            raise
    return store


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Python's sqlite3 driver opens transactions lazily on its own; hand that to
        # SQLAlchemy (the "begin" hook below) so a session's transaction is a real one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn a driver's full-disk and locked-database errors into StoreFull / StoreLocked."""
    try:
        yield
    except StoreError:
        raise
    except IntegrityError as exc:
        raise StoreConflict(f"{_where(url)} refused the write: {exc.orig}") from None
    except (OperationalError, DBAPIError) as exc:
        text = str(exc.orig) if exc.orig is not None else str(exc)
        lowered = text.lower()
        where = _where(url)
        if "full" in lowered or "no space" in lowered or "disk quota" in lowered:
            raise StoreFull(
                f"the database {where} is full ({text}); free disk space (or raise the size "
                "limit) and try again"
            ) from None
        if "locked" in lowered or "busy" in lowered:
            raise StoreLocked(
                f"the database {where} is locked by another process or connection ({text}); "
                "is another meterchain process writing to it? retry, or raise the busy timeout"
            ) from None
        if "readonly" in lowered or "read-only" in lowered:
            raise StoreError(
                f"the database {where} is read-only ({text}); check its permissions"
            ) from None
        raise StoreError(f"database error on {where}: {text}") from None
    except SQLAlchemyError as exc:
        raise StoreError(f"database error on {_where(url)}: {exc}") from None


def _where(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"
