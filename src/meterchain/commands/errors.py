"""Turning the errors people can act on into a message and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

P = ParamSpec("P")
R = TypeVar("R")

stderr = Console(stderr=True, highlight=False)

# Errors whose message is meant for the user. Areas register their base error here.
USER_ERRORS: list[type[Exception]] = [ValueError]


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print `error: …` and exit 1 for the errors listed in USER_ERRORS."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except tuple(USER_ERRORS) as exc:
            stderr.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
