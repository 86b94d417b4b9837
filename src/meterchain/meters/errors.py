"""Typed meter errors: each message says what was wrong and, where it helps, what to do."""

from __future__ import annotations


class MeterError(Exception):
    """Base of every error a meter driver raises."""


class InvalidMeterUrl(MeterError):
    """The meter URL cannot be understood."""


class MeterTimeout(MeterError):
    """The meter did not answer in time."""


class FrameError(MeterError):
    """A frame was corrupt: wrong CRC/BCC, truncated, garbage or of the wrong shape."""


class MeterRejected(MeterError):
    """The meter answered with an error: a Modbus exception, a DLMS error result, a NAK."""


class ImplausibleReading(MeterError):
    """Values that cannot be true: NaN, negative counters, counters going backwards."""


class UnsupportedCommand(MeterError):
    """The meter or its driver cannot carry out this command."""
