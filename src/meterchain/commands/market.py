"""`meterchain market …`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Market commands.", no_args_is_help=True)
