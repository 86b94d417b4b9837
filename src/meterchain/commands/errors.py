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


class OptionError(ValueError):
    """Command-line options that do not fit together, e.g. an option the protocol has no use for."""


# Errors whose message is meant for the user. Areas register their base error here.
USER_ERRORS: list[type[Exception]] = [ValueError]

# The same, named "package.module:Class", for an area whose error class lives in a module too
# heavy to import at every `meterchain` start: the name is matched against the raised error's
# classes, so the module is imported only by the command that raises it.
USER_ERROR_NAMES: set[str] = set()


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` is one of the registered user errors (by class or by name)."""
    if isinstance(exc, tuple(USER_ERRORS)):
        return True
    names = {f"{cls.__module__}:{cls.__qualname__}" for cls in type(exc).mro()}
    return not names.isdisjoint(USER_ERROR_NAMES)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print `error: …` and exit 1 for the registered user errors."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if not is_user_error(exc):
                raise
            stderr.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
