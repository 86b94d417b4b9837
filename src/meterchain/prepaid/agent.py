"""PrepaidAgent: the operator's side of prepaid supply. Runs beside the market agent.

After each delivery the market agent publishes (`DeliveryNotice` to the community), it sends
one `assessMany` transaction for the prepaid meters, so the contract lends, warns, cuts off
and reconnects by its rules; then it reads every meter's credit and sends each board a
`PrepaidUpdate` (the chain's word and the registers it is net of) and forwards `LowCredit`
events as `CreditWarning`s to the board and the alarms group. Boards answer `RelayAck`;
a board whose relay does not match the chain's state gets the update again at the next
round. Between deliveries it polls the chain (`poll_s`), so a top-up reconnects a meter
within seconds; `PrepaidCheck` asks for a round at once.

Chain calls are retried with back-off while the node is unreachable; the assessment goes
through the sender's outbox under a key per interval, so a restart never sends it twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import BaseModel

from meterchain.agents.market import TRANSIENT_CHAIN_ERRORS
from meterchain.agents.messages import Ack, DeliveryNotice
from meterchain.agents.prepaid import CreditWarning, PrepaidCheck, PrepaidUpdate, RelayAck
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative
from meterchain.chain.errors import ChainError
from meterchain.chain.signing import bytes32_to_meter_id, meter_id_to_bytes32
from meterchain.clock import Clock
from meterchain.prepaid.client import PrepaidMeterClient, PrepaidStatus, SupplyState
from meterchain.prepaid.ledger import ChainState
from meterchain.prepaid.rules import CutOffRules
from meterchain.store.records import Records

log = logging.getLogger(__name__)
T = TypeVar("T")
UpdateEvent = Literal["sync", "cut-off", "reconnect"]
HOLIDAYS_AHEAD_DAYS = 14  # holidays a board learns about, for deciding alone while offline


@dataclass
class BoardRelay:
    """What the agent knows of one board's relay."""

    relay: str | None = None  # as the board last reported it
    pending: str | None = None  # command id of an update not acknowledged yet
    state: SupplyState | None = None  # the chain's state in the last update


class PrepaidAgent(Agent):
    """Assesses the prepaid meters after each delivery and tells their boards."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        *,
        prepaid: PrepaidMeterClient,
        records: Records,
        clock: Clock,
        boards: Mapping[str, str],
        community: str = "community",
        coordinator: str | None = None,
        alarms_to: str | None = None,
        poll_s: float | None = 15.0,
        chain_retry_max_s: float = 5.0,
        from_block: int = 0,
    ) -> None:
        super().__init__(name, bus)
        self.prepaid = prepaid
        self.records = records
        self.clock = clock
        self.boards = dict(boards)  # meter id -> the board agent's name
        self.community = community
        self.coordinator = coordinator
        self.alarms_to = alarms_to
        self.poll_s = poll_s
        self.chain_retry_max_s = chain_retry_max_s
        self.relays = {meter: BoardRelay() for meter in self.boards}
        self.updates_sent: dict[int, int] = {}  # interval -> updates sent for it
        self.warnings_sent = 0
        self.chain_retries = 0
        self._lock = asyncio.Lock()
        self._rules: CutOffRules | None = None
        cursor = records.get("cursor", "low-credit")
        self._cursor = int(cursor["block"]) if cursor else from_block
        self._holidays: tuple[int, list[int]] | None = None  # (first day, holidays)

    async def setup(self) -> None:
        await self.bus.join(self.name, self.community)

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, DeliveryNotice):
            if content.error is None:
                await self.round(content.interval, assess=True)
        elif isinstance(content, PrepaidCheck):
            await self.round(content.interval, assess=content.assess, what="prepaid-check")
        elif isinstance(content, RelayAck):
            self.on_ack(content)

    async def act(self) -> None:
        if self.poll_s is None:
            return
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.round(0, assess=False, what=None)
            except ChainError as exc:
                log.error("%s: reading the prepaid meters failed: %s", self.name, exc)

    def on_ack(self, ack: RelayAck) -> None:
        board = self.relays.get(ack.meter_id)
        if board is None:
            return
        if board.pending == ack.command_id:
            board.pending = None
        if ack.relay is not None:
            board.relay = ack.relay
        if ack.error is not None:
            log.error("%s: board of meter %s: %s", self.name, ack.meter_id, ack.error)

    async def round(self, interval: int, *, assess: bool, what: str | None = "prepaid") -> int:
        """Assess (after a delivery), read the credit and tell the boards; the number of
        updates sent (each is acknowledged by its board)."""
        async with self._lock:
            meters = sorted(self.boards)
            if assess and meters:
                # Through the outbox when there is one: a restart finishes the same transaction.
                key = f"prepaid-assess:{interval}" if self.prepaid.sender.outbox else None
                await self._on_chain(
                    f"assess {len(meters)} prepaid meters",
                    lambda: self.prepaid.assess_many(meters, key=key),
                )
            await self._forward_warnings()  # warn first, then the relay decisions
            sent = await self._tell_boards(interval, meters, every=what is not None)
        self.updates_sent[interval] = self.updates_sent.get(interval, 0) + sent
        if what is not None and self.coordinator is not None:
            await self.send(
                self.coordinator, Performative.INFORM, Ack(what=what, interval=interval)
            )
        return sent

    async def _tell_boards(self, interval: int, meters: list[str], *, every: bool) -> int:
        """Send the updates: to every board after a delivery or a check; on a poll only to
        boards whose chain state changed or whose relay does not match it yet."""
        if not meters:
            return 0
        client = self.prepaid
        statuses = await self._on_chain("read the prepaid credit", lambda: client.statuses(meters))
        accounts = await self._on_chain(
            "read the settled registers", lambda: client.market_accounts(meters)
        )
        retail, feed_in = await self._on_chain("read the tariffs", client.market.tariffs)
        emergency = await self._on_chain("read the emergency credit", client.emergency_credit)
        thresholds = await self._on_chain("read the thresholds", client.thresholds)
        rules = await self._cut_off_rules()
        holidays = await self._holidays_ahead(rules)
        sent = 0
        for meter in meters:
            raw = meter_id_to_bytes32(meter)
            status = statuses[raw]
            if status.state is SupplyState.NOT_ENROLLED:
                continue
            board = self.relays[meter]
            event = _event(board.state, status.state)
            desired = "off" if status.state is SupplyState.CUT_OFF else "on"
            if not (every or event != "sync" or board.pending or board.relay != desired):
                continue
            account = accounts[raw]
            command_id = uuid.uuid4().hex
            update = PrepaidUpdate(
                meter_id=meter,
                command_id=command_id,
                event=event,
                interval=interval,
                credit_units=status.credit,
                state=ChainState(status.state.label),
                since=status.since,
                emergency_units=emergency,
                settled_import_wh=account[1],
                settled_export_wh=account[2],
                retail_units=retail,
                feed_in_units=feed_in,
                never_cut=status.never_cut,
                utc_offset_s=rules.utc_offset_s,
                cut_from_hour=rules.cut_from_hour,
                cut_to_hour=rules.cut_to_hour,
                cut_weekdays=rules.cut_weekdays,
                no_cut_on_holiday_eve=rules.no_cut_on_holiday_eve,
                holidays=holidays,
                thresholds=thresholds,
            )
            if event != "sync":
                log.info("%s: meter %s: %s (credit %d)", self.name, meter, event, status.credit)
            board.pending = command_id
            board.state = status.state
            await self.send(self.boards[meter], Performative.REQUEST, update)
            sent += 1
        return sent

    async def _forward_warnings(self) -> None:
        """LowCredit events since the last round, to the board and the alarms group."""
        client = self.prepaid
        latest = await self._on_chain("read the block number", lambda: client.w3.eth.block_number)
        if latest < self._cursor:
            return
        found = await self._on_chain(
            "read low-credit events",
            lambda: client.events("LowCredit", from_block=self._cursor, to_block=latest),
        )
        for event in found:
            meter = bytes32_to_meter_id(bytes(event["args"]["meterId"]))
            warning = CreditWarning(
                meter_id=meter,
                threshold_units=int(event["args"]["threshold"]),
                credit_units=int(event["args"]["credit"]),
                at=self.clock.now(),
            )
            for receiver in (self.boards.get(meter), self.alarms_to):
                if receiver is not None:
                    await self.send(receiver, Performative.INFORM, warning)
            self.warnings_sent += 1
        self._cursor = latest + 1
        self.records.put("cursor", "low-credit", {"block": self._cursor})

    async def _cut_off_rules(self) -> CutOffRules:
        if self._rules is None:
            self._rules = await self._on_chain("read the cut-off rules", self.prepaid.rules)
        return self._rules

    async def _holidays_ahead(self, rules: CutOffRules) -> list[int]:
        today = rules.local_day(int(self.clock.now().timestamp()))
        if self._holidays is None or self._holidays[0] != today:
            client = self.prepaid
            found = await self._on_chain(
                "read the holidays",
                lambda: client.holidays_between(today - 1, today + HOLIDAYS_AHEAD_DAYS),
            )
            self._holidays = (today, found)
        return self._holidays[1]

    async def _on_chain(self, what: str, call: Callable[[], T]) -> T:
        """A blocking chain call in a thread, retried with back-off while the node is away
        (the outbox makes a retried transaction the same one)."""
        delay = 0.2
        failures = 0
        while True:
            try:
                return await asyncio.to_thread(call)
            except TRANSIENT_CHAIN_ERRORS as exc:
                failures += 1
                self.chain_retries += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("%s: could not %s (try %d): %s", self.name, what, failures, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.chain_retry_max_s)


def _event(before: SupplyState | None, now: SupplyState) -> UpdateEvent:
    if now is SupplyState.CUT_OFF and before is not SupplyState.CUT_OFF:
        return "cut-off"
    if before is SupplyState.CUT_OFF and now is not SupplyState.CUT_OFF:
        return "reconnect"
    return "sync"


def status_text(status: PrepaidStatus) -> str:
    """One line for logs: the meter, its state and credit."""
    return f"meter {status.meter}: {status.state.label}, credit {status.credit}"
