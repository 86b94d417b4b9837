"""When a prepaid meter may be cut off: the contract's rules, as a pure function.

PrepaidMeter.cutOffAllowedAt applies the same rules on chain (tests compare both on many
times); the board applies them itself while the chain or the broker is unreachable.

Brazilian law forbids starting a suspension for non-payment on a Friday, Saturday or Sunday, on
a public holiday or the day before one (Lei 8.987/1995, art. 6, §4, added by Lei 14.015/2020),
and distributors cut only in business hours (08:00–18:00): the defaults below follow that
(docs/prepaid.md cites the sources).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum

SECONDS_PER_DAY = 86_400
EPOCH = date(1970, 1, 1)
# Bit d: cut-offs allowed on weekday d, 0 Sunday … 6 Saturday (Monday to Thursday by default).
MONDAY_TO_THURSDAY = 0b0011110


class Reason(IntEnum):
    """Why a meter is in grace, or why a cut-off may not happen now (PrepaidMeter.REASON_*)."""

    NONE = 0
    EMERGENCY_CREDIT = 1
    NIGHT = 2
    DAY = 3
    HOLIDAY = 4
    HOLIDAY_EVE = 5
    NEVER_CUT = 6

    @property
    def explanation(self) -> str:
        return _EXPLANATIONS[self]


_EXPLANATIONS = {
    Reason.NONE: "no reason",
    Reason.EMERGENCY_CREDIT: "the meter is using its emergency credit",
    Reason.NIGHT: "outside the hours cut-offs may happen",
    Reason.DAY: "a day of the week without cut-offs (weekend or Friday)",
    Reason.HOLIDAY: "a public holiday",
    Reason.HOLIDAY_EVE: "the day before a public holiday",
    Reason.NEVER_CUT: "the meter is on the never-cut list",
}


@dataclass(frozen=True)
class CutOffRules:
    """PrepaidMeter.Rules: local time offset, hours [from, to), weekdays, holiday eves."""

    utc_offset_s: int = -3 * 3600  # Fortaleza (no daylight saving since 2019)
    cut_from_hour: int = 8
    cut_to_hour: int = 18
    cut_weekdays: int = MONDAY_TO_THURSDAY
    no_cut_on_holiday_eve: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.cut_from_hour < self.cut_to_hour <= 24:
            raise ValueError(
                f"cut-off hours [{self.cut_from_hour}, {self.cut_to_hour}) are not an interval "
                "within 0..24; give cut_from_hour < cut_to_hour"
            )
        if self.utc_offset_s % 60 or abs(self.utc_offset_s) > 14 * 3600:
            raise ValueError(f"utc_offset_s={self.utc_offset_s} is not whole minutes within ±14 h")
        if not 0 <= self.cut_weekdays <= 0x7F:
            raise ValueError(f"cut_weekdays={self.cut_weekdays} is not a 7-bit weekday mask")

    def as_tuple(self) -> tuple[int, int, int, int, bool]:
        """The contract's Rules struct, in field order."""
        return (
            self.utc_offset_s,
            self.cut_from_hour,
            self.cut_to_hour,
            self.cut_weekdays,
            self.no_cut_on_holiday_eve,
        )

    def local_day(self, unix_s: int) -> int:
        """Days since 1970-01-01 in local time (the numbering of the holiday list)."""
        return (unix_s + self.utc_offset_s) // SECONDS_PER_DAY

    def allowed_at(self, unix_s: int, holidays: Iterable[int] = ()) -> tuple[bool, Reason]:
        """Whether a cut-off may happen at `unix_s` and, if not, why (PrepaidMeter's order)."""
        local = unix_s + self.utc_offset_s
        if local < 0:
            return False, Reason.NIGHT
        day, second = divmod(local, SECONDS_PER_DAY)
        hour = second // 3600
        if hour < self.cut_from_hour or hour >= self.cut_to_hour:
            return False, Reason.NIGHT
        if not (self.cut_weekdays >> ((day + 4) % 7)) & 1:  # 1970-01-01 was a Thursday
            return False, Reason.DAY
        holiday_days = set(holidays)
        if day in holiday_days:
            return False, Reason.HOLIDAY
        if self.no_cut_on_holiday_eve and day + 1 in holiday_days:
            return False, Reason.HOLIDAY_EVE
        return True, Reason.NONE

    def next_allowed(self, unix_s: int, holidays: Iterable[int] = (), *, step_s: int = 900) -> int:
        """The first moment at or after `unix_s` (in `step_s` steps, up to 30 days on) when a
        cut-off is allowed; raises ValueError if the rules never allow one."""
        holiday_days = set(holidays)
        for t in range(unix_s, unix_s + 30 * SECONDS_PER_DAY, step_s):
            if self.allowed_at(t, holiday_days)[0]:
                return t
        raise ValueError("the cut-off rules allow no cut-off in the next 30 days")


def day_number(day: date) -> int:
    """A calendar date as PrepaidMeter's holiday list numbers it (days since 1970-01-01)."""
    return (day - EPOCH).days


def day_of(number: int) -> date:
    """The date of a local day number."""
    return EPOCH + timedelta(days=number)


def local_time(unix_s: int, rules: CutOffRules) -> datetime:
    """`unix_s` as a naive local date-time under the rules' fixed offset (for messages)."""
    return datetime.fromtimestamp(unix_s + rules.utc_offset_s, UTC).replace(tzinfo=None)
