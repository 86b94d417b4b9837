"""How long an agent keeps its interval records: a board's SD card is not a database server.

A board writes a handful of records per interval (its orders, its signed reading, the
registers at each boundary, what the market told it). Kept for ever, three months of them are
~40,000 rows; kept for years, they would fill the card. `Retention` deletes the records of
intervals older than `days` (by the interval in the record's key, on the agent's clock), for
the kinds it is given. What is never at risk: a signed order or reading is re-sent only for
the last few intervals (the ticker's catch-up window), and the contract never takes an old
interval again, so a record 90 days old protects nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from meterchain.store.db import Store
from meterchain.store.records import RecordRow

DEFAULT_DAYS = 90
# A board's interval records (agents/prosumer.py): all keyed by interval ("T" or "T:what").
BOARD_KINDS = ("orders", "readings", "delivery", "boundary", "trades", "void", "delivered")
_CHUNK = 500


class Retention:
    """Deletes one agent's interval records older than `days`."""

    def __init__(
        self,
        store: Store,
        agent: str,
        *,
        days: float = DEFAULT_DAYS,
        kinds: tuple[str, ...] = BOARD_KINDS,
    ) -> None:
        if days <= 0:
            raise ValueError(f"a retention of {days} days keeps nothing; give a positive number")
        self.store = store
        self.agent = agent
        self.days = days
        self.kinds = kinds

    def prune(self, now: datetime) -> int:
        """Delete what is older than the retention at `now`; how many records went."""
        cutoff = now.timestamp() - self.days * 86400
        with self.store.session() as session:
            rows = session.execute(
                select(RecordRow.id, RecordRow.key).where(
                    RecordRow.agent == self.agent, RecordRow.kind.in_(self.kinds)
                )
            ).all()
        old = [row_id for row_id, key in rows if _interval(key) < cutoff]
        for start in range(0, len(old), _CHUNK):
            with self.store.quick_write() as connection:
                connection.execute(
                    delete(RecordRow).where(RecordRow.id.in_(old[start : start + _CHUNK]))
                )
        return len(old)


def _interval(key: str) -> float:
    """The interval a record's key names ("1796486400" or "1796486400:order"); inf if none."""
    head = key.split(":", 1)[0]
    return float(head) if head.isdigit() else float("inf")
