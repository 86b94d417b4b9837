"""`meterchain board install` and `meterchain board status`: a board as a systemd service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from meterchain.board.install import InstallError
from meterchain.commands.errors import USER_ERRORS, user_errors

USER_ERRORS.append(InstallError)

app = typer.Typer(help="Install a board's agent as a service; see what it is doing.")
console = Console(highlight=False)

INSTALLED_CONFIG = Path("/etc/meterchain/board.toml")


@app.command("install")
@user_errors
def install(
    config: Annotated[Path, typer.Option("--config", help="The board's TOML file.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every file it would write; change nothing.")
    ] = False,
    root: Annotated[
        Path,
        typer.Option("--root", help="Install into this directory tree (an image being built)."),
    ] = Path("/"),
    executable: Annotated[
        str | None,
        typer.Option(help="The `meterchain` the service runs (default: this one's)."),
    ] = None,
    start: Annotated[
        bool, typer.Option(help="Start the service now (when systemd runs here).")
    ] = True,
) -> None:
    """Create the system user, /etc/meterchain and /var/lib/meterchain, the keystore (0600),
    the systemd unit (watchdog, credentials, journald), and enable the service."""
    from meterchain.board.install import apply_install, default_executable, plan_install

    plan = plan_install(config, executable=executable or default_executable())
    if dry_run:
        for planned in plan.files:
            print(planned.describe())
        for directory in plan.directories:
            print(f"==> {directory.path}/  (directory, {directory.owner}:{directory.group} "
                  f"{directory.mode:04o})")  # fmt: skip
        print(f"==> {'/var/lib/meterchain/keystore.json'}  ({plan.user}:{plan.user} 0600)")
        print(
            "(secret: the keystore, "
            + ("copied from " + str(plan.keystore_source) if plan.keystore_source else "made new")
            + ")"
        )
        for note in plan.notes:
            print(f"note: {note}")
        return
    for line in apply_install(plan, root=root, start=start):
        console.print(line, soft_wrap=True)


@app.command("status")
@user_errors
def status(
    config: Annotated[
        Path, typer.Option("--config", help="The installed board's TOML file.")
    ] = INSTALLED_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What the board's agent is doing: its last reading, order and settlement, the broker and
    the chain (as the market reports it), and its alarms."""
    from meterchain.board.status import gather_status, render_text
    from meterchain.config import load_toml
    from meterchain.roles import BoardConfig

    board = load_toml(config, BoardConfig)
    found = gather_status(board)
    if as_json:
        print(json.dumps(found, indent=2, default=str))
    else:
        print(render_text(found))
