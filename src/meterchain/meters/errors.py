"""Typed meter errors: each message says what was wrong and, where it helps, what to do.

Every message is one line, whatever text went into it (a library's multi-line parser error, a
frame dump with CR LF in it): logs, the command line's `error: …` and the agents' alarms stay
one event per line.
"""

from __future__ import annotations

import re

_WHITESPACE_RUN = re.compile(r"\s*[\r\n\f\v]\s*")


def one_line(text: str) -> str:
    """`text` with every line break (and the indentation around it) turned into one space."""
    return _WHITESPACE_RUN.sub(" ", text).strip()


class MeterError(Exception):
    """Base of every error a meter driver raises."""

    def __init__(self, message: str = "") -> None:
        super().__init__(one_line(str(message)))


class InvalidMeterUrl(MeterError):
    """The meter URL cannot be understood."""


class MeterTimeout(MeterError):
    """The meter did not answer in time."""


class DeadlineExceeded(MeterTimeout):
    """A read or command went on past its overall deadline (a meter answering too slowly)."""


class FrameError(MeterError):
    """A frame was corrupt: wrong CRC/BCC, truncated, garbage or of the wrong shape."""


class MeterRejected(MeterError):
    """The meter answered with an error: a Modbus exception, a DLMS error result, a NAK."""


class ImplausibleReading(MeterError):
    """Values that cannot be true: NaN, negative counters, counters going backwards."""


class UnsupportedCommand(MeterError):
    """The meter or its driver cannot carry out this command."""
