"""The board's copy of its meter's prepaid credit, and what its relay should do.

The chain is the authority: PrepaidMeter decides cut-offs and reconnections, and the
operator's agent forwards each decision with a snapshot of the credit. The snapshot names the
registers the chain has settled up to, so the board can keep the credit current from its own
meter: credit now = the chain's credit − the energy imported since those registers at retail
(+ exported at feed-in). While the snapshots stop coming (the broker or the chain is
unreachable), the board applies the same rules to that estimate by itself: it cuts off when
the credit is past the emergency credit and the rules allow a cut now, never on the
never-cut list. When snapshots return it follows the chain again, except that it keeps a cut
it made until the chain has settled the energy it cut at (otherwise a stale credit would
reconnect the meter for an interval and cut it again).

Pure: time, readings and snapshots are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from meterchain.model import RelayState
from meterchain.prepaid.rules import CutOffRules, Reason


class ChainState(StrEnum):
    """PrepaidMeter's supply state, as `meterchain prepaid status` names it."""

    SUPPLIED = "supplied"
    GRACE = "grace"
    CUT_OFF = "cut_off"


@dataclass(frozen=True)
class CreditSnapshot:
    """What the chain said about a meter's credit, and the registers that credit is net of."""

    credit_units: int  # market balance less the float's loans (negative in emergency/grace)
    state: ChainState
    since: int  # Unix seconds the state began
    emergency_units: int
    settled_import_wh: int  # the meter's registers at its last settled reading
    settled_export_wh: int
    retail_units: int  # per kWh, the tariff in force
    feed_in_units: int
    never_cut: bool
    rules: CutOffRules
    holidays: frozenset[int] = frozenset()  # local day numbers
    thresholds: tuple[int, ...] = ()  # low-credit warning levels, decreasing
    received_at: float = 0.0  # Unix seconds on the board's clock


@dataclass(frozen=True)
class RelayDecision:
    """What the relay should be, and why (for the log and the acknowledgement)."""

    state: RelayState
    why: str
    local: bool = False  # decided by the board alone (no chain snapshot recent enough)


@dataclass
class LocalCredit:
    """The board's copy of the credit. `never_cut` is the board's own setting (medical
    equipment behind this meter): it refuses every cut-off, whatever a message says."""

    never_cut: bool = False
    offline_after_s: float = 1800.0  # two 15-minute intervals without a snapshot
    snapshot: CreditSnapshot | None = None
    cut_at_import_wh: int | None = None  # import register when the board cut by itself
    warned: int = 0  # thresholds the local estimate has crossed (warned once each)
    history: list[tuple[float, int]] = field(default_factory=list)  # (time, estimate)

    def update(self, snapshot: CreditSnapshot) -> None:
        self.snapshot = snapshot
        # The chain warns about its own figures; local warnings count on from there.
        self.warned = sum(1 for t in snapshot.thresholds if snapshot.credit_units < t)
        if snapshot.state is ChainState.CUT_OFF or (
            self.cut_at_import_wh is not None
            and snapshot.settled_import_wh >= self.cut_at_import_wh
        ):
            self.cut_at_import_wh = None  # the chain has caught up with the board's own cut

    def online(self, now_s: float) -> bool:
        """Whether the last snapshot is recent enough to follow."""
        return (
            self.snapshot is not None and now_s - self.snapshot.received_at < self.offline_after_s
        )

    def estimate_units(self, import_wh: float, export_wh: float) -> int | None:
        """The credit now: the chain's, less what the meter imported since the registers it
        is net of (at retail, rounded up), plus what it exported (at feed-in, rounded down)."""
        s = self.snapshot
        if s is None:
            return None
        imported = max(int(import_wh) - s.settled_import_wh, 0)
        exported = max(int(export_wh) - s.settled_export_wh, 0)
        debit = -(-imported * s.retail_units // 1000)
        return s.credit_units - debit + exported * s.feed_in_units // 1000

    def decide(
        self, import_wh: float, export_wh: float, relay: RelayState, now_s: float
    ) -> RelayDecision | None:
        """What the relay should be now (None: leave it as it is)."""
        s = self.snapshot
        if s is None:
            return None
        never_cut = self.never_cut or s.never_cut
        estimate = self.estimate_units(import_wh, export_wh)
        assert estimate is not None
        self.history.append((now_s, estimate))
        exhausted = estimate <= -s.emergency_units
        if never_cut:
            return RelayDecision(RelayState.ON, "the meter is on the never-cut list")
        if self.online(now_s):
            if s.state is ChainState.CUT_OFF:
                return self._cut_if_allowed(
                    s, int(import_wh), now_s, "the chain cut the meter off", relay
                )
            if self.cut_at_import_wh is not None and exhausted:
                return RelayDecision(
                    RelayState.OFF,
                    f"the chain has not settled the energy up to {self.cut_at_import_wh} Wh "
                    "the board cut off at",
                )
            self.cut_at_import_wh = None
            return RelayDecision(RelayState.ON, f"the chain says {s.state.value}")
        if relay is RelayState.OFF:
            return None  # a top-up cannot reach the board: it stays off until the chain says
        if exhausted:
            return self._cut_if_allowed(
                s,
                int(import_wh),
                now_s,
                f"no word from the chain for {now_s - s.received_at:.0f} s and the credit "
                f"estimate {estimate} is past the emergency credit",
                relay,
                local=True,
            )
        return None

    def _cut_if_allowed(
        self,
        s: CreditSnapshot,
        import_wh: int,
        now_s: float,
        why: str,
        relay: RelayState,
        *,
        local: bool = False,
    ) -> RelayDecision | None:
        if relay is RelayState.OFF:
            return RelayDecision(RelayState.OFF, why, local)
        allowed, reason = s.rules.allowed_at(int(now_s), s.holidays)
        if not allowed:  # e.g. a cut-off decided at 17:59 that reaches the board at 18:01
            return RelayDecision(
                RelayState.ON, f"{why}, but not now: {Reason(reason).explanation}", local
            )
        if local:
            self.cut_at_import_wh = import_wh
        return RelayDecision(RelayState.OFF, why, local)

    def new_warnings(self, import_wh: float, export_wh: float) -> list[int]:
        """The low-credit thresholds the local estimate has newly crossed (for the board's own
        warnings while the chain's do not reach it)."""
        s = self.snapshot
        estimate = self.estimate_units(import_wh, export_wh)
        if s is None or estimate is None:
            return []
        below = sum(1 for t in s.thresholds if estimate < t)
        crossed = list(s.thresholds[self.warned : below])
        self.warned = below
        return crossed
