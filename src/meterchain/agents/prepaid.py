"""Prepaid supply on the bus: what the operator's PrepaidAgent tells a board, and what the
board does about it (`PrepaidBoard`, used by the ProsumerAgent).

Boards never talk to the chain. After each delivery the operator's agent assesses the prepaid
meters on chain and sends every board a `PrepaidUpdate`: the chain's credit, state and the
registers that credit is net of, plus the rules. The board switches its meter's relay through
the meter's own protocol (DLMS disconnect control, a Modbus coil, the IEC 62056-21 programming
command, the NBR 14522 0x98/0xCE extension) as the chain decided, and answers `RelayAck`. Its
local copy of the credit (prepaid/ledger.py) keeps the rules working while updates stop.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from meterchain.agents.messages import Content, DeviceAlarmNotice
from meterchain.agents.runtime import Envelope, Performative, content_type
from meterchain.clock import Clock
from meterchain.meters.base import Meter
from meterchain.meters.errors import MeterError
from meterchain.model import Reading, RelayState, SetRelay
from meterchain.prepaid.ledger import ChainState, CreditSnapshot, LocalCredit, RelayDecision
from meterchain.prepaid.rules import CutOffRules

if TYPE_CHECKING:
    from meterchain.agents.prosumer import ProsumerAgent

log = logging.getLogger(__name__)


@content_type("prepaid-update")
class PrepaidUpdate(Content):
    """A prepaid meter's credit on chain after an assessment, and the event that changed it
    (`cut-off`, `reconnect`), if any. Money in credit smallest units."""

    meter_id: str
    command_id: str
    event: Literal["sync", "cut-off", "reconnect"] = "sync"
    interval: int = Field(default=0, ge=0, description="the delivery it follows (0: none)")
    credit_units: int
    state: ChainState
    since: int = Field(ge=0)
    emergency_units: int = Field(ge=0)
    settled_import_wh: int = Field(ge=0)
    settled_export_wh: int = Field(ge=0)
    retail_units: int = Field(ge=0)
    feed_in_units: int = Field(ge=0)
    never_cut: bool = False
    utc_offset_s: int
    cut_from_hour: int = Field(ge=0, le=23)
    cut_to_hour: int = Field(ge=1, le=24)
    cut_weekdays: int = Field(ge=0, le=0x7F)
    no_cut_on_holiday_eve: bool = True
    holidays: list[int] = Field(default_factory=list)
    thresholds: list[int] = Field(default_factory=list)

    def snapshot(self, received_at: float) -> CreditSnapshot:
        return CreditSnapshot(
            credit_units=self.credit_units,
            state=self.state,
            since=self.since,
            emergency_units=self.emergency_units,
            settled_import_wh=self.settled_import_wh,
            settled_export_wh=self.settled_export_wh,
            retail_units=self.retail_units,
            feed_in_units=self.feed_in_units,
            never_cut=self.never_cut,
            rules=CutOffRules(
                self.utc_offset_s,
                self.cut_from_hour,
                self.cut_to_hour,
                self.cut_weekdays,
                self.no_cut_on_holiday_eve,
            ),
            holidays=frozenset(self.holidays),
            thresholds=tuple(self.thresholds),
            received_at=received_at,
        )


@content_type("relay-ack")
class RelayAck(Content):
    """A board's answer to a PrepaidUpdate: the relay as the meter reports it now."""

    meter_id: str
    command_id: str
    relay: Literal["on", "off"] | None  # None: the meter could not be read
    switched: bool = False
    why: str = ""
    error: str | None = None


@content_type("credit-warning")
class CreditWarning(Content):
    """A prepaid meter's credit fell below a low-credit threshold (smallest units)."""

    meter_id: str
    threshold_units: int
    credit_units: int
    at: datetime
    local: bool = False  # the board's own estimate, while the chain's word does not reach it


@content_type("prepaid-check")
class PrepaidCheck(Content):
    """Ask the operator's prepaid agent to read the chain now (e.g. after a top-up)."""

    interval: int = Field(default=0, ge=0)
    assess: bool = False


class PrepaidBoard:
    """What a board does for prepaid supply: follow the chain's decisions on its relay, and
    apply the rules itself while the chain's word does not reach it."""

    def __init__(
        self,
        meter_id: str,
        meter: Meter,
        clock: Clock,
        *,
        never_cut: bool = False,
        offline_after_s: float = 1800.0,
    ) -> None:
        self.meter_id = meter_id
        self.meter = meter
        self.clock = clock
        self.ledger = LocalCredit(never_cut=never_cut, offline_after_s=offline_after_s)
        self.switches: list[tuple[datetime, RelayState, str]] = []  # what it did, for reports
        self.relay = RelayState.ON  # as the meter last reported it
        self._switching = False

    @property
    def relay_open(self) -> bool:
        """The meter's relay is open: it cannot import, so it has nothing to buy."""
        return self.relay is RelayState.OFF

    async def handle(self, agent: ProsumerAgent, envelope: Envelope, content: Content) -> None:
        if isinstance(content, PrepaidUpdate):
            await self.on_update(agent, envelope, content)
        elif isinstance(content, CreditWarning):
            await self.on_warning(agent, content)

    async def on_update(
        self, agent: ProsumerAgent, envelope: Envelope, update: PrepaidUpdate
    ) -> None:
        """Take the chain's word, switch the relay if it says so (and the rules allow it
        now), and acknowledge with the relay as the meter reports it."""
        if update.meter_id != self.meter_id:
            log.warning("%s: an update for meter %s is not mine", agent.name, update.meter_id)
            return
        self.ledger.update(update.snapshot(self.clock.now().timestamp()))
        ack = await self._follow(agent, update.command_id)
        await agent.reply(envelope, Performative.INFORM, ack)
        await agent._ack("relay", update.interval)

    async def on_warning(self, agent: ProsumerAgent, warning: CreditWarning) -> None:
        log.info(
            "%s: prepaid credit %d is below the warning level %d",
            agent.name,
            warning.credit_units,
            warning.threshold_units,
        )
        await self._alarm(agent, "prepaid-low-credit", _warning_text(warning), True)

    async def after_reading(self, agent: ProsumerAgent, reading: Reading) -> None:
        """Every meter reading: while the chain's word does not reach the board, apply the
        rules to the local estimate (a cut-off, low-credit warnings)."""
        self.relay = reading.relay
        if self._switching or self.ledger.snapshot is None:
            return
        now = self.clock.now()
        if self.ledger.online(now.timestamp()):
            return
        for threshold in self.ledger.new_warnings(reading.import_wh, reading.export_wh):
            estimate = self.ledger.estimate_units(reading.import_wh, reading.export_wh) or 0
            warning = CreditWarning(
                meter_id=self.meter_id,
                threshold_units=threshold,
                credit_units=estimate,
                at=now,
                local=True,
            )
            await self._alarm(agent, "prepaid-low-credit", _warning_text(warning), True)
        decision = self.ledger.decide(
            reading.import_wh, reading.export_wh, reading.relay, now.timestamp()
        )
        if decision is not None and decision.state is not reading.relay:
            with contextlib.suppress(MeterError):  # logged and alarmed; the next read retries
                await self._switch(agent, decision)

    async def _follow(self, agent: ProsumerAgent, command_id: str) -> RelayAck:
        self._switching = True
        try:
            reading = await agent.read_meter()
        except MeterError as exc:
            return RelayAck(
                meter_id=self.meter_id, command_id=command_id, relay=None, error=str(exc)
            )
        finally:
            self._switching = False
        decision = self.ledger.decide(
            reading.import_wh, reading.export_wh, reading.relay, self.clock.now().timestamp()
        )
        if decision is None or decision.state is reading.relay:
            return RelayAck(
                meter_id=self.meter_id,
                command_id=command_id,
                relay=reading.relay.value,
                why=decision.why if decision is not None else "",
            )
        try:
            state = await self._switch(agent, decision)
        except MeterError as exc:
            return RelayAck(
                meter_id=self.meter_id,
                command_id=command_id,
                relay=reading.relay.value,
                why=decision.why,
                error=str(exc),
            )
        return RelayAck(
            meter_id=self.meter_id,
            command_id=command_id,
            relay=state.value,
            switched=True,
            why=decision.why,
        )

    async def _switch(self, agent: ProsumerAgent, decision: RelayDecision) -> RelayState:
        """Switch the relay through the meter's protocol; a meter that refuses raises an alarm."""
        try:
            state = await self.meter.command(SetRelay(decision.state))
            self.relay = state
        except MeterError as exc:
            log.error("%s: switching the relay %s failed: %s", agent.name, decision.state, exc)
            await self._alarm(agent, "prepaid-relay-failed", str(exc), True)
            raise
        self.switches.append((self.clock.now(), state, decision.why))
        log.info("%s: relay %s (%s)", agent.name, state.value, decision.why)
        if state is not decision.state:
            await self._alarm(
                agent,
                "prepaid-relay-failed",
                f"the meter reports its relay {state.value} after it was told "
                f"{decision.state.value}",
                True,
            )
        return state

    async def _alarm(self, agent: ProsumerAgent, code: str, message: str, active: bool) -> None:
        if agent.alarms_to is None:
            return
        notice = DeviceAlarmNotice(
            meter_id=self.meter_id,
            device=str(self.meter.url),
            kind="prepaid",
            code=code,
            message=message,
            active=active,
            at=datetime.now(UTC),
        )
        await agent.send(agent.alarms_to, Performative.INFORM, notice)


def _warning_text(warning: CreditWarning) -> str:
    source = "estimated on the board" if warning.local else "on chain"
    return (
        f"prepaid credit of meter {warning.meter_id} is {warning.credit_units} units "
        f"({source}), below the warning level {warning.threshold_units}: top up"
    )
