"""Tries, back-off and the overall deadline: one policy and one retry loop for every driver.

- `retries` is the number of tries in all, the first one included: `open_meter(url, retries=3)`
  makes at most three attempts at each operation; the error after the last one says
  "after 3 tries".
- `timeout_s` bounds each wait for an answer (and each gap inside one).
- `deadline_s` bounds the whole operation, every try and back-off included, however slowly the
  bytes arrive: a meter that answers each question just inside the timeout, or drips one byte
  at a time, cannot hold a read longer. Each try gets at least its share of what is left, so a
  try that drags on is cut and the next one starts afresh. A URL may set it (`?deadline_s=30`);
  by default it is `tries × (answers_per_try × timeout_s + line time) + back-offs`, where a
  driver says how many answers one of its tries normally waits for and, on a serial line, how
  many bytes cross the line at its baud rate.
- Only `MeterError`s come out: a socket's, a serial port's or a library's exception met during a
  try is turned into one (`as_meter_error`) and tried again like any lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import termios
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from meterchain.meters.errors import (
    DeadlineExceeded,
    FrameError,
    ImplausibleReading,
    InvalidMeterUrl,
    MeterError,
    MeterRejected,
    MeterTimeout,
    UnsupportedCommand,
)
from meterchain.meters.url import MeterUrl

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S")

DEFAULT_TRIES = 3
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 0.5
# How long a try cut at its deadline may take to let go (close its connection) before the
# caller is answered anyway; the try is then left to finish on its own.
CANCEL_GRACE_S = 0.5
CANCEL_POLL_S = 0.05
BITS_PER_CHARACTER = 10  # start bit, 8 bits (or 7 and parity), stop bit
DEADLINE_OPTION = "deadline_s"

# What a new try cannot change: the meter said no, the values cannot be true, the request or
# the URL makes no sense. These are raised at once.
FINAL_ERRORS: tuple[type[MeterError], ...] = (
    MeterRejected,
    ImplausibleReading,
    UnsupportedCommand,
    InvalidMeterUrl,
)


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


def backoff_s(tries_done: int) -> float:
    """The pause after the `tries_done`-th failed try: 0.05 s, doubling, at most 0.5 s."""
    return float(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (tries_done - 1)))


def line_time_s(byte_count: int, baud: int) -> float:
    """Seconds `byte_count` bytes take on a serial line at `baud`."""
    return byte_count * BITS_PER_CHARACTER / baud


def default_deadline_s(
    tries: int, timeout_s: float, answers_per_try: int, line_s: float = 0.0
) -> float:
    """Room for `tries` tries that each wait for `answers_per_try` answers (each up to the
    timeout) and move `line_s` seconds of bytes, and the back-offs between them."""
    per_try = answers_per_try * timeout_s + line_s
    pauses = sum(backoff_s(done) for done in range(1, tries))
    return round(tries * per_try + pauses, 3)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and for how long one operation on a meter may be tried."""

    tries: int
    timeout_s: float
    deadline_s: float

    @classmethod
    def for_meter(
        cls,
        url: MeterUrl,
        timeout_s: float,
        tries: int,
        *,
        answers_per_try: int,
        line_s: float = 0.0,
    ) -> RetryPolicy:
        """The policy for `url`: its `deadline_s=` option, or the default for the driver."""
        check_retry_settings(timeout_s, tries)
        deadline_s = url.float_option(
            DEADLINE_OPTION, default_deadline_s(tries, timeout_s, answers_per_try, line_s)
        )
        if not 0 < deadline_s < float("inf"):
            raise InvalidMeterUrl(
                f"{url}: {DEADLINE_OPTION}={deadline_s:g} must be a positive number of seconds"
            )
        return cls(tries, timeout_s, deadline_s)


def as_meter_error(exc: BaseException, where: str = "") -> MeterError:
    """The typed error for anything a try can meet: sockets, serial ports, library parsers."""
    if isinstance(exc, MeterError):
        return exc
    prefix = f"{where}: " if where else ""
    if isinstance(exc, TimeoutError):  # before OSError, of which it is a subclass
        return MeterTimeout(f"{prefix}timed out ({exc or 'no answer'})")
    if isinstance(exc, asyncio.IncompleteReadError):
        return MeterError(
            f"{prefix}the connection closed after {len(exc.partial)} of {exc.expected} bytes"
        )
    if isinstance(exc, EOFError):
        return MeterError(f"{prefix}the connection closed ({exc or 'end of stream'})")
    if isinstance(exc, ConnectionError):
        reason = exc.strerror or type(exc).__name__
        return MeterError(f"{prefix}the connection was lost ({reason}); did the meter restart?")
    if isinstance(exc, OSError | termios.error):  # pyserial's SerialException is an OSError
        return MeterError(f"{prefix}the line failed: {type(exc).__name__}: {exc}")
    return FrameError(
        f"{prefix}could not make sense of the meter's answer ({type(exc).__name__}: {exc})"
    )


def typed_errors(
    method: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """A driver method from which nothing but a `MeterError` escapes (the driver's boundary)."""

    async def wrapper(driver: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(driver, *args, **kwargs)
        except MeterError:
            raise
        except Exception as exc:
            raise as_meter_error(exc, str(getattr(driver, "url", ""))) from None

    functools.update_wrapper(wrapper, method)
    return wrapper


async def with_retries(
    what: str,
    where: str,
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    reset: Callable[[MeterError], Awaitable[None]],
    gave_up: Callable[[MeterError], MeterError],
    final: tuple[type[MeterError], ...] = FINAL_ERRORS,
) -> T:
    """Run `operation` until it succeeds, at most `policy.tries` times, within the deadline.

    After each failed try `reset(error)` lets the driver drop what the failure left behind
    (usually the connection). A `final` error is raised at once; after the last try the driver's
    `gave_up(last_error)` is raised, or a `DeadlineExceeded` when the deadline ended the last
    try. `what` ("read", "switching the relay off") and `where` (the URL) name the operation.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + policy.deadline_s
    last: MeterError | None = None
    tries = 0
    while tries < policy.tries:
        left_s = end - loop.time()
        if left_s <= 0:
            break
        share_s = left_s / (policy.tries - tries)
        tries += 1
        try:
            return await _within(operation, share_s, tries, where)
        except Exception as exc:
            last = as_meter_error(exc, where)
        with contextlib.suppress(Exception):
            await reset(last)
        if isinstance(last, final):
            raise last from None
        if tries < policy.tries:
            await asyncio.sleep(min(backoff_s(tries), max(end - loop.time(), 0.0)))
    if last is None:  # the deadline was spent before a try could start (deadline_s ≈ 0)
        last = DeadlineExceeded("no time was left for a try")
    if isinstance(last, DeadlineExceeded):
        raise DeadlineExceeded(
            f"{what} from {where} stopped at its deadline of {policy.deadline_s:g} s after "
            f"{tries_text(tries)} ({policy.timeout_s:g} s per answer): {last}; the meter "
            "answers too slowly or drags the exchange out: check the line, or allow more time "
            f"with {DEADLINE_OPTION}= in the URL"
        ) from None
    raise gave_up(last) from None


async def _within(
    operation: Callable[[], Awaitable[T]], limit_s: float, attempt: int, where: str
) -> T:
    """`operation()`, cancelled and turned into `DeadlineExceeded` after `limit_s` seconds.

    The operation runs as a task of its own, so even code that swallows a cancellation cannot
    keep the caller waiting past the limit (and a grace period to close the connection).
    """
    task: asyncio.Future[T] = asyncio.ensure_future(operation())
    try:
        done, _ = await asyncio.wait({task}, timeout=limit_s)
    except BaseException:  # the caller itself was cancelled
        task.cancel()
        raise
    if done:
        if task.cancelled():
            raise MeterError(f"{where}: try {attempt} was cancelled")
        return task.result()
    loop = asyncio.get_running_loop()
    grace_end = loop.time() + CANCEL_GRACE_S
    while not task.done() and loop.time() < grace_end:
        task.cancel()  # again if needed: Python 3.11's wait_for can swallow a cancellation
        await asyncio.wait({task}, timeout=CANCEL_POLL_S)
    if task.done():
        _consume(task)
    else:
        log.warning("a try on %s did not stop when cancelled; leaving it behind", where)
        task.add_done_callback(_consume)
    raise DeadlineExceeded(f"try {attempt} was cut after its {limit_s:.2f} s share of the deadline")


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a finished task's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
