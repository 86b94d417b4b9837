"""Billing and export periods: a calendar month ("2026-11") in a time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "America/Fortaleza"
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class PeriodError(ValueError):
    """A period or time zone that cannot be understood."""


@dataclass(frozen=True)
class Month:
    """A calendar month in a time zone: [start, end) in Unix seconds."""

    year: int
    month: int
    timezone: str

    @classmethod
    def parse(cls, text: str, timezone: str = DEFAULT_TIMEZONE) -> Month:
        match = _MONTH.match(text.strip())
        if match is None or not 1 <= int(match.group(2)) <= 12:
            raise PeriodError(
                f"period {text!r} is not a calendar month; write it as YYYY-MM, e.g. 2026-11"
            )
        zone(timezone)
        return cls(int(match.group(1)), int(match.group(2)), timezone)

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def number(self) -> int:
        """YYYYMM, as Billing records it."""
        return self.year * 100 + self.month

    @property
    def start(self) -> int:
        return int(datetime(self.year, self.month, 1, tzinfo=zone(self.timezone)).timestamp())

    @property
    def end(self) -> int:
        year, month = (self.year + 1, 1) if self.month == 12 else (self.year, self.month + 1)
        return int(datetime(year, month, 1, tzinfo=zone(self.timezone)).timestamp())


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or a PeriodError that says what to write."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PeriodError(
            f"unknown time zone {name!r}; use an IANA name such as 'America/Fortaleza' or 'UTC'"
        ) from None


def parse_time(text: str, timezone: str = DEFAULT_TIMEZONE) -> int:
    """An ISO 8601 time ("2026-11-24T15:00:00Z", a date "2026-11-24" is its local midnight) or
    Unix seconds → Unix seconds."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PeriodError(
            f"time {text!r} is neither ISO 8601 (2026-11-24T15:00:00Z) nor Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(timezone))
    return int(moment.timestamp())
