"""MarketAgent: one per community. Collects orders until gate closure, clears the double
auction, settles the batch on chain, publishes the result; after the interval it settles
delivery from the boards' signed readings.

Orders and readings are recorded in the store as they arrive, the clearing of an interval is
recorded before its batch is sent, and each chain transaction goes through the sender's
outbox under a key per interval, so a restarted market agent neither loses an order nor
settles an interval twice. While the chain node is away (a restart, a network cut) chain
steps are retried with back-off; the outbox makes a retry finish the transaction it began.

The chain steps (clear and settle the batch, settle delivery) run one after the other, in the
order their ticks came, in the agent's own task: the mailbox keeps taking orders and readings
while the chain is slow or away. Gate closure is marked when its tick is handled, so an order
that arrives after it is refused however long the clearing itself takes.

Every interval ends settled on chain (DeliverySettled, even with nothing in it) or void, with
its reason announced on the bus (VoidNotice) so the boards fall back to the grid:
- its gate closed while the market was down and the interval was over when it came back;
- its batch failed on chain, or its delivery could not be settled;
- the market was down for longer than its catch-up window.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from pydantic import BaseModel
from web3.types import TxReceipt

from meterchain.agents.messages import (
    Ack,
    ClearingNotice,
    DeliveryNotice,
    NoOrder,
    OrderSubmission,
    ReadingSubmission,
    TariffNotice,
    Tick,
    TradeNotice,
    VoidNotice,
)
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative
from meterchain.chain.batch import BatchTrade, Position
from meterchain.chain.client import EnergyMarketClient
from meterchain.chain.errors import (
    ChainError,
    ChainUnavailable,
    NonceConflict,
    TransactionReverted,
    TransactionTimeout,
)
from meterchain.chain.signing import (
    MarketDomain,
    SignedReading,
    SigningError,
    bytes32_to_meter_id,
    meter_id_to_bytes32,
    recover_order_signer,
    recover_reading_signer,
)
from meterchain.chain.units import from_units, price_to_units
from meterchain.market.book import OrderBook
from meterchain.market.clearing import Mechanism, clear
from meterchain.model import Order, Side
from meterchain.store.records import Records

log = logging.getLogger(__name__)

T = TypeVar("T")

# Worth retrying: the node is away or slow. Reads through web3 raise requests' errors as they
# are; sends through the sender raise ChainUnavailable.
TRANSIENT_CHAIN_ERRORS: tuple[type[Exception], ...] = (
    ChainUnavailable,
    TransactionTimeout,
    NonceConflict,
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)
# Reverts of settleDelivery that one meter's reading causes: drop that reading and retry.
READING_REVERTS = ("InvalidReadingSignature", "ReadingNotAfterLastSettled", "CounterWentBackwards")
MAX_READING_DROPS = 8

SignerLookup = Callable[[str], str | None]
"""meter id -> the signer address registered for it (None if unknown or revoked)."""


@dataclass
class IntervalBook:
    """What the market holds for one interval."""

    orders: dict[str, OrderSubmission] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)  # meters that sent orders or NoOrder
    readings: dict[str, ReadingSubmission] = field(default_factory=dict)


@dataclass(frozen=True)
class ClearedInterval:
    notice: ClearingNotice
    orders: int
    positions: list[Position] | None = None  # what the batch recorded on chain (None: unknown)


def _position_json(position: Position) -> dict[str, Any]:
    return {
        "meter_id": position.meter_id.hex(),
        "bought_wh": position.bought_wh,
        "cost_milli": str(position.cost_milli),
        "sold_wh": position.sold_wh,
        "value_milli": str(position.value_milli),
    }


def _position_from_json(data: dict[str, Any]) -> Position:
    return Position(
        meter_id=bytes.fromhex(data["meter_id"]),
        bought_wh=int(data["bought_wh"]),
        cost_milli=int(data["cost_milli"]),
        sold_wh=int(data["sold_wh"]),
        value_milli=int(data["value_milli"]),
    )


class MarketAgent(Agent):
    """The community's market operator."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        *,
        market: EnergyMarketClient,
        domain: MarketDomain,
        signers: dict[str, str],
        records: Records,
        tariffs: TariffNotice,
        mechanism: Mechanism = Mechanism.PAY_AS_CLEAR,
        community: str = "community",
        coordinator: str | None = None,
        decimals: int = 2,
        signer_lookup: SignerLookup | None = None,
        chain_retry_max_s: float = 5.0,
    ) -> None:
        super().__init__(name, bus)
        self.market = market
        self.domain = domain
        self.signers = dict(signers)  # meter id -> registered signer address
        self.signer_lookup = signer_lookup
        self.records = records
        self.tariffs = tariffs
        self.mechanism = mechanism
        self.community = community
        self.coordinator = coordinator
        self.decimals = decimals
        self.chain_retry_max_s = chain_retry_max_s
        self.books: dict[int, IntervalBook] = {}
        self.closed: set[int] = set()  # intervals whose gate has closed
        self.cleared: dict[int, ClearedInterval] = {}
        self.delivered: dict[int, DeliveryNotice] = {}
        self.refused: list[str] = []
        self.chain_retries = 0
        self.void: dict[int, VoidNotice] = {}
        self._steps: asyncio.Queue[tuple[str, int]] = asyncio.Queue()  # chain work, in order
        self._queued: set[tuple[str, int]] = set()
        self._restore()

    def _restore(self) -> None:
        """Reload what arrived and what was done before a restart."""
        for payload in self.records.all("order").values():
            submission = OrderSubmission.model_validate(payload)
            book = self.book(submission.interval)
            book.orders[submission.order_id] = submission
            book.answered.add(submission.meter_id)
        for payload in self.records.all("reading").values():
            reading = ReadingSubmission.model_validate(payload)
            self.book(reading.interval).readings[reading.meter_id] = reading
        for key, payload in self.records.all("cleared").items():
            positions = payload.pop("positions", None)
            orders = int(payload.pop("orders", 0))
            self.cleared[int(key)] = ClearedInterval(
                ClearingNotice.model_validate(payload),
                orders,
                None if positions is None else [_position_from_json(p) for p in positions],
            )
            self.closed.add(int(key))
        for key, payload in self.records.all("delivered").items():
            payload.pop("used_readings", None)
            self.delivered[int(key)] = DeliveryNotice.model_validate(payload)
        for key, payload in self.records.all("void").items():
            self.void[int(key)] = VoidNotice(interval=int(key), reason=payload["reason"])
            self.closed.add(int(key))

    def book(self, interval: int) -> IntervalBook:
        return self.books.setdefault(interval, IntervalBook())

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, OrderSubmission):
            await self.receive_order(envelope, content)
        elif isinstance(content, NoOrder):
            self.book(content.interval).answered.add(content.meter_id)
        elif isinstance(content, ReadingSubmission):
            await self.receive_reading(content)
        elif isinstance(content, TariffNotice):
            self.tariffs = content
        elif isinstance(content, Tick):
            interval = int(content.interval_start.timestamp())
            if content.phase == "clear":
                await self.close_gate(interval, overdue=content.overdue)
            elif content.phase == "settle":
                await self.settlement_due(interval)

    # ---- ticks: what is due, in order ---------------------------------------------------------

    async def close_gate(self, interval: int, *, overdue: bool = False) -> None:
        """Gate closure: no order for `interval` is taken from now on; its clearing is queued.

        An overdue gate closure (the market was down until after the interval ended) cannot
        be cleared any more: the interval is void if it has orders, unless its clearing had
        begun before the market went down (then it is finished: its batch may be on chain).
        """
        if interval in self.void or interval in self.cleared:
            return
        await self._void_forgotten(interval, "clear")
        if overdue and self.records.get("plan", str(interval)) is None:
            if not self.book(interval).orders:  # nothing to void (a first start, a quiet hour)
                self.closed.add(interval)
                return
            await self.void_interval(
                interval,
                "the market was down at its gate closure and came back after the interval ended",
            )
            return
        self.closed.add(interval)
        self._queue("clear", interval)

    async def settlement_due(self, interval: int) -> None:
        """The interval's delivery is due: queue its settlement (after what is queued)."""
        if interval in self.delivered:
            return
        await self._void_forgotten(interval, "settle")
        if interval in self.void and self._void_without_delivery(interval):
            return
        self._queue("settle", interval)

    def _queue(self, step: str, interval: int) -> None:
        if (step, interval) not in self._queued:
            self._queued.add((step, interval))
            self._steps.put_nowait((step, interval))

    def _void_without_delivery(self, interval: int) -> bool:
        record = self.records.get("void", str(interval))
        return bool(record and record.get("no_delivery"))

    async def _void_forgotten(self, before: int, what: str) -> None:
        """Void earlier intervals that will never get their tick: the market was down for
        longer than its catch-up window, so nothing will clear (or settle) them."""
        settling = what == "settle"
        for interval in sorted(self.books):
            if interval >= before or interval in self.void or interval in self.delivered:
                continue
            if any((step, interval) in self._queued for step in ("clear", "settle")):
                continue
            book = self.books[interval]
            if settling:
                forgotten = bool(book.orders or book.readings) or interval in self.cleared
            else:
                forgotten = bool(book.orders) and interval not in self.closed
            if forgotten:
                await self.void_interval(
                    interval,
                    f"the market was down when its {'delivery' if settling else 'gate closure'}"
                    " was due, for longer than its catch-up window",
                    no_delivery=True,
                )

    async def void_interval(self, interval: int, reason: str, *, no_delivery: bool = False) -> None:
        """Void an interval for good and tell the community why: every order for it is void
        and the boards buy and sell with the grid (their energy is settled with their next
        settled reading). With `no_delivery` its delivery will not be settled either."""
        if interval in self.void:
            return
        notice = VoidNotice(interval=interval, reason=reason)
        self.records.put_once(
            "void", str(interval), {**notice.model_dump(), "no_delivery": no_delivery}
        )
        self.void[interval] = notice
        self.closed.add(interval)
        orders = len(self.books.get(interval, IntervalBook()).orders)
        log.warning(
            "%s: interval %d is void (%d orders void): %s",
            self.name,
            interval,
            orders,
            reason,
            extra={"event": "void", "interval": interval, "orders": orders, "reason": reason},
        )
        await self.send(self.community, Performative.INFORM, notice)

    async def act(self) -> None:
        """Do the chain work that is due, one step at a time, in the order it came."""
        while True:
            step, interval = await self._steps.get()
            try:
                if step == "clear":
                    await self._clear_step(interval)
                else:
                    await self._settle_step(interval)
            except Exception as exc:  # one interval's trouble must not stop the next ones
                log.error(
                    "%s: could not %s interval %d: %s: %s",
                    self.name,
                    step,
                    interval,
                    type(exc).__name__,
                    " ".join(str(exc).split()),
                )
                log.debug("the trace of that failure", exc_info=True)
                await self.void_interval(
                    interval,
                    f"the market failed to {step} it: {type(exc).__name__}: {exc}",
                    no_delivery=step == "settle",
                )
            finally:
                self._queued.discard((step, interval))

    async def _clear_step(self, interval: int) -> None:
        if interval in self.void:
            return
        cleared = await self.clear_interval(interval)
        notice = cleared.notice
        if notice.error is not None:
            await self.void_interval(interval, f"its batch failed on chain: {notice.error}")
            return
        volume_wh = sum(t.quantity_wh for t in notice.trades)
        log.info(
            "%s: cleared interval %d: %d trades, %d Wh at %s per kWh from %d orders; batch %s",
            self.name,
            interval,
            len(notice.trades),
            volume_wh,
            "-" if notice.price is None else f"{notice.price:g}",
            cleared.orders,
            f"tx {notice.tx_hash} (gas {notice.gas_used})" if notice.tx_hash else "not needed",
            extra={
                "event": "cleared",
                "interval": interval,
                "price": notice.price,
                "volume_wh": volume_wh,
                "trades": len(notice.trades),
                "orders": cleared.orders,
                "tx_hash": notice.tx_hash,
                "gas_used": notice.gas_used,
            },
        )

    async def _settle_step(self, interval: int) -> None:
        if interval in self.delivered or (
            interval in self.void and self._void_without_delivery(interval)
        ):
            return
        notice = await self.settle_delivery(interval)
        if notice.error is not None or notice.tx_hash is None:
            await self.void_interval(
                interval,
                f"its delivery could not be settled on chain: {notice.error or 'no transaction'}",
                no_delivery=True,
            )
            return
        record = self.records.get("delivered", str(interval)) or {}
        used = len(record.get("used_readings", []))
        log.info(
            "%s: settled the delivery of interval %d in tx %s (gas %d): %d readings, missing %s",
            self.name,
            interval,
            notice.tx_hash,
            notice.gas_used,
            used,
            ", ".join(notice.missing_readings) or "none",
            extra={
                "event": "delivered",
                "interval": interval,
                "tx_hash": notice.tx_hash,
                "gas_used": notice.gas_used,
                "readings": used,
                "missing_readings": notice.missing_readings,
            },
        )

    # ---- signers ------------------------------------------------------------------------------

    async def signer_of(self, meter_id: str) -> str | None:
        """The meter's registered signer: known ones from memory, others asked of the lookup."""
        known = self.signers.get(meter_id)
        if known is not None or self.signer_lookup is None:
            return known
        lookup = self.signer_lookup
        found = await self._on_chain(f"look up meter {meter_id}", lambda: lookup(meter_id))
        if found is not None:
            self.signers[meter_id] = found
        return found

    # ---- orders and readings ------------------------------------------------------------------

    async def receive_order(self, envelope: Envelope, order: OrderSubmission) -> None:
        """Check an order's signature at once (the chain checks again) and keep it."""
        last_closed = max(self.closed, default=0)
        problem: str | None
        try:
            if order.interval < last_closed:
                problem = (
                    f"order {order.order_id} is for interval {order.interval}, before the last "
                    f"gate closure (of {last_closed})"
                )
            else:
                problem = await self._order_problem(order)
        except SigningError as exc:  # the bounds on OrderSubmission should make this unreachable
            problem = f"order {order.order_id} for interval {order.interval}: {exc}"
        if problem is not None:
            self.refused.append(problem)
            log.warning("%s refused an order: %s", self.name, problem)
            return
        # A nonce is unique per meter and interval only: the interval is part of the key.
        self.records.put_once("order", f"{order.interval}:{order.order_id}", order.model_dump())
        book = self.book(order.interval)
        book.orders[order.order_id] = order
        book.answered.add(order.meter_id)

    async def _order_problem(self, order: OrderSubmission) -> str | None:
        existing = self.book(order.interval).orders.get(order.order_id)
        if existing == order:
            return None  # a duplicate (QoS 1, or a board re-sending after a restart): harmless
        if order.interval in self.closed or order.interval in self.cleared:
            return f"order {order.order_id} arrived after gate closure of interval {order.interval}"
        expected = await self.signer_of(order.meter_id)
        if expected is None:
            return f"order {order.order_id}: meter {order.meter_id} is not registered here"
        signer = recover_order_signer(self.domain, order.to_signed())
        if signer.lower() != expected.lower():
            return f"order {order.order_id}: signed by {signer}, not the meter's {expected}"
        if existing is not None:
            return (
                f"order {order.order_id} was already received with other terms; keeping the first"
            )
        return None

    async def receive_reading(self, reading: ReadingSubmission) -> None:
        """Keep a reading whose signature is the meter's (a bad one would fail the whole batch)."""
        try:
            problem = await self._reading_problem(reading)
        except SigningError as exc:  # the bounds on ReadingSubmission should make this unreachable
            problem = f"reading of meter {reading.meter_id} for {reading.interval}: {exc}"
        if problem is not None:
            self.refused.append(problem)
            log.warning("%s refused a reading: %s", self.name, problem)
            return
        kept = self.records.put_once(
            "reading", f"{reading.interval}:{reading.meter_id}", reading.model_dump()
        )
        self.book(reading.interval).readings[reading.meter_id] = ReadingSubmission.model_validate(
            kept
        )

    async def _reading_problem(self, reading: ReadingSubmission) -> str | None:
        what = f"reading of meter {reading.meter_id} for interval {reading.interval}"
        if reading.interval in self.delivered:
            return f"{what} arrived after its delivery was settled; it counts with the next one"
        if reading.interval in self.void and self._void_without_delivery(reading.interval):
            return f"{what}: the interval is void and will not be settled; it counts with the next"
        expected = await self.signer_of(reading.meter_id)
        if expected is None:
            return f"{what}: the meter is not registered here"
        signer = recover_reading_signer(self.domain, reading.to_signed())
        if signer.lower() != expected.lower():
            return f"{what}: signed by {signer}, not the meter's {expected}"
        return None

    # ---- gate closure -------------------------------------------------------------------------

    def _book_for_clearing(self, submissions: list[OrderSubmission]) -> OrderBook:
        scale = 10**self.decimals
        orders = [
            Order(
                id=s.order_id,
                meter_id=s.meter_id,
                side=Side(s.side),
                quantity_wh=s.quantity_wh,
                limit_price=s.limit_price_units / scale,
                submitted_at=datetime.fromtimestamp(s.interval, UTC),
            )
            for s in submissions
        ]
        return OrderBook(self.tariffs.retail_price, self.tariffs.feed_in_price, tuple(orders))

    async def clear_interval(self, interval: int) -> ClearedInterval:
        """Gate closure: clear, settle the batch on chain, publish."""
        self.closed.add(interval)
        if interval in self.cleared:
            return self.cleared[interval]
        plan = self.records.get("plan", str(interval))
        if plan is None:
            plan = self.records.put_once("plan", str(interval), await self._plan(interval))
        notices = [TradeNotice.model_validate(t) for t in plan["notices"]]
        tx_hash, gas, error = None, 0, None
        positions: list[Position] | None = []
        if plan["batch"]:
            batch = [
                BatchTrade(
                    buy=(meter_id_to_bytes32(t["buy"][0]), int(t["buy"][1])),
                    sell=(meter_id_to_bytes32(t["sell"][0]), int(t["sell"][1])),
                    quantity_wh=int(t["quantity_wh"]),
                    price=int(t["price"]),
                )
                for t in plan["batch"]
            ]
            signed = [OrderSubmission.model_validate(o).to_signed() for o in plan["orders"]]
            try:
                settled = await self._on_chain(
                    f"settle the batch of interval {interval}",
                    lambda: self.market.settle_batch(
                        interval, batch, signed, key=f"batch:{interval}"
                    ),
                )
                tx_hash = "0x" + bytes(settled.receipt["transactionHash"]).hex()
                gas = settled.gas_used
                positions = settled.positions
            except ChainError as exc:
                log.error("%s: batch of interval %d not settled: %s", self.name, interval, exc)
                error = str(exc)
                notices = []
                positions = None  # the chain will tell at delivery
        notice = ClearingNotice(
            interval=interval,
            price=plan["price"] if notices else None,
            trades=notices,
            tx_hash=tx_hash,
            gas_used=gas,
            error=error,
        )
        cleared = ClearedInterval(notice, int(plan["order_count"]), positions)
        self.cleared[interval] = cleared
        record: dict[str, Any] = {**notice.model_dump(), "orders": cleared.orders}
        record["positions"] = None if positions is None else [_position_json(p) for p in positions]
        self.records.put("cleared", str(interval), record)
        await self.send(self.community, Performative.INFORM, notice)
        return cleared

    async def _plan(self, interval: int) -> dict[str, Any]:
        """The interval's clearing, worked out once and recorded before anything is sent."""
        submissions = sorted(self.book(interval).orders.values(), key=lambda s: s.order_id)
        submissions = await self._affordable(submissions)
        by_id = {s.order_id: s for s in submissions}
        result = clear(self._book_for_clearing(submissions), self.mechanism)
        batch: list[dict[str, Any]] = []
        notices: list[dict[str, Any]] = []
        for trade in result.trades:
            buy, sell = by_id[trade.buy_order_id], by_id[trade.sell_order_id]
            price_units = min(
                max(price_to_units(trade.price, self.decimals), sell.limit_price_units),
                buy.limit_price_units,
            )
            batch.append(
                {
                    "buy": [buy.meter_id, buy.nonce],
                    "sell": [sell.meter_id, sell.nonce],
                    "quantity_wh": trade.quantity_wh,
                    "price": price_units,
                }
            )
            notices.append(
                TradeNotice(
                    buy_order=buy.order_id,
                    sell_order=sell.order_id,
                    buyer=buy.meter_id,
                    seller=sell.meter_id,
                    quantity_wh=trade.quantity_wh,
                    price=float(from_units(price_units, self.decimals)),
                ).model_dump()
            )
        used = {(t["buy"][0], t["buy"][1]) for t in batch} | {
            (t["sell"][0], t["sell"][1]) for t in batch
        }
        return {
            "order_count": len(submissions),
            "price": result.price,
            "batch": batch,
            "notices": notices,
            "orders": [s.model_dump() for s in submissions if (s.meter_id, s.nonce) in used],
        }

    async def _affordable(self, submissions: list[OrderSubmission]) -> list[OrderSubmission]:
        """Drop buy orders whose meter cannot pay their limit (the batch would revert)."""
        buyers = sorted({s.meter_id for s in submissions if s.side == "buy"})
        if not buyers:
            return submissions
        balances = await self._on_chain(
            "read the buyers' balances", lambda: self.market.balances(buyers)
        )
        exposure: dict[str, int] = {}
        for s in submissions:
            if s.side == "buy":
                cost = -(-s.quantity_wh * s.limit_price_units // 1000)
                exposure[s.meter_id] = exposure.get(s.meter_id, 0) + cost
        poor = {
            meter for meter, cost in exposure.items() if balances[meter_id_to_bytes32(meter)] < cost
        }
        for meter in sorted(poor):
            self.refused.append(f"meter {meter}: balance too low for its bids; deposit credit")
        return [s for s in submissions if s.meter_id not in poor or s.side == "sell"]

    # ---- delivery -----------------------------------------------------------------------------

    async def settle_delivery(self, interval: int) -> DeliveryNotice:
        """Settle the interval's delivery from the readings that arrived.

        A meter that traded but sent no reading is settled as having delivered and received
        nothing (the grid covers its side); its energy is billed with its next reading.
        """
        if interval in self.delivered:
            return self.delivered[interval]
        readings = dict(self.book(interval).readings)
        cleared = self.cleared.get(interval)
        traders = (
            {t.buyer for t in cleared.notice.trades} | {t.seller for t in cleared.notice.trades}
            if cleared
            else set()
        )
        positions = cleared.positions if cleared is not None else None
        if positions is None:
            positions = await self._on_chain(
                f"read the positions of interval {interval}",
                lambda: self.market.positions(interval),
            )
        traders |= {bytes32_to_meter_id(p.meter_id) for p in positions}
        tx_hash, gas, error = None, 0, None
        dropped: list[str] = []
        # Even with nothing in it: the chain, not the market's word, says the interval is done.
        try:
            receipt = await self._settle_delivery_on_chain(interval, readings, positions, dropped)
            tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
            gas = int(receipt["gasUsed"])
        except ChainError as exc:
            log.error("%s: delivery of interval %d not settled: %s", self.name, interval, exc)
            error = str(exc)
        missing = sorted(traders - set(readings))
        notice = DeliveryNotice(
            interval=interval,
            tx_hash=tx_hash,
            gas_used=gas,
            missing_readings=missing,
            error=error,
        )
        if error is None:
            self.delivered[interval] = notice
            record = {**notice.model_dump(), "used_readings": sorted(readings)}
            self.records.put("delivered", str(interval), record)
        await self.send(self.community, Performative.INFORM, notice)
        if self.coordinator is not None:
            await self.send(
                self.coordinator, Performative.INFORM, Ack(what="settled", interval=interval)
            )
        return notice

    async def _settle_delivery_on_chain(
        self,
        interval: int,
        readings: dict[str, ReadingSubmission],
        positions: list[Position],
        dropped: list[str],
    ) -> TxReceipt:
        """settleDelivery, dropping (and reporting) a reading the contract refuses."""
        for attempt in range(MAX_READING_DROPS + 1):
            signed: list[SignedReading] = [readings[m].to_signed() for m in sorted(readings)]
            key = f"delivery:{interval}" if attempt == 0 else f"delivery:{interval}:{attempt}"
            call = functools.partial(
                self.market.settle_delivery, interval, signed, positions=positions, key=key
            )
            try:
                return await self._on_chain(f"settle the delivery of interval {interval}", call)
            except TransactionReverted as exc:
                meter = exc.named_args.get("meterId")
                if exc.error_name not in READING_REVERTS or not isinstance(meter, bytes):
                    raise
                meter_id = bytes32_to_meter_id(meter)
                if meter_id not in readings:
                    raise
                log.warning(
                    "%s: dropping the reading of meter %s for interval %d: %s",
                    self.name,
                    meter_id,
                    interval,
                    exc,
                )
                self.refused.append(f"reading of meter {meter_id} for interval {interval}: {exc}")
                dropped.append(meter_id)
                del readings[meter_id]
        raise ChainError(f"gave up settling interval {interval} after dropping {dropped}")

    # ---- the chain ----------------------------------------------------------------------------

    async def _on_chain(self, what: str, call: Callable[[], T]) -> T:
        """Run a blocking chain call in a thread; retry while the node is unreachable.

        A revert is not retried (it raises); transport failures and timeouts are, with
        back-off, for as long as it takes: the outbox makes every retry finish the same
        transaction, never a second one.
        """
        delay = 0.2
        failures = 0
        while True:
            try:
                result = await asyncio.to_thread(call)
            except TRANSIENT_CHAIN_ERRORS as exc:
                failures += 1
                self.chain_retries += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning(
                        "%s: could not %s (try %d): %s; retrying", self.name, what, failures, exc
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.chain_retry_max_s)
                continue
            if failures:
                log.info("%s: could %s after %d failed tries", self.name, what, failures)
            return result
