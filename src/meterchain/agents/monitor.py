"""Asset monitoring: the operator's MonitorAgent records what the community does and raises
alarms; boards report to it with heartbeats.

Each board sends a `Heartbeat` after each phase it handles (its meter's registers, voltage
and relay, or why the meter did not answer; its battery; the configuration in force). The
monitor joins the community group, so it also sees every clearing and delivery notice. It
writes all of it to the operator's store (`meterchain.store.community`), where the web
interface reads it, and it raises and ends alarms:

- `meter-not-answering`: the board could not read its meter; ends with the next good read;
- `agent-offline`: no heartbeat for `offline_after_s`; ends with the next heartbeat;
- `reading-refused` (from the market agent) and `settlement-failed`: instant, acknowledged;
- `settlement-late`: orders seen for an interval but no clearing `late_after_s` after it began;
- `battery-limits`: state of charge outside the battery's bounds;
- `voltage`: supply voltage outside PRODIST Module 8's adequate range (precarious: warning,
  critical: critical);
- prepaid supply: `prepaid-low-credit` (instant) from the prepaid agent's `CreditWarning`s
  and the boards' own estimates; `prepaid-grace` and `prepaid-cut-off` while the
  PrepaidMeter says so (its StateChanged events, read with `prepaid_states`);
  `prepaid-relay-failed` from the board; other device faults as `device-fault`.

Every alarm that starts or ends is published on the bus to the `alarms` group and, when a
webhook URL is set, posted to it as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from meterchain.agents.messages import (
    AlarmNotice,
    ClearingNotice,
    ConfigAck,
    ConfigUpdate,
    DeliveryNotice,
    DeviceAlarmNotice,
    Heartbeat,
    PhaseName,
    SignerChanged,
    TariffNotice,
    TradingConfig,
    VoidNotice,
)
from meterchain.agents.prepaid import CreditWarning
from meterchain.agents.prodist import VoltageClass, classify
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative
from meterchain.clock import Clock
from meterchain.store.community import (
    AlarmRow,
    BoardConfigRow,
    MarketIntervalRow,
    MeterIntervalRow,
    MeterRow,
    TradeRow,
    end_alarm,
    raise_alarm,
)
from meterchain.store.db import Store
from meterchain.store.records import Records

if TYPE_CHECKING:
    from meterchain.agents.prosumer import ProsumerAgent

log = logging.getLogger(__name__)

ALARM_GROUP = "alarms"
SOC_MARGIN = 0.02  # a battery this far outside its bounds raises battery-limits
BalanceReader = Callable[[list[str]], dict[str, int]]
"""meter ids -> their balances on chain in smallest credit units."""


@dataclass(frozen=True)
class PrepaidStateChange:
    """A prepaid meter's supply state changed on chain (PrepaidMeter's StateChanged)."""

    meter_id: str
    previous: str
    state: str  # "supplied" | "grace" | "cut_off"
    reason: str  # why it is in grace (e.g. "night", "emergency_credit")
    credit: Decimal  # currency units
    block: int


PrepaidStateReader = Callable[[int], tuple[list[PrepaidStateChange], int]]
"""from block -> the state changes from it on, and the block to read from next time."""
PREPAID_CURSOR = ("cursor", "prepaid-states")
BOARD_ESTIMATE = "estimated on the board"  # a board's own low-credit warning (agents/prepaid.py)


async def send_heartbeat(agent: ProsumerAgent, interval: int, phase: PhaseName) -> None:
    """A board's heartbeat to its monitor (if it has one) after handling a phase."""
    if agent.monitor is None:
        return
    reading = agent.last_reading
    battery = agent.planner.site.battery
    soc = None
    if agent.battery is not None:
        try:
            soc = await agent.battery.soc_fraction()
        except (OSError, ValueError) as exc:
            log.warning("%s: no state of charge for the heartbeat: %s", agent.name, exc)
    setpoint = None
    prepared = agent.records.get("orders", str(interval))
    if prepared is not None and prepared.get("battery_power_w") is not None:
        setpoint = float(prepared["battery_power_w"])
    handler = getattr(agent.planner, "handler", None)
    fresh = reading is not None and agent.last_meter_error is None
    await agent.send(
        agent.monitor,
        Performative.INFORM,
        Heartbeat(
            meter_id=agent.meter_id,
            interval=interval,
            phase=phase,
            at=agent.clock.now(),
            import_wh=reading.import_wh if fresh and reading else None,
            export_wh=reading.export_wh if fresh and reading else None,
            power_w=reading.power_w if fresh and reading else None,
            voltage_v=reading.voltage_v if fresh and reading else None,
            relay=reading.relay.value if fresh and reading else None,
            meter_error=agent.last_meter_error,
            soc_fraction=soc,
            soc_min_fraction=_soc_min(battery),
            soc_max_fraction=battery.soc_max_fraction if battery is not None else None,
            battery_power_w=setpoint,
            config_version=0 if handler is None else handler.version,
        ),
    )


def _soc_min(battery: object) -> float | None:
    """The battery's own lower bound (a reserve above the charge is a plan, not a fault)."""
    return None if battery is None else float(getattr(battery, "soc_min_fraction", 0.0))


class MonitorAgent(Agent):
    """Records the community for the web interface and raises alarms (one per community)."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        *,
        store: Store,
        clock: Clock,
        interval_s: int = 900,
        community: str = "community",
        market: str = "market",
        tariffs: TariffNotice | None = None,
        offline_after_s: float | None = None,
        late_after_s: float | None = None,
        check_every_s: float = 1.0,
        balances: BalanceReader | None = None,
        webhook_url: str | None = None,
        prepaid_states: PrepaidStateReader | None = None,
        prepaid_poll_s: float = 5.0,
        decimals: int = 2,
    ) -> None:
        super().__init__(name, bus)
        self.store = store
        self.clock = clock
        self.interval_s = interval_s
        self.community = community
        self.market = market
        self.tariffs = tariffs or TariffNotice(retail_price=0.95, feed_in_price=0.25)
        self.offline_after_s = offline_after_s if offline_after_s is not None else 2 * interval_s
        self.late_after_s = late_after_s if late_after_s is not None else interval_s
        self.check_every_s = check_every_s
        self.balances = balances
        self.webhook_url = webhook_url
        self.ordered: dict[int, datetime] = {}  # intervals with orders, not cleared yet
        self.webhook_failures = 0
        self.prepaid_states = prepaid_states
        self.prepaid_poll_s = prepaid_poll_s
        self.decimals = decimals
        self._prepaid_next_poll = 0.0
        self._records: Records | None = None
        self._prepaid_cursor = 0

    async def setup(self) -> None:
        await self.bus.join(self.name, self.community)

    # ---- what the web asks of the boards and the market ----------------------------------

    async def push_config(
        self, meter_id: str, version: int, config: TradingConfig, requested_by: str
    ) -> None:
        """Send a stored configuration to the meter's board (its ack comes back here)."""
        await self.send(
            f"prosumer-{meter_id}",
            Performative.REQUEST,
            ConfigUpdate(
                meter_id=meter_id, version=version, config=config, requested_by=who(requested_by)
            ),
        )

    async def signer_changed(self, meter_id: str) -> None:
        await self.send(self.market, Performative.INFORM, SignerChanged(meter_id=meter_id))

    async def announce_tariffs(self, tariffs: TariffNotice, grid: str | None = "grid") -> None:
        """New tariffs for the community (and the grid agent, which announces them on)."""
        # The feeder's limit is the grid agent's to share out; a board would take it as its own.
        self.tariffs = tariffs.model_copy(update={"max_export_w": None})
        await self.send(self.community, Performative.INFORM, self.tariffs)
        await self.send(self.market, Performative.INFORM, self.tariffs)
        if grid is not None:
            await self.send(grid, Performative.INFORM, tariffs)

    # ---- what arrives ---------------------------------------------------------------------

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, Heartbeat):
            await self.on_heartbeat(content)
        elif isinstance(content, ClearingNotice):
            await self.on_cleared(content)
        elif isinstance(content, VoidNotice):
            await self.on_void(content)
        elif isinstance(content, DeliveryNotice):
            await self.on_delivered(content)
        elif isinstance(content, AlarmNotice):
            await self.on_alarm(content)
        elif isinstance(content, ConfigAck):
            self.on_config_ack(content)
        elif isinstance(content, CreditWarning):
            await self.on_credit_warning(content)
        elif isinstance(content, DeviceAlarmNotice):
            await self.on_device_alarm(content)
        elif isinstance(content, TariffNotice) and envelope.sender != self.name:
            self.tariffs = content

    async def act(self) -> None:
        while True:
            await asyncio.sleep(self.check_every_s)
            try:
                await self.check()
            except Exception:
                log.exception("%s: the periodic check failed", self.name)

    async def check(self) -> None:
        """Boards gone silent, settlements running late, prepaid meters' state changes."""
        loop = asyncio.get_running_loop()
        if self.prepaid_states is not None and loop.time() >= self._prepaid_next_poll:
            self._prepaid_next_poll = loop.time() + self.prepaid_poll_s
            try:
                await self.poll_prepaid()
            except Exception as exc:  # the chain may be away; the cursor keeps the place
                log.warning("%s: could not read the prepaid meters' states: %s", self.name, exc)
        now = self.clock.now()
        notices: list[AlarmNotice] = []
        with self.store.session() as session:
            silent = session.scalars(
                select(MeterRow).where(
                    MeterRow.last_seen_at.is_not(None),
                    MeterRow.last_seen_at < now - timedelta(seconds=self.offline_after_s),
                    MeterRow.board_status != "offline",
                )
            ).all()
            for meter in silent:
                meter.board_status = "offline"
                message = (
                    f"the board of meter {meter.meter_id} has sent no heartbeat since "
                    f"{_aware(meter.last_seen_at)}"
                )
                notices += self._raise(
                    session, "agent-offline", meter.meter_id, "critical", message, now
                )
            for interval in list(self.ordered):
                start = datetime.fromtimestamp(interval, UTC)
                if now >= start + timedelta(seconds=self.late_after_s):
                    message = (
                        f"interval {start.isoformat()} had orders but no clearing "
                        f"{self.late_after_s:g} s after it began"
                    )
                    notices += self._raise(
                        session, "settlement-late", None, "critical", message, now
                    )
                    del self.ordered[interval]
        await self._publish(notices)

    async def on_heartbeat(self, beat: Heartbeat) -> None:
        notices: list[AlarmNotice] = []
        at = beat.at
        meter_id = beat.meter_id
        with self.store.session() as session:
            meter = session.get(MeterRow, meter_id)
            if meter is None:
                meter = new_meter(meter_id)
                session.add(meter)
            meter.last_seen_at = at
            if meter.board_status == "offline":
                notices += self._end(session, "agent-offline", meter_id, at)
            meter.config_version = beat.config_version
            if beat.meter_error is not None:
                meter.board_status = "meter-error"
                meter.meter_error = beat.meter_error
                message = f"meter {meter_id} is not answering its board: {beat.meter_error}"
                notices += self._raise(
                    session, "meter-not-answering", meter_id, "critical", message, at
                )
            else:
                meter.board_status = "online"
                meter.meter_error = None
                notices += self._end(session, "meter-not-answering", meter_id, at)
            if beat.import_wh is not None:
                meter.last_reading_at = at
                meter.last_import_wh = beat.import_wh
                meter.last_export_wh = beat.export_wh
                meter.last_power_w = beat.power_w
                meter.last_voltage_v = beat.voltage_v
                meter.relay = beat.relay
            if beat.soc_fraction is not None:
                meter.last_soc_fraction = beat.soc_fraction
            if beat.voltage_v is not None:
                notices += self._voltage(session, meter, beat.voltage_v, at)
            notices += self._battery(session, meter_id, beat, at)
            if beat.phase == "order":
                self.ordered.setdefault(beat.interval, at)
                if beat.config_version:
                    self._mark_applied(session, meter_id, beat.config_version, beat.interval, at)
            if beat.phase == "delivery" and beat.import_wh is not None:
                self._record_interval(session, beat)
        await self._publish(notices)

    def _voltage(
        self, session: Session, meter: MeterRow, voltage_v: float, at: datetime
    ) -> list[AlarmNotice]:
        try:
            found = classify(voltage_v, meter.nominal_voltage_v)
        except ValueError:
            return []
        if found is VoltageClass.ADEQUATE:
            return self._end(session, "voltage", meter.meter_id, at)
        severity = "critical" if found is VoltageClass.CRITICAL else "warning"
        message = (
            f"supply voltage {voltage_v:.1f} V at meter {meter.meter_id} is {found.value} "
            f"for a nominal {meter.nominal_voltage_v:g} V (PRODIST Module 8)"
        )
        return self._raise(session, "voltage", meter.meter_id, severity, message, at)

    def _battery(
        self, session: Session, meter_id: str, beat: Heartbeat, at: datetime
    ) -> list[AlarmNotice]:
        soc = beat.soc_fraction
        if soc is None or beat.soc_min_fraction is None or beat.soc_max_fraction is None:
            return []
        low, high = beat.soc_min_fraction - SOC_MARGIN, beat.soc_max_fraction + SOC_MARGIN
        if low <= soc <= high:
            return self._end(session, "battery-limits", meter_id, at)
        message = (
            f"battery of meter {meter_id} at {soc:.0%}, outside its limits "
            f"{beat.soc_min_fraction:.0%}–{beat.soc_max_fraction:.0%}"
        )
        return self._raise(session, "battery-limits", meter_id, "warning", message, at)

    def _record_interval(self, session: Session, beat: Heartbeat) -> None:
        start = datetime.fromtimestamp(beat.interval, UTC)
        previous = session.scalars(
            select(MeterIntervalRow)
            .where(
                MeterIntervalRow.meter_id == beat.meter_id,
                MeterIntervalRow.interval_start < start,
            )
            .order_by(MeterIntervalRow.interval_start.desc())
            .limit(1)
        ).first()
        import_wh = float(beat.import_wh or 0.0)
        export_wh = float(beat.export_wh or 0.0)
        imported = max(import_wh - previous.import_wh, 0.0) if previous else 0.0
        exported = max(export_wh - previous.export_wh, 0.0) if previous else 0.0
        bought = sold = savings = 0.0
        for trade in session.scalars(
            select(TradeRow).where(
                TradeRow.interval == beat.interval,
                (TradeRow.buyer == beat.meter_id) | (TradeRow.seller == beat.meter_id),
            )
        ):
            if trade.buyer == beat.meter_id:
                bought += trade.quantity_wh
                savings += trade.quantity_wh * (self.tariffs.retail_price - trade.price) / 1000
            else:
                sold += trade.quantity_wh
                savings += trade.quantity_wh * (trade.price - self.tariffs.feed_in_price) / 1000
        row = session.scalars(
            select(MeterIntervalRow).where(
                MeterIntervalRow.meter_id == beat.meter_id,
                MeterIntervalRow.interval_start == start,
            )
        ).first()
        if row is None:
            row = MeterIntervalRow(meter_id=beat.meter_id, interval_start=start)
            session.add(row)
        row.import_wh, row.export_wh = import_wh, export_wh
        row.imported_wh, row.exported_wh = imported, exported
        row.bought_wh, row.sold_wh, row.savings = bought, sold, savings
        row.power_w, row.voltage_v = beat.power_w, beat.voltage_v
        row.soc_fraction, row.battery_power_w = beat.soc_fraction, beat.battery_power_w

    def _mark_applied(
        self, session: Session, meter_id: str, version: int, interval: int, at: datetime
    ) -> None:
        row = session.scalars(
            select(BoardConfigRow).where(
                BoardConfigRow.meter_id == meter_id, BoardConfigRow.version == version
            )
        ).first()
        start = datetime.fromtimestamp(interval, UTC)
        effective = _aware(row.effective_from) if row is not None else None
        # A plan made while the update was arriving may carry its version: not yet in force.
        if (
            row is not None
            and row.status == "accepted"
            and (effective is None or start >= effective)
        ):
            row.status = "applied"
            row.applied_at = start

    async def on_cleared(self, notice: ClearingNotice) -> None:
        now = self.clock.now()
        notices: list[AlarmNotice] = []
        self.ordered.pop(notice.interval, None)
        with self.store.session() as session:
            row = self._interval(session, notice.interval)
            row.price = notice.price
            row.trades = len(notice.trades)
            row.traded_wh = float(sum(t.quantity_wh for t in notice.trades))
            row.batch_tx, row.batch_gas = notice.tx_hash, notice.gas_used
            row.error = notice.error
            row.cleared_at = now
            session.execute(delete(TradeRow).where(TradeRow.interval == notice.interval))
            session.add_all(
                TradeRow(
                    interval=notice.interval,
                    buyer=t.buyer,
                    seller=t.seller,
                    quantity_wh=t.quantity_wh,
                    price=t.price,
                )
                for t in notice.trades
            )
            notices += self._end(session, "settlement-late", None, now)
            if notice.error is not None:
                message = f"the batch of interval {notice.interval} failed: {notice.error}"
                notices += self._raise(
                    session, "settlement-failed", None, "critical", message, now, instant=True
                )
        await self._publish(notices)

    async def on_void(self, notice: VoidNotice) -> None:
        """The market voided an interval: its orders are void and the boards settled with the
        grid. The interval shows it, and an alarm (warning) says why."""
        now = self.clock.now()
        with self.store.session() as session:
            row = self._interval(session, notice.interval)
            row.void_reason = notice.reason
            start = datetime.fromtimestamp(notice.interval, UTC).isoformat()
            message = f"interval {start} is void: {notice.reason}"
            notices = self._raise(
                session, "interval-void", None, "warning", message, now, instant=True
            )
        await self._publish(notices)

    async def on_delivered(self, notice: DeliveryNotice) -> None:
        now = self.clock.now()
        notices: list[AlarmNotice] = []
        balances: dict[str, int] = {}
        if self.balances is not None and notice.error is None:
            with self.store.session() as session:
                ids = list(session.scalars(select(MeterRow.meter_id)))
            reader = self.balances
            try:
                balances = await asyncio.to_thread(reader, ids)
            except Exception as exc:  # the chain may be away; balances come next time
                log.warning("%s: could not read the balances: %s", self.name, exc)
        start = datetime.fromtimestamp(notice.interval, UTC)
        with self.store.session() as session:
            row = self._interval(session, notice.interval)
            row.delivery_tx, row.delivery_gas = notice.tx_hash, notice.gas_used
            row.missing_readings = json.dumps(notice.missing_readings)
            if notice.error is not None:
                row.error = notice.error
                message = f"the delivery of interval {start.isoformat()} failed: {notice.error}"
                notices += self._raise(
                    session, "settlement-failed", None, "critical", message, now, instant=True
                )
            else:
                row.delivered_at = now
            totals = session.execute(
                select(
                    func.coalesce(func.sum(MeterIntervalRow.imported_wh), 0.0),
                    func.coalesce(func.sum(MeterIntervalRow.exported_wh), 0.0),
                    func.coalesce(func.sum(MeterIntervalRow.savings), 0.0),
                ).where(MeterIntervalRow.interval_start == start)
            ).one()
            row.imported_wh, row.exported_wh, row.savings = (float(v) for v in totals)
            missing = set(notice.missing_readings)
            for meter in session.scalars(select(MeterRow)):
                if notice.error is None and meter.meter_id not in missing and not meter.revoked:
                    meter.last_settled_interval = notice.interval
                balance = balances.get(meter.meter_id)
                if balance is not None:
                    meter.balance_units = balance
            for reading in session.scalars(
                select(MeterIntervalRow).where(MeterIntervalRow.interval_start == start)
            ):
                balance = balances.get(reading.meter_id)
                if balance is not None:
                    reading.balance_units = balance
        await self._publish(notices)

    async def on_alarm(self, alarm: AlarmNotice) -> None:
        # The monitor's clock times every alarm (the sender's may be another: a market
        # agent knows no virtual time).
        alarm = alarm.model_copy(update={"at": self.clock.now()})
        with self.store.session() as session:
            if alarm.active:
                instant = alarm.kind in ("reading-refused", "settlement-failed", "order-refused")
                notices = self._raise(
                    session, alarm.kind, alarm.meter_id, alarm.severity, alarm.message,
                    alarm.at, instant=instant,
                )  # fmt: skip
            else:
                notices = self._end(session, alarm.kind, alarm.meter_id, alarm.at)
        await self._publish(notices)

    # ---- prepaid supply ----------------------------------------------------------------------

    async def on_credit_warning(self, warning: CreditWarning) -> None:
        """A low-credit threshold crossed (the prepaid agent's, from the chain): an alarm that
        waits for an acknowledgement."""
        credit = self._money(warning.credit_units)
        level = self._money(warning.threshold_units)
        source = "estimated on the board" if warning.local else "on chain"
        message = (
            f"prepaid credit of meter {warning.meter_id} is {credit} ({source}), below the "
            f"warning level {level}: top up"
        )
        with self.store.session() as session:
            notices = self._raise(
                session, "prepaid-low-credit", warning.meter_id, "warning", message,
                self.clock.now(), instant=True,
            )  # fmt: skip
        await self._publish(notices)

    async def on_device_alarm(self, alarm: DeviceAlarmNotice) -> None:
        """A board's device alarm: its prepaid ones under their own kinds, others as
        `device-fault`."""
        now = self.clock.now()
        kind = alarm.code if alarm.kind == "prepaid" else "device-fault"
        if kind == "prepaid-low-credit" and BOARD_ESTIMATE not in alarm.message:
            return  # the board repeating the chain's warning: the prepaid agent's came here
        message = alarm.message if alarm.kind == "prepaid" else f"{alarm.device}: {alarm.message}"
        instant = kind == "prepaid-low-credit"
        with self.store.session() as session:
            if alarm.active:
                severity = "warning" if instant else "critical"
                notices = self._raise(
                    session, kind, alarm.meter_id, severity, message, now, instant=instant
                )
            else:
                notices = self._end(session, kind, alarm.meter_id, now)
        await self._publish(notices)

    async def poll_prepaid(self) -> int:
        """Read the PrepaidMeter's state changes since the last time (the cursor is kept in the
        store) and raise or end the grace and cut-off alarms; the number of changes read."""
        assert self.prepaid_states is not None
        if self._records is None:
            self._records = Records(self.store, self.name)
            kept = self._records.get(*PREPAID_CURSOR)
            self._prepaid_cursor = int(kept["block"]) if kept else 0
        reader = self.prepaid_states
        changes, following = await asyncio.to_thread(reader, self._prepaid_cursor)
        self._prepaid_cursor = following
        if not changes:  # nothing to keep: a restart reads those blocks again, harmlessly
            return 0
        now = self.clock.now()
        notices: list[AlarmNotice] = []
        with self.store.session() as session:
            for change in changes:
                notices += self._prepaid_state(session, change, now)
        self._records.put(*PREPAID_CURSOR, {"block": following})
        await self._publish(notices)
        return len(changes)

    def _prepaid_state(
        self, session: Session, change: PrepaidStateChange, at: datetime
    ) -> list[AlarmNotice]:
        meter_id = change.meter_id
        credit = f"{change.credit:.2f}"
        notices: list[AlarmNotice] = []
        if change.state != "cut_off":
            notices += self._end(session, "prepaid-cut-off", meter_id, at)
        if change.state != "grace":
            notices += self._end(session, "prepaid-grace", meter_id, at)
        if change.state == "cut_off":
            message = (
                f"meter {meter_id} is cut off: its prepaid credit is {credit}; a top-up above "
                "zero reconnects it"
            )
            notices += self._raise(session, "prepaid-cut-off", meter_id, "critical", message, at)
        elif change.state == "grace":
            message = (
                f"meter {meter_id} is supplied in grace ({change.reason.replace('_', ' ')}) "
                f"with a prepaid credit of {credit}: top up"
            )
            notices += self._raise(session, "prepaid-grace", meter_id, "warning", message, at)
        return notices

    def _money(self, units: int) -> str:
        return f"{Decimal(units) / (Decimal(10) ** self.decimals):.2f}"

    def on_config_ack(self, ack: ConfigAck) -> None:
        now = self.clock.now()
        with self.store.session() as session:
            row = session.scalars(
                select(BoardConfigRow).where(
                    BoardConfigRow.meter_id == ack.meter_id, BoardConfigRow.version == ack.version
                )
            ).first()
            if row is None:
                log.warning("%s: ack for unknown configuration %s", self.name, ack)
                return
            if row.status in ("sent", "accepted"):
                row.status = "accepted" if ack.accepted else "refused"
            row.reason = ack.reason
            row.acked_at = now
            row.effective_from = ack.effective_from

    # ---- alarms ---------------------------------------------------------------------------

    def _interval(self, session: Session, interval: int) -> MarketIntervalRow:
        row = session.get(MarketIntervalRow, interval)
        if row is None:
            row = MarketIntervalRow(
                interval=interval,
                interval_start=datetime.fromtimestamp(interval, UTC),
                retail_price=self.tariffs.retail_price,
                feed_in_price=self.tariffs.feed_in_price,
                orders=0,
                trades=0,
                traded_wh=0.0,
                imported_wh=0.0,
                exported_wh=0.0,
                savings=0.0,
                batch_gas=0,
                delivery_gas=0,
            )
            session.add(row)
        return row

    def _raise(
        self,
        session: Session,
        kind: str,
        meter_id: str | None,
        severity: str,
        message: str,
        at: datetime,
        *,
        instant: bool = False,
    ) -> list[AlarmNotice]:
        row = raise_alarm(
            session,
            kind=kind,
            meter_id=meter_id,
            severity=severity,
            message=message,
            at=at,
            instant=instant,
        )
        if row is None:
            return []
        log.info("%s: alarm %s: %s", self.name, kind, message)
        return [_notice(row, active=True)]

    def _end(
        self, session: Session, kind: str, meter_id: str | None, at: datetime
    ) -> list[AlarmNotice]:
        row = end_alarm(session, kind=kind, meter_id=meter_id, at=at)
        return [] if row is None else [_notice(row, active=False, at=at)]

    async def _publish(self, notices: list[AlarmNotice]) -> None:
        for notice in notices:
            await self.send(ALARM_GROUP, Performative.INFORM, notice)
            if self.webhook_url is not None:
                await asyncio.to_thread(self._post, notice)

    def _post(self, notice: AlarmNotice) -> None:
        assert self.webhook_url is not None
        body = notice.model_dump_json().encode()
        request = urllib.request.Request(
            self.webhook_url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            self.webhook_failures += 1
            log.warning("%s: the alarm webhook %s failed: %s", self.name, self.webhook_url, exc)


def new_meter(meter_id: str, **fields: object) -> MeterRow:
    """A meter row with every non-null column given a value."""
    values: dict[str, object] = {
        "meter_id": meter_id,
        "protocol": "unknown",
        "kind": "prosumer",
        "revoked": False,
        "pv_kwp": 0.0,
        "battery_kwh": 0.0,
        "nominal_voltage_v": 220.0,
        "board_status": "unknown",
        "config_version": 0,
    }
    values.update(fields)
    return MeterRow(**values)


def who(user: str) -> str:
    return user[:64]


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _notice(row: AlarmRow, *, active: bool, at: datetime | None = None) -> AlarmNotice:
    return AlarmNotice(
        kind=row.kind,
        severity=row.severity,  # type: ignore[arg-type]
        meter_id=row.meter_id,
        message=row.message,
        active=active,
        at=at or row.started_at,
    )


class AlarmListener(Agent):
    """Anyone on the bus who wants the alarms: joins the `alarms` group, keeps the latest."""

    def __init__(self, name: str, bus: Bus, *, keep: int = 1000) -> None:
        super().__init__(name, bus)
        self.keep = keep
        self.received: list[AlarmNotice] = []

    async def setup(self) -> None:
        await self.bus.join(self.name, ALARM_GROUP)

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, AlarmNotice):
            self.received.append(content)
            del self.received[: -self.keep]
