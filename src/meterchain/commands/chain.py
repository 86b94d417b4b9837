"""`meterchain chain …`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Chain commands.", no_args_is_help=True)
