"""What `retries` means for every driver: the number of tries in all, the first one included.

`open_meter(url, retries=3)` makes at most three attempts at each operation; the error after the
last one says "after 3 tries". Shared so the four drivers cannot drift apart again.
"""

from __future__ import annotations

DEFAULT_TRIES = 3


def check_retry_settings(timeout_s: float, retries: int) -> None:
    """Refuse settings no driver can work with, naming what to pass instead."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, not {timeout_s}")
    if retries < 1:
        raise ValueError(
            f"retries counts the tries in all, the first one included: it must be at least 1, "
            f"not {retries}"
        )


def tries_text(tries: int) -> str:
    """`1 try` or `3 tries`, for the error raised after the last try."""
    return f"{tries} {'try' if tries == 1 else 'tries'}"
