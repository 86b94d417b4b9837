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
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from pydantic import BaseModel
from web3.types import TxReceipt

from meterchain.agents.messages import (
    Ack,
    AlarmNotice,
    ClearingNotice,
    DeliveryNotice,
    NoOrder,
    OrderSubmission,
    ReadingSubmission,
    SignerChanged,
    TariffNotice,
    Tick,
    TradeNotice,
    VoidNotice,
)
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative
from meterchain.chain.batch import (
    BatchTrade,
    Position,
    RejectReason,
    locked_units,
    max_delivery_entries,
)
from meterchain.chain.client import BatchTerms, EnergyMarketClient, IntervalStatus, MeterLookup
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
# Reverts of settleBatch that one meter causes (each names it as `meterId`): the batch is
# cleared again without that meter, so one party can never void everyone else's interval.
METER_REVERTS = frozenset(
    {
        "InsufficientBalance",
        "MeterIsRevoked",
        "UnknownMeter",
        "MeterNotInMarket",
        "MeterCannotSell",
        "InvalidOrderSignature",
    }
)
# A block's gas that a delivery may use (a 6 M-gas block, less headroom for other transactions).
DEFAULT_DELIVERY_GAS = 5_000_000


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
    terms: BatchTerms | None = None  # what the batch fixed on chain (None: unknown)


def _terms_json(terms: BatchTerms) -> dict[str, Any]:
    return {
        "retail_price": terms.retail_price,
        "feed_in_price": terms.feed_in_price,
        "positions": [
            {
                "meter_id": p.meter_id.hex(),
                "bought_wh": p.bought_wh,
                "cost_milli": str(p.cost_milli),
                "sold_wh": p.sold_wh,
                "value_milli": str(p.value_milli),
            }
            for p in terms.positions
        ],
    }


def _terms_from_json(data: dict[str, Any]) -> BatchTerms:
    return BatchTerms(
        int(data["retail_price"]),
        int(data["feed_in_price"]),
        [
            Position(
                meter_id=bytes.fromhex(p["meter_id"]),
                bought_wh=int(p["bought_wh"]),
                cost_milli=int(p["cost_milli"]),
                sold_wh=int(p["sold_wh"]),
                value_milli=int(p["value_milli"]),
            )
            for p in data["positions"]
        ],
    )


def _batch_trade(data: dict[str, Any]) -> BatchTrade:
    return BatchTrade(
        buy=(meter_id_to_bytes32(data["buy"][0]), int(data["buy"][1])),
        sell=(meter_id_to_bytes32(data["sell"][0]), int(data["sell"][1])),
        quantity_wh=int(data["quantity_wh"]),
        price=int(data["price"]),
    )


def hash_rotation(meter_id: str, interval: int) -> bytes:
    """A per-interval order of meters (stable across runs, unlike Python's hash)."""
    return hashlib.sha256(f"{interval}:{meter_id}".encode()).digest()


class MarketAgent(Agent):
    """The community's market operator."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        *,
        market: EnergyMarketClient,
        domain: MarketDomain,
        records: Records,
        tariffs: TariffNotice,
        mechanism: Mechanism = Mechanism.PAY_AS_CLEAR,
        community: str = "community",
        coordinator: str | None = None,
        decimals: int = 2,
        chain_retry_max_s: float = 5.0,
        delivery_gas: int = DEFAULT_DELIVERY_GAS,
    ) -> None:
        super().__init__(name, bus)
        self.market = market
        self.domain = domain
        self.records = records
        self.tariffs = tariffs
        self.mechanism = mechanism
        self.community = community
        self.coordinator = coordinator
        self.decimals = decimals
        self.chain_retry_max_s = chain_retry_max_s
        self.max_delivery_entries = max_delivery_entries(delivery_gas)
        self.meters: dict[str, MeterLookup] = {}  # registry records, refreshed at gate closure
        self._market_number: int | None = None
        self.books: dict[int, IntervalBook] = {}
        self.closed: set[int] = set()  # intervals whose gate has closed
        self.cleared: dict[int, ClearedInterval] = {}
        self.delivered: dict[int, DeliveryNotice] = {}
        self.refused: list[str] = []
        self.chain_retries = 0
        self.monitor: str | None = None  # where refusals go as alarms (agents/monitor.py)
        # What follows each settled delivery, in order (the deployed market issues the
        # interval's certificates here, through its own sender: one nonce sequence).
        self.after_delivery: list[Callable[[int], Awaitable[None]]] = []
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
            terms = payload.pop("terms", None)
            orders = int(payload.pop("orders", 0))
            self.cleared[int(key)] = ClearedInterval(
                ClearingNotice.model_validate(payload),
                orders,
                None if terms is None else _terms_from_json(terms),
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
        elif isinstance(content, SignerChanged):  # rotated or revoked: ask the registry again
            self.meters.pop(content.meter_id, None)
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
        if no_delivery:  # a batch on chain without its delivery: its locks go back now
            try:
                await self._refund(interval)
            except ChainError as exc:
                log.error(
                    "%s: could not refund void interval %d (anyone may after the refund delay): %s",
                    self.name,
                    interval,
                    exc,
                )

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
        for follow_up in self.after_delivery:  # e.g. the interval's certificates
            try:
                await follow_up(interval)
            except ChainError as exc:
                log.error("%s: after the delivery of interval %d: %s", self.name, interval, exc)

    # ---- meters -------------------------------------------------------------------------------

    async def lookup_meters(
        self, meter_ids: list[str], *, fresh: bool = False
    ) -> dict[str, MeterLookup]:
        """The registry records of these meters: from memory, or (fresh, or not yet known)
        from the chain in one batch. Gate closure asks fresh, so a key rotated or revoked
        since an order arrived is seen before the batch is posted."""
        wanted = sorted({m for m in meter_ids if fresh or m not in self.meters})
        if wanted:
            registry = self.market.registry
            found = await self._on_chain(
                f"look up {len(wanted)} meters", lambda: registry.lookups(wanted)
            )
            for meter_id in wanted:
                self.meters[meter_id] = found[meter_id_to_bytes32(meter_id)]
        return {m: self.meters[m] for m in meter_ids}

    async def market_number(self) -> int:
        """This market's number in the registry (meters of other markets carry another)."""
        if self._market_number is None:
            registry, address = self.market.registry, self.market.address
            self._market_number = await self._on_chain(
                "read the market's number", lambda: registry.market_number(address)
            )
        return self._market_number

    async def _meter_problem(self, meter_id: str, info: MeterLookup) -> str | None:
        if not info.known:
            return f"meter {meter_id} is not registered"
        if info.revoked:
            return f"meter {meter_id} is revoked"
        if info.market_number != await self.market_number():
            return f"meter {meter_id} does not belong to this market"
        return None

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
        info = (await self.lookup_meters([order.meter_id]))[order.meter_id]
        return await self._signed_order_problem(order, info, existing)

    async def _signed_order_problem(
        self, order: OrderSubmission, info: MeterLookup, existing: OrderSubmission | None = None
    ) -> str | None:
        problem = await self._meter_problem(order.meter_id, info)
        if problem is not None:
            return f"order {order.order_id}: {problem}"
        if order.side == "sell" and not info.kind.can_sell:
            return (
                f"order {order.order_id}: meter {order.meter_id} is registered as a "
                f"{info.kind.name.lower()} and cannot sell"
            )
        signer = recover_order_signer(self.domain, order.to_signed())
        if signer.lower() != info.signer.lower():
            return f"order {order.order_id}: signed by {signer}, not the meter's {info.signer}"
        if existing is not None:
            return (
                f"order {order.order_id} was already received with other terms; keeping the first"
            )
        return None

    async def receive_reading(self, reading: ReadingSubmission) -> None:
        """Keep a reading signed by the meter's key (the chain checks again, and refuses
        implausible ones with a ReadingRejected event that is logged here)."""
        try:
            problem = await self._reading_problem(reading)
        except SigningError as exc:  # the bounds on ReadingSubmission should make this unreachable
            problem = f"reading of meter {reading.meter_id} for {reading.interval}: {exc}"
        if problem is not None:
            self.refused.append(problem)
            log.warning("%s refused a reading: %s", self.name, problem)
            await self._alarm("reading-refused", reading.meter_id, problem)
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
        info = (await self.lookup_meters([reading.meter_id]))[reading.meter_id]
        problem = await self._meter_problem(reading.meter_id, info)
        if problem is not None:
            return f"{what}: {problem}"
        signer = recover_reading_signer(self.domain, reading.to_signed())
        if signer.lower() != info.signer.lower():
            return f"{what}: signed by {signer}, not the meter's {info.signer}"
        return None

    # ---- gate closure -------------------------------------------------------------------------

    def _book_for_clearing(
        self, submissions: list[OrderSubmission], tariffs: tuple[int, int]
    ) -> OrderBook:
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
        retail, feed_in = tariffs
        return OrderBook(retail / scale, feed_in / scale, tuple(orders))

    async def clear_interval(self, interval: int) -> ClearedInterval:
        """Gate closure: clear, settle the batch on chain, publish.

        A batch the chain refuses because of one meter (it cannot pay, its key was revoked,
        it left the market…) is cleared again without that meter and posted again, so the
        others' trades settle whatever one party does.
        """
        self.closed.add(interval)
        if interval in self.cleared:
            return self.cleared[interval]
        recorded = self.records.get("plan", str(interval))
        plan: dict[str, Any] = (
            recorded
            if recorded is not None
            else self.records.put_once("plan", str(interval), await self._plan(interval, []))
        )
        tx_hash, gas, error = None, 0, None
        terms: BatchTerms | None = None
        while plan["batch"]:
            attempt = int(plan.get("attempt", 0))
            key = f"batch:{interval}" if attempt == 0 else f"batch:{interval}:{attempt}"
            batch = [_batch_trade(t) for t in plan["batch"]]
            signed = [OrderSubmission.model_validate(o).to_signed() for o in plan["orders"]]
            try:
                settled = await self._on_chain(
                    f"settle the batch of interval {interval}",
                    functools.partial(self.market.settle_batch, interval, batch, signed, key=key),
                )
            except TransactionReverted as exc:
                meter = exc.named_args.get("meterId")
                excluded = list(plan.get("excluded", []))
                if exc.error_name not in METER_REVERTS or not isinstance(meter, bytes):
                    log.error("%s: batch of interval %d not settled: %s", self.name, interval, exc)
                    error = str(exc)
                    terms = None
                    break
                meter_id = bytes32_to_meter_id(meter)
                problem = f"meter {meter_id} left out of interval {interval}'s batch: {exc}"
                self.refused.append(problem)
                log.warning("%s: %s; clearing again without it", self.name, problem)
                replanned = await self._plan(interval, [*excluded, meter_id])
                replanned["attempt"] = attempt + 1
                self.records.put("plan", str(interval), replanned)
                plan = replanned
                continue
            except ChainError as exc:
                log.error("%s: batch of interval %d not settled: %s", self.name, interval, exc)
                error = str(exc)
                break
            tx_hash = "0x" + bytes(settled.receipt["transactionHash"]).hex()
            gas = settled.gas_used
            terms = settled.terms
            break
        else:
            retail, feed_in = plan["tariffs"]
            terms = BatchTerms(int(retail), int(feed_in), [])
        notices = [TradeNotice.model_validate(t) for t in plan["notices"]] if error is None else []
        notice = ClearingNotice(
            interval=interval,
            price=plan["price"] if notices else None,
            trades=notices,
            tx_hash=tx_hash,
            gas_used=gas,
            error=error,
        )
        cleared = ClearedInterval(notice, int(plan["order_count"]), terms)
        self.cleared[interval] = cleared
        record: dict[str, Any] = {**notice.model_dump(), "orders": cleared.orders}
        record["terms"] = None if terms is None else _terms_json(terms)
        self.records.put("cleared", str(interval), record)
        await self.send(self.community, Performative.INFORM, notice)
        return cleared

    async def _plan(self, interval: int, excluded: list[str]) -> dict[str, Any]:
        """The interval's clearing, worked out once and recorded before anything is sent.

        Orders are re-checked against the registry as it is now (signer, revocation,
        membership, whether the meter may sell), the meters that cannot cover what their
        trades would lock are left out, and the book is cleared at the tariffs the batch will
        be settled with (the chain's). A clearing with more meters than one delivery can
        settle drops the meters that trade least until it fits.
        """
        submissions = sorted(
            (s for s in self.book(interval).orders.values() if s.meter_id not in excluded),
            key=lambda s: s.order_id,
        )
        tariffs = await self._on_chain("read the tariffs", self.market.tariffs)
        submissions = await self._valid_now(submissions)
        submissions = await self._affordable(submissions, tariffs[0])
        while True:
            result = clear(self._book_for_clearing(submissions, tariffs), self.mechanism)
            by_id = {s.order_id: s for s in submissions}
            volume: dict[str, int] = {}
            for trade in result.trades:
                for order_id in (trade.buy_order_id, trade.sell_order_id):
                    meter = by_id[order_id].meter_id
                    volume[meter] = volume.get(meter, 0) + trade.quantity_wh
            if len(volume) <= self.max_delivery_entries:
                break
            smallest = min(volume, key=lambda m: (volume[m], m))
            self.refused.append(
                f"meter {smallest} left out of interval {interval}: more meters traded than "
                f"one delivery can settle ({self.max_delivery_entries})"
            )
            submissions = [s for s in submissions if s.meter_id != smallest]
        batch: list[dict[str, Any]] = []
        notices: list[dict[str, Any]] = []
        retail, feed_in = tariffs
        for trade in result.trades:
            buy, sell = by_id[trade.buy_order_id], by_id[trade.sell_order_id]
            price_units = min(
                max(price_to_units(trade.price, self.decimals), sell.limit_price_units, feed_in),
                buy.limit_price_units,
                retail,
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
            "tariffs": list(tariffs),
            "excluded": excluded,
            "batch": batch,
            "notices": notices,
            "orders": [s.model_dump() for s in submissions if (s.meter_id, s.nonce) in used],
        }

    async def _valid_now(self, submissions: list[OrderSubmission]) -> list[OrderSubmission]:
        """The orders whose meter and signature the registry accepts at gate closure."""
        infos = await self.lookup_meters(sorted({s.meter_id for s in submissions}), fresh=True)
        kept = []
        for s in submissions:
            problem = await self._signed_order_problem(s, infos[s.meter_id])
            if problem is None:
                kept.append(s)
            else:
                self.refused.append(f"at gate closure: {problem}")
                log.warning("%s: at gate closure, %s", self.name, problem)
        return kept

    async def _affordable(
        self, submissions: list[OrderSubmission], retail_units: int
    ) -> list[OrderSubmission]:
        """Leave out the meters that cannot cover what their orders could lock: a buyer's
        cost at its limit, a seller's worst case (all it sold bought back at retail) beyond
        what its sale pays at its limit. Pending withdrawals do not count as available."""
        meters = sorted({s.meter_id for s in submissions})
        if not meters:
            return submissions
        market = self.market
        balances = await self._on_chain("read the balances", lambda: market.balances(meters))
        pending = await self._on_chain(
            "read pending withdrawals", lambda: market.pending_withdrawals(meters)
        )
        exposure: dict[str, Position] = {}
        for s in submissions:
            p = exposure.get(s.meter_id, Position(meter_id_to_bytes32(s.meter_id)))
            value = s.quantity_wh * s.limit_price_units
            if s.side == "buy":
                p = Position(p.meter_id, p.bought_wh + s.quantity_wh, p.cost_milli + value,
                             p.sold_wh, p.value_milli)  # fmt: skip
            else:
                p = Position(p.meter_id, p.bought_wh, p.cost_milli, p.sold_wh + s.quantity_wh,
                             p.value_milli + value)  # fmt: skip
            exposure[s.meter_id] = p
        poor = set()
        for meter, position in exposure.items():
            raw = meter_id_to_bytes32(meter)
            available = balances[raw] - pending.get(raw, 0)
            if locked_units(position, retail_units) > available:
                poor.add(meter)
                self.refused.append(
                    f"meter {meter}: balance {balances[raw]} (less {pending.get(raw, 0)} being "
                    f"withdrawn) cannot cover its orders ({locked_units(position, retail_units)}); "
                    "deposit credit"
                )
        return [s for s in submissions if s.meter_id not in poor]

    # ---- delivery -----------------------------------------------------------------------------

    async def settle_delivery(self, interval: int) -> DeliveryNotice:
        """Settle the interval's delivery from the readings that arrived.

        A meter that traded but sent no usable reading is settled as having imported and
        exported nothing in the interval (its trades against the grid's tariffs); its energy
        is billed with its next reading. The chain refuses unusable readings one by one
        (ReadingRejected), never the whole interval.
        """
        if interval in self.delivered:
            return self.delivered[interval]
        readings = dict(self.book(interval).readings)
        cleared = self.cleared.get(interval)
        terms = cleared.terms if cleared is not None else None
        if terms is None:
            terms = await self._on_chain(
                f"read the terms of interval {interval}",
                lambda: self.market.batch_terms(interval),
            )
        traders = {bytes32_to_meter_id(p.meter_id) for p in terms.positions}
        used = self._readings_that_fit(interval, readings, traders)
        tx_hash, gas, error = None, 0, None
        # Even with nothing in it: the chain, not the market's word, says the interval is done.
        signed: list[SignedReading] = [used[m].to_signed() for m in sorted(used)]
        try:
            receipt = await self._on_chain(
                f"settle the delivery of interval {interval}",
                functools.partial(
                    self.market.settle_delivery,
                    interval,
                    signed,
                    terms=terms,
                    key=f"delivery:{interval}",
                ),
            )
            tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
            gas = int(receipt["gasUsed"])
            await self._report_rejections(interval, receipt)
        except ChainError as exc:
            log.error("%s: delivery of interval %d not settled: %s", self.name, interval, exc)
            error = str(exc)
        missing = sorted(traders - set(used))
        notice = DeliveryNotice(
            interval=interval,
            tx_hash=tx_hash,
            gas_used=gas,
            missing_readings=missing,
            error=error,
        )
        if error is None:
            self.delivered[interval] = notice
            record = {**notice.model_dump(), "used_readings": sorted(used)}
            self.records.put("delivered", str(interval), record)
        await self.send(self.community, Performative.INFORM, notice)
        if self.coordinator is not None:
            await self.send(
                self.coordinator, Performative.INFORM, Ack(what="settled", interval=interval)
            )
        return notice

    def _readings_that_fit(
        self, interval: int, readings: dict[str, ReadingSubmission], traders: set[str]
    ) -> dict[str, ReadingSubmission]:
        """The readings one delivery can settle: the traders' first, then the others in an
        order that rotates with the interval; a reading left out settles with the meter's
        next one, at the tariffs, exactly as it would have now."""
        room = self.max_delivery_entries - len(traders)
        others = sorted(
            (m for m in readings if m not in traders),
            key=lambda m: hash_rotation(m, interval),
        )
        kept = {m: readings[m] for m in readings if m in traders}
        for meter in others[: max(room, 0)]:
            kept[meter] = readings[meter]
        if len(others) > room:
            log.info(
                "%s: %d readings of interval %d wait for a later delivery (gas)",
                self.name,
                len(others) - max(room, 0),
                interval,
            )
        return kept

    async def _report_rejections(self, interval: int, receipt: TxReceipt) -> None:
        """Log, keep and raise an alarm for every reading the chain refused, with the reason."""
        for event in self.market.events_in(receipt, "ReadingRejected"):
            meter_id = bytes32_to_meter_id(bytes(event["args"]["meterId"]))
            reason = RejectReason(int(event["args"]["reason"]))
            problem = (
                f"reading of meter {meter_id} for interval {interval} refused by the chain: "
                f"{reason.explanation}"
            )
            self.refused.append(problem)
            log.warning("%s: %s", self.name, problem)
            await self._alarm(
                "reading-refused", meter_id, f"the chain refused it: {reason.explanation}"
            )

    async def _refund(self, interval: int) -> None:
        """Give a void interval's locked credit back (the operator may refund at any time;
        anyone may after the refund delay): its energy then settles with each meter's next
        reading, at the tariffs. Nothing to do without a batch on chain."""
        status = await self._on_chain(
            f"read the status of interval {interval}",
            functools.partial(self.market.interval_status, interval),
        )
        if status is not IntervalStatus.BATCH_SETTLED:
            return
        cleared = self.cleared.get(interval)
        terms = cleared.terms if cleared is not None else None
        receipt = await self._on_chain(
            f"refund interval {interval}",
            functools.partial(
                self.market.refund_interval, interval, terms, key=f"refund:{interval}"
            ),
        )
        log.info(
            "%s: refunded the locked credit of void interval %d in tx %s",
            self.name,
            interval,
            "0x" + bytes(receipt["transactionHash"]).hex(),
            extra={"event": "refunded", "interval": interval},
        )

    async def _alarm(self, kind: str, meter_id: str, message: str) -> None:
        if self.monitor is not None:
            alarm = AlarmNotice(kind=kind, meter_id=meter_id, message=message, at=datetime.now(UTC))
            await self.send(self.monitor, Performative.INFORM, alarm)

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
