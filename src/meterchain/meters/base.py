"""The one interface every meter driver implements, and the checks every reading passes."""

from __future__ import annotations

from typing import Protocol

from meterchain.meters.errors import ImplausibleReading
from meterchain.meters.url import MeterUrl
from meterchain.model import DeviceCommand, Reading, RelayState


class Meter(Protocol):
    """A meter reached over its protocol. Drivers connect lazily and reconnect after errors.

    Whatever the meter does, `read()` and `command()` end by `deadline_s` (every try included)
    and raise nothing but `MeterError`s, each with a one-line message (meters/retry.py).
    """

    url: MeterUrl
    deadline_s: float

    async def read(self) -> Reading:
        """Read the cumulative registers and instantaneous values."""
        ...

    async def command(self, command: DeviceCommand) -> RelayState:
        """Carry out a command (relay switching) and return the relay state that results."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


class ReadingGuard:
    """Rejects readings that cannot be true, remembering the last good one of a meter."""

    def __init__(self) -> None:
        self._last: Reading | None = None

    def check(self, reading: Reading) -> Reading:
        bad = reading.non_finite_fields()
        if bad:
            raise ImplausibleReading(
                f"meter {reading.meter_id}: {', '.join(bad)} is not a finite number; "
                "the reading was discarded"
            )
        if reading.import_wh < 0 or reading.export_wh < 0:
            raise ImplausibleReading(
                f"meter {reading.meter_id}: negative energy counter "
                f"(import {reading.import_wh} Wh, export {reading.export_wh} Wh)"
            )
        last = self._last
        if last is not None:
            for name, now, before in (
                ("import", reading.import_wh, last.import_wh),
                ("export", reading.export_wh, last.export_wh),
            ):
                if now < before:
                    raise ImplausibleReading(
                        f"meter {reading.meter_id}: {name} counter went backwards "
                        f"from {before} Wh to {now} Wh; the reading was discarded "
                        "(was the meter replaced or reset?)"
                    )
        self._last = reading
        return reading
