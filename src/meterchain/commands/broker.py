"""`meterchain broker config`: a community's Mosquitto broker, secured (TLS, passwords, ACL)."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meterchain.agents.broker_files import (
    CREDENTIALS_DIR,
    BrokerFilesError,
    board_agent,
    write_broker_files,
)
from meterchain.commands.errors import USER_ERRORS, user_errors

USER_ERRORS.append(BrokerFilesError)
SETTINGS_FILE = "broker.json"  # what the last run was told, for the next

app = typer.Typer(help="The community's MQTT broker (Mosquitto).", no_args_is_help=True)
console = Console(highlight=False)


@app.command("config")
@user_errors
def config(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write the broker's files (kept across runs).")
    ] = Path("broker"),
    boards: Annotated[
        list[str] | None,
        typer.Option("--board", help="A meter id whose board gets a credential (repeat)."),
    ] = None,
    agents: Annotated[
        list[str] | None,
        typer.Option("--agent", help="Another agent name to give a credential (repeat)."),
    ] = None,
    revoke: Annotated[
        list[str] | None,
        typer.Option(
            "--revoke", help="An agent whose credential is withdrawn (e.g. prosumer-10000002)."
        ),
    ] = None,
    hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="A name or address clients use to reach the broker; goes into its certificate "
            "(repeat; default 127.0.0.1).",
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="TLS listener port (default 8883).")
    ] = None,
    bind: Annotated[
        str | None, typer.Option(help="Listen on this address only (default: every address).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where the broker keeps sessions (default DIR/data)."),
    ] = None,
    community: Annotated[str | None, typer.Option(help="The community's name, for its CA.")] = None,
    run_as_root: Annotated[
        bool,
        typer.Option(
            "--run-as-root",
            help="Keep mosquitto root (`user root`) instead of its own user: only for a trial "
            "on one machine, from a directory the `mosquitto` user cannot reach.",
        ),
    ] = False,
) -> None:
    """Write mosquitto.conf, the community CA and the broker's certificate, one password per
    board, the market, the grid and the monitor, and the ACL. Run it again to add boards
    (existing credentials are kept) or to --revoke one, then reload the broker (SIGHUP); what
    it is not told again (port, addresses) stays as it was."""
    remembered = directory / SETTINGS_FILE
    previous = json.loads(remembered.read_text()) if remembered.exists() else {}
    settings: dict[str, Any] = {
        "hosts": hosts or previous.get("hosts") or ["127.0.0.1"],
        "port": port or previous.get("port") or 8883,
        "bind": bind if bind is not None else previous.get("bind"),
        "data_dir": str(data_dir) if data_dir is not None else previous.get("data_dir"),
        "community": community or previous.get("community") or "community",
    }
    data = Path(settings["data_dir"]) if settings["data_dir"] else directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = write_broker_files(
        directory,
        agents=[*(board_agent(b) for b in boards or []), *(agents or [])],
        revoke=revoke or [],
        hosts=settings["hosts"],
        port=settings["port"],
        bind=settings["bind"],
        data_dir=data,
        community=settings["community"],
        run_as_root=run_as_root,
    )
    remembered.write_text(json.dumps(settings, indent=2) + "\n")
    owner = None if run_as_root else _mosquitto_user()
    if owner is not None:  # run as root: the broker drops to `mosquitto` and must read these
        for path in [directory, data, *directory.rglob("*"), *data.rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        blocked = _unreachable(directory.resolve(), owner)
        if blocked is not None:
            console.print(
                f"warning: mosquitto drops to the user `mosquitto`, which cannot enter "
                f"{blocked}: put the files where it can (e.g. --dir /etc/mosquitto/meterchain), "
                "or for a trial on one machine add --run-as-root",
                markup=False,
                soft_wrap=True,
            )
    table = Table(title=f"broker files in {directory}")
    table.add_column("agent")
    table.add_column("credential (copy to that process; [broker] password_file)")
    for agent in files.agents:
        table.add_row(agent, str(files.credential_file(agent)))
    console.print(table)
    console.print(
        f"CA for every process ([broker] tls_ca_file): {files.ca_file}\n"
        f"start: mosquitto -c {files.config}   reload after a change: kill -HUP <its pid>\n"
        f"each process: [broker] host = {files.hosts[0]!r}, port = {files.port}, username = its "
        f"agent's name, password_file = its file under {directory / CREDENTIALS_DIR}",
        markup=False,
        soft_wrap=True,
    )


def _unreachable(directory: Path, owner: pwd.struct_passwd) -> Path | None:
    """The first parent directory `owner` may not enter (no search permission), if any."""
    for parent in reversed(directory.parents):
        stat = parent.stat()
        if stat.st_uid == owner.pw_uid:
            continue
        if not stat.st_mode & (0o010 if stat.st_gid == owner.pw_gid else 0o001):
            return parent
    return None


def _mosquitto_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        return None
