"""Device alarms: what a board raises when a device does not do what it was told.

Drivers call an `AlarmHook` and then raise a typed error; they never decide where alarms go.
The board (ProsumerAgent) logs them and publishes them on the bus for the monitoring; a
command-line run only logs them. An alarm has a start (`active=True`) and an end (the same
`code` for the same device with `active=False`, raised when the device confirms again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger(__name__)

#: Codes a monitoring system can rely on.
WRITE_NOT_CONFIRMED = "device-write-not-confirmed"


@dataclass(frozen=True)
class DeviceAlarm:
    """One alarm raised (or cleared) by a device driver."""

    device: str  # the device URL
    kind: str  # battery, pv or load
    code: str
    message: str
    active: bool = True
    at: datetime | None = None

    def as_json(self) -> dict[str, object]:
        moment = self.at or datetime.now(UTC)
        return {
            "device": self.device,
            "kind": self.kind,
            "code": self.code,
            "message": self.message,
            "active": self.active,
            "at": moment.isoformat().replace("+00:00", "Z"),
        }


AlarmHook = Callable[[DeviceAlarm], None]


def log_alarm(alarm: DeviceAlarm) -> None:
    """The default hook: an ERROR line when raised, an INFO line when cleared."""
    if alarm.active:
        log.error("ALARM %s %s %s: %s", alarm.code, alarm.kind, alarm.device, alarm.message)
    else:
        log.info("alarm cleared %s %s %s", alarm.code, alarm.kind, alarm.device)


class ReadBackMismatch(Exception):
    """A written value read back different (the device did not take it, or changed it)."""


class WriteGuard:
    """Runs a driver's write-and-verify steps; any failure raises an alarm and a typed error.

    The alarm ends (an `active=False` alarm with the same code) at the next confirmed write.
    """

    def __init__(self, device: str, kind: str, hook: AlarmHook) -> None:
        self.device = device
        self.kind = kind
        self.hook = hook
        self.active = False

    def failed(self, what: str, cause: Exception) -> Exception:
        from meterchain.devices.errors import WriteNotConfirmed

        detail = str(cause) if isinstance(cause, ReadBackMismatch) else f"{cause}"
        message = f"{self.kind} {self.device}: {what} was not confirmed: {detail}"
        alarm = DeviceAlarm(
            self.device, self.kind, WRITE_NOT_CONFIRMED, message, True, datetime.now(UTC)
        )
        self.active = True
        self.hook(alarm)
        return WriteNotConfirmed(message, alarm)

    def confirmed(self) -> None:
        if self.active:
            self.active = False
            self.hook(
                DeviceAlarm(
                    self.device,
                    self.kind,
                    WRITE_NOT_CONFIRMED,
                    f"{self.kind} {self.device} confirms its set-points again",
                    False,
                    datetime.now(UTC),
                )
            )
