"""A real PostgreSQL server for the tests: initdb in a temporary directory, loopback only.

PostgreSQL refuses to run as root, and the tests run as root in CI: then initdb and the
server run as the unprivileged `nobody` (through runuser), in a directory it owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg


def _bindir() -> Path:
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(found).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).resolve().parent
    raise RuntimeError(
        "PostgreSQL's initdb is missing: install Debian's postgresql (make installs it from "
        ".ci/apt-packages.txt)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    directory: Path
    port: int
    bindir: Path
    user: str | None  # the unprivileged account it runs as (None: the current one)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        _run(self, [str(self.bindir / "pg_ctl"), "-D", str(self.directory / "data"), "-m",
                    "immediate", "stop"], check=False)  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)


def _run(server: PostgresServer, args: list[str], *, check: bool = True) -> None:
    command = args if server.user is None else ["runuser", "-u", server.user, "--", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")


def start_postgres() -> PostgresServer:
    bindir = _bindir()
    directory = Path(tempfile.mkdtemp(prefix="mc-pg-"))
    user = None
    if os.geteuid() == 0:
        user = "nobody"
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(directory, _free_port(), bindir, user)
    data = directory / "data"
    _run(server, [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C"])  # fmt: skip
    options = (
        f"-h 127.0.0.1 -p {server.port} -k {directory} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    try:
        _run(server, [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                      str(directory / "server.log"), "-w", "-t", "60", "start"])  # fmt: skip
    except RuntimeError:
        log = directory / "server.log"
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start:\n{text[-2000:]}") from None
    return server


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
