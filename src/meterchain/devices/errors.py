"""Typed device errors: each message names the device, what failed and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meterchain.devices.alarms import DeviceAlarm


class DeviceError(Exception):
    """Base of every error a device driver raises."""


class InvalidDeviceUrl(DeviceError):
    """The device URL cannot be understood."""


class DeviceConnectionFailed(DeviceError):
    """The TCP connection or the serial port could not be opened, or it was lost."""


class DeviceTimeout(DeviceError):
    """The device did not answer in time."""


class DeviceFrameError(DeviceError):
    """The answer was garbage: bad CRC, wrong unit or function, truncated, impossible values."""


class DeviceRejected(DeviceError):
    """The device answered with a Modbus exception (it refused the request)."""


class DeviceMismatch(DeviceError):
    """The device is not what the URL or the map says (no SunSpec marker, a model missing)."""


class UnsupportedSetpoint(DeviceError):
    """The device cannot take this kind of set-point (e.g. a battery power on a PV inverter)."""


class WriteNotConfirmed(DeviceError):
    """A set-point was not confirmed: refused, unanswered, garbled, or read back different.

    The device is never assumed to have obeyed. `alarm` is what was raised for the monitoring.
    """

    def __init__(self, message: str, alarm: DeviceAlarm) -> None:
        super().__init__(message)
        self.alarm = alarm
