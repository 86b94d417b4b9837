"""ProsumerAgent: one per board. Reads its meter, plans, trades, acts, and reports delivery.

Each interval has two moments for a prosumer: at `order` time it reads the meter, plans the
next interval, and sends signed orders; at `delivery` time (the interval's end) it reads the
meter again and sends the signed cumulative registers. Both steps are recorded in the store
first, so a restarted agent re-sends what it had prepared instead of preparing it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from eth_account.signers.local import LocalAccount
from pydantic import BaseModel

from meterchain.agents.messages import (
    Ack,
    ClearingNotice,
    ConfigUpdate,
    CurtailRequest,
    DeliveryNotice,
    DeviceAlarmNotice,
    NoOrder,
    OrderSubmission,
    PhaseName,
    ReadingSubmission,
    TariffNotice,
    Tick,
    VoidNotice,
)
from meterchain.agents.monitor import send_heartbeat
from meterchain.agents.planning import DerPlanner
from meterchain.agents.prepaid import CreditWarning, PrepaidBoard, PrepaidUpdate
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative
from meterchain.chain.signing import (
    MarketDomain,
    OrderMessage,
    OrderSide,
    ReadingMessage,
    meter_id_to_bytes32,
    sign_order,
    sign_reading,
)
from meterchain.chain.units import price_to_units
from meterchain.clock import Clock
from meterchain.devices.battery import BatteryDevice
from meterchain.devices.board import BoardDevices
from meterchain.devices.errors import DeviceError
from meterchain.meters.base import Meter
from meterchain.meters.errors import MeterError
from meterchain.model import Reading, Side
from meterchain.store.records import Records

log = logging.getLogger(__name__)
T = TypeVar("T")


def interval_key(start: datetime) -> str:
    return str(int(start.timestamp()))


class ProsumerAgent(Agent):
    """The agent on a meter's board."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        *,
        meter_id: str,
        meter: Meter,
        signer: LocalAccount,
        domain: MarketDomain,
        planner: DerPlanner,
        records: Records,
        clock: Clock,
        market: str = "market",
        community: str = "community",
        coordinator: str | None = None,
        battery: BatteryDevice | None = None,
        devices: BoardDevices | None = None,
        alarms_to: str | None = None,
        meter_retries: int = 3,
        retry_delay_s: float = 0.2,
        decimals: int = 2,
        prepaid: PrepaidBoard | None = None,
    ) -> None:
        super().__init__(name, bus)
        self.prepaid = prepaid  # prepaid supply: the relay follows the chain's credit
        self.meter_id = meter_id
        self.meter = meter
        self.signer = signer
        self.domain = domain
        self.planner = planner
        self.records = records
        self.clock = clock
        self.market = market
        self.community = community
        self.coordinator = coordinator
        self.devices = devices
        self.battery = battery if battery is not None or devices is None else devices.battery
        self.alarms_to = alarms_to
        self.meter_retries = meter_retries
        self.retry_delay_s = retry_delay_s
        self.decimals = decimals
        self.tariffs = TariffNotice(retail_price=0.95, feed_in_price=0.25)
        self.curtail: dict[str, float] = {}
        self.pending_battery_w: dict[str, float] = {}
        self.pending_exchange_wh: dict[str, tuple[float, float]] = {}
        self.pending_loads_w: dict[str, dict[str, float]] = {}
        self.last_read_at: datetime | None = None  # on the agent's clock
        self.monitor: str | None = None  # where heartbeats go (agents/monitor.py), if anywhere
        self.last_reading: Reading | None = None
        self.last_meter_error: str | None = None
        # Set while the store's disk is nearly full (board/supervisor.py): skip the writes
        # that can be dropped (load history, heartbeats); signed orders and readings go on.
        self.drop_optional_writes = False
        # Messages expire when the market can no longer use them (see bus_mqtt), in seconds
        # from the interval's start: orders when it could no longer clear them, readings when
        # it could no longer settle them. None: they never do (the simulation).
        self.order_expiry_s: float | None = None
        self.reading_expiry_s: float | None = None

    async def setup(self) -> None:
        await self.bus.join(self.name, self.community)

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, Tick):
            past_deadline = content.deadline is not None and self.clock.now() >= content.deadline
            if content.phase == "delivery":
                await self.report_delivery(content.interval_start, past_deadline=past_deadline)
            elif past_deadline:
                log.warning(
                    "%s: the %s tick of interval %s came after its deadline; skipped",
                    self.name,
                    content.phase,
                    interval_key(content.interval_start),
                )
            elif content.phase == "order":
                await self.submit_orders(content.interval_start)
        elif isinstance(content, VoidNotice):
            await self.on_void(content)
        elif isinstance(content, TariffNotice):
            self.tariffs = content
        elif isinstance(content, CurtailRequest):
            key = interval_key(content.interval_start)
            self.curtail[key] = content.max_export_w
            await self._limit_export(key)  # now, not at the next interval
        elif isinstance(content, ClearingNotice):
            await self.on_cleared(content)
        elif isinstance(content, DeliveryNotice):  # what the board knows of settlement
            self.records.put_once(
                "delivered",
                str(content.interval),
                {"tx_hash": content.tx_hash, "error": content.error,
                 "reading_missing": self.meter_id in content.missing_readings},
            )  # fmt: skip
        elif isinstance(content, ConfigUpdate):  # from the web interface, via the monitor
            handler = getattr(self.planner, "handler", None)  # agents/board_config.py
            if handler is not None:
                await handler.receive(self, envelope, content)
        elif self.prepaid is not None and isinstance(content, PrepaidUpdate | CreditWarning):
            await self.prepaid.handle(self, envelope, content)

    async def read_meter(self) -> Reading:
        """Read with retries and back-off; a bad reading is never recorded."""
        delay = self.retry_delay_s
        for attempt in range(1, self.meter_retries + 1):
            try:
                reading = await self.meter.read()
                self.last_read_at = self.clock.now()
                self.last_reading, self.last_meter_error = reading, None
                if self.prepaid is not None:
                    await self.prepaid.after_reading(self, reading)
                return reading
            except MeterError as exc:
                log.warning(
                    "%s: read %d/%d failed: %s", self.name, attempt, self.meter_retries, exc
                )
                if attempt == self.meter_retries:
                    self.last_meter_error = str(exc)
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _ack(self, what: str, interval: int) -> None:
        if self.coordinator is not None:
            await self.send(
                self.coordinator, Performative.INFORM, Ack(what=what, interval=interval)
            )

    async def submit_orders(self, interval_start: datetime) -> None:
        """Plan the interval and send its signed orders (or say there are none)."""
        key = interval_key(interval_start)
        interval = int(key)
        prepared = self.records.get("orders", key)
        if prepared is None:
            prepared = await self._prepare_orders(interval_start)
            prepared = self.records.put_once("orders", key, prepared)
        submissions = [OrderSubmission.model_validate(o) for o in prepared["orders"]]
        loads = prepared.get("loads_w")
        if isinstance(loads, dict) and loads:
            self.pending_loads_w[key] = {str(k): float(v) for k, v in loads.items()}
        if prepared.get("battery_power_w") is not None:
            self.pending_battery_w[key] = float(prepared["battery_power_w"])
            self.pending_exchange_wh[key] = (
                float(prepared.get("expected_import_wh", 0.0)),
                float(prepared.get("expected_export_wh", 0.0)),
            )
        expires_at = self._expiry(interval, "order")
        for submission in submissions:
            await self.send(self.market, Performative.PROPOSE, submission, expires_at=expires_at)
        if not submissions:
            await self.send(
                self.market,
                Performative.INFORM,
                NoOrder(meter_id=self.meter_id, interval=interval),
                expires_at=expires_at,
            )
        summary = ", ".join(
            f"{s.side} {s.quantity_wh} Wh at {s.limit_price_units / 10**self.decimals:g}"
            for s in submissions
        )
        log.info(
            "%s: sent %d orders for interval %d%s",
            self.name,
            len(submissions),
            interval,
            f": {summary}" if summary else "",
            extra={
                "event": "orders_sent",
                "interval": interval,
                "orders": [
                    {"side": s.side, "quantity_wh": s.quantity_wh, "limit": s.limit_price_units}
                    for s in submissions
                ],
            },
        )
        await self._ack("orders", interval)
        await self._heartbeat(interval, "order")

    async def _prepare_orders(self, interval_start: datetime) -> dict[str, object]:
        interval = int(interval_start.timestamp())
        last = self.last_read_at
        fresh = last is not None and abs((self.clock.now() - last).total_seconds()) < 60
        if not fresh:  # the reading at the end of the last interval is the one at this start
            try:
                reading = await self.read_meter()
                if not self.drop_optional_writes:
                    self.records.put_once("readings", f"{interval}:order", reading.as_json())
            except MeterError as exc:
                log.warning("%s: no meter reading before interval %d: %s", self.name, interval, exc)
        if self.prepaid is not None and self.prepaid.relay_open:  # cut off: nothing to trade
            return {"orders": []}
        soc = None
        if self.battery is not None:
            soc = await self._device_step("reading the battery", self.battery.soc_fraction())
        tariffs = self.tariffs
        curtail = self.curtail.get(str(interval))
        if curtail is not None:
            tariffs = tariffs.model_copy(update={"max_export_w": curtail})
        plan = await self.planner.plan_async(interval_start, tariffs, soc, self.clock.now())
        orders = []
        meter_bytes = meter_id_to_bytes32(self.meter_id)
        for nonce, order in enumerate(plan.orders):
            message = OrderMessage(
                meter_id=meter_bytes,
                interval=interval,
                side=OrderSide.BUY if order.side is Side.BUY else OrderSide.SELL,
                quantity_wh=order.quantity_wh,
                limit_price=price_to_units(max(order.limit_price, 0.0), self.decimals),
                nonce=nonce,
            )
            signed = sign_order(self.domain, message, self.signer)
            orders.append(
                OrderSubmission(
                    meter_id=self.meter_id,
                    interval=interval,
                    side=order.side.value,
                    quantity_wh=message.quantity_wh,
                    limit_price_units=message.limit_price,
                    nonce=nonce,
                    signature="0x" + signed.signature.hex(),
                ).model_dump()
            )
        return {
            "orders": orders,
            "battery_power_w": plan.battery_power_w,
            "expected_import_wh": plan.expected_import_wh,
            "expected_export_wh": plan.expected_export_wh,
            # relay-switched loads by name: deferrable ones and thermal ones behind a relay
            "loads_w": {**plan.deferrable_power_w, **plan.thermal_power_w},
        }

    async def on_cleared(self, notice: ClearingNotice) -> None:
        """Record this meter's trades and apply the battery set-point for the interval."""
        mine = [t for t in notice.trades if self.meter_id in (t.buyer, t.seller)]
        self.records.put_once(
            "trades",
            str(notice.interval),
            {"trades": [t.model_dump() for t in mine], "tx_hash": notice.tx_hash,
             "error": notice.error},
        )  # fmt: skip
        setpoint = self.pending_battery_w.pop(str(notice.interval), None)
        expected = self.pending_exchange_wh.pop(str(notice.interval), (0.0, 0.0))
        if notice.error is not None and self.devices is not None:
            log.warning("%s: interval %d failed (%s)", self.name, notice.interval, notice.error)
            await self._fall_back(str(notice.interval))
        elif self.battery is not None and setpoint is not None:
            bought = sum(t.quantity_wh for t in mine if t.buyer == self.meter_id)
            sold = sum(t.quantity_wh for t in mine if t.seller == self.meter_id)
            setpoint = setpoint_after_trades(setpoint, expected, bought, sold, self.planner.step_s)
            await self._device_step("setting the battery", self.battery.set_power_w(setpoint))
            await self._limit_export(str(notice.interval), setpoint)
        else:
            await self._limit_export(str(notice.interval))
        await self._switch_loads(notice.interval)
        await self._ack("cleared", notice.interval)

    async def on_void(self, notice: VoidNotice) -> None:
        """The market will not trade the interval: this board's orders for it are void and it
        buys and sells with the grid, as if nothing had matched."""
        key = str(notice.interval)
        if self.records.get("void", key) is not None:
            return
        self.records.put_once("void", key, notice.model_dump())
        self.records.put_once("trades", key, {"trades": []})
        setpoint = self.pending_battery_w.pop(key, None)
        expected = self.pending_exchange_wh.pop(key, (0.0, 0.0))
        if self.battery is not None and setpoint is not None:
            await self.battery.set_power_w(
                setpoint_after_trades(setpoint, expected, 0, 0, self.planner.step_s)
            )
        log.warning(
            "%s: interval %d is void, its orders with it; trading with the grid: %s",
            self.name,
            notice.interval,
            notice.reason,
            extra={"event": "void", "interval": notice.interval, "reason": notice.reason},
        )

    async def report_delivery(
        self, interval_start: datetime, *, past_deadline: bool = False
    ) -> None:
        """Read the registers at the interval's end and send them signed with those at its start.

        The registers read at one interval's end are the next one's start, recorded once
        (first write wins), so consecutive readings chain exactly and a restart never signs
        a second, different reading for an interval. Without the start (the agent started
        during the interval, or the read at its start failed) nothing is signed: the energy
        settles with the next reading, at the tariffs.

        The last moment for a reading is the interval's settlement, not the moment it was due:
        a board that comes to it late (busy, restarted) still reads and sends it, and one it
        has already signed is always sent again (the market takes it until it settles). Only
        past the settlement deadline is a reading not taken any more: the interval settles by
        the gap rules, and this meter's energy with its next settled reading.
        """
        key = interval_key(interval_start)
        interval = int(key)
        prepared = self.records.get("delivery", key)
        if prepared is None and past_deadline:
            log.warning(
                "%s: the settlement deadline of interval %d passed before the meter was read; "
                "its energy is settled with the next reading",
                self.name,
                interval,
                extra={"event": "reading_missed", "interval": interval},
            )
            await self._ack("delivery-failed", interval)
            return
        if prepared is None:
            try:
                reading = await self.read_meter()
            except MeterError as exc:
                log.error("%s: no reading for interval %d: %s", self.name, interval, exc)
                await self._ack("delivery-failed", interval)
                await self._heartbeat(interval, "delivery")
                return
            if self.records.get("orders", key) and self.records.get("trades", key) is None:
                await self._fall_back(key, reading)  # ordered, never heard the clearing
            # Rounded, not truncated: a float register of 987.654 kWh is 987,654 Wh.
            end = {"import_wh": round(reading.import_wh), "export_wh": round(reading.export_wh)}
            next_key = str(interval + self.planner.step_s)
            # The boundary recorded first wins, also as this reading's end: a board that died
            # after recording it and before signing reads the meter again, and must not sign
            # an end the next interval's start does not continue from.
            end = self.records.put_once("boundary", next_key, end)
            start = self.records.get("boundary", key)
            if start is None:
                log.info(
                    "%s: no registers at the start of interval %d (the agent started during "
                    "it); its energy settles with the next reading, at the tariffs",
                    self.name,
                    interval,
                )
                await self._ack("delivery-failed", interval)
                return
            message = ReadingMessage(
                meter_id=meter_id_to_bytes32(self.meter_id),
                interval=interval,
                start_import_wh=int(start["import_wh"]),
                start_export_wh=int(start["export_wh"]),
                end_import_wh=int(end["import_wh"]),
                end_export_wh=int(end["export_wh"]),
            )
            signed = sign_reading(self.domain, message, self.signer)
            submission = ReadingSubmission.from_signed(self.meter_id, signed)
            prepared = self.records.put_once("delivery", key, submission.model_dump())
        submission = ReadingSubmission.model_validate(prepared)
        await self.send(
            self.market,
            Performative.INFORM,
            submission,
            expires_at=self._expiry(interval, "delivery"),
        )
        imported = submission.end_import_wh - submission.start_import_wh
        exported = submission.end_export_wh - submission.start_export_wh
        log.info(
            "%s: sent the reading of interval %d: import %d Wh, export %d Wh",
            self.name,
            interval,
            imported,
            exported,
            extra={
                "event": "reading_sent",
                "interval": interval,
                "import_wh": imported,
                "export_wh": exported,
            },
        )
        await self._ack("delivery", interval)
        await self._heartbeat(interval, "delivery")

    async def _heartbeat(self, interval: int, phase: PhaseName) -> None:
        if not self.drop_optional_writes:
            await send_heartbeat(self, interval, phase)

    def _expiry(self, interval: int, phase: str) -> datetime | None:
        """When a message of this interval's `phase` is no use any more (None: never)."""
        offset = self.order_expiry_s if phase == "order" else self.reading_expiry_s
        return None if offset is None else datetime.fromtimestamp(interval + offset, UTC)

    # ---------------------------------------------------------------- devices (devices/board.py)

    async def _device_step(self, what: str, step: Awaitable[T]) -> T | None:
        """Run one device operation; a device error is logged (its alarm is already raised)."""
        try:
            return await step
        except DeviceError as exc:
            log.error("%s: %s failed: %s", self.name, what, exc)
            return None
        finally:
            await self._publish_alarms()

    async def _publish_alarms(self) -> None:
        if self.devices is None:
            return
        for alarm in self.devices.take_alarms():
            if self.alarms_to is not None:
                notice = DeviceAlarmNotice(
                    meter_id=self.meter_id,
                    device=alarm.device,
                    kind=alarm.kind,
                    code=alarm.code,
                    message=alarm.message,
                    active=alarm.active,
                    at=alarm.at or datetime.now(UTC),
                )
                await self.send(self.alarms_to, Performative.INFORM, notice)

    async def _limit_export(self, key: str, battery_w: float | None = None) -> None:
        """Cap the PV for the interval's export limit, or lift the cap when there is none."""
        devices = self.devices
        if devices is None or devices.pv is None:
            return
        limit = devices.export_limit(self.curtail.get(key))
        if limit is None and not devices.pv_capped:
            return
        try:
            reading = await self.read_meter()
        except MeterError as exc:
            log.error("%s: cannot limit the export without the meter: %s", self.name, exc)
            return
        await self._device_step(
            "limiting the export", devices.limit_export(limit, reading, battery_w)
        )

    async def _switch_loads(self, interval: int) -> None:
        """Switch the relay-switched loads as the plan of the interval places them."""
        planned = self.pending_loads_w.pop(str(interval), {})
        if self.devices is None:
            return
        for name, power_w in planned.items():
            load = self.devices.loads.get(name)
            if load is None:
                continue
            await self._device_step(f"switching {name}", load.switch(power_w > 0.5))

    async def _fall_back(self, key: str, reading: Reading | None = None) -> None:
        """The market is lost: the devices follow the safe local rule until it returns."""
        devices = self.devices
        if devices is None:
            return
        if reading is None:
            try:
                reading = await self.read_meter()
            except MeterError as exc:
                log.error("%s: no safe local rule without the meter: %s", self.name, exc)
                return
        log.warning("%s: no market for interval %s; devices on the safe local rule", self.name, key)
        step = devices.fall_back(reading, self.curtail.get(key), self.planner.step_s)
        await self._device_step("the safe local rule", step)


def setpoint_after_trades(
    planned_w: float,
    expected_wh: tuple[float, float],
    bought_wh: int,
    sold_wh: int,
    step_s: int,
) -> float:
    """The battery set-point that delivers what the market matched.

    The plan's set-point covers the planned import or export; energy matched beyond it (a
    flexible block a neighbour took) must come from the battery: sold beyond the plan is
    discharged, bought beyond the plan is stored.
    """
    expected_import_wh, expected_export_wh = expected_wh
    step_h = step_s / 3600
    extra_charge_w = max(bought_wh - expected_import_wh, 0.0) / step_h
    extra_discharge_w = max(sold_wh - expected_export_wh, 0.0) / step_h
    return planned_w + extra_charge_w - extra_discharge_w
