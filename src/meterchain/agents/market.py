"""MarketAgent: one per community. Collects orders until gate closure, clears the double
auction, settles the batch on chain, publishes the result; after the interval it settles
delivery from the boards' signed readings.

Orders and readings are recorded in the store as they arrive and each chain transaction goes
through the sender's outbox under a key per interval, so a restarted market agent neither
loses an order nor settles an interval twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel

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
)
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative
from meterchain.chain.batch import BatchTrade
from meterchain.chain.client import EnergyMarketClient
from meterchain.chain.errors import ChainError
from meterchain.chain.signing import MarketDomain, meter_id_to_bytes32, recover_order_signer
from meterchain.chain.units import from_units, price_to_units
from meterchain.market.book import OrderBook
from meterchain.market.clearing import Mechanism, clear
from meterchain.model import Order, Side
from meterchain.store.records import Records

log = logging.getLogger(__name__)


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
    ) -> None:
        super().__init__(name, bus)
        self.market = market
        self.domain = domain
        self.signers = signers  # meter id -> registered signer address
        self.records = records
        self.tariffs = tariffs
        self.mechanism = mechanism
        self.community = community
        self.coordinator = coordinator
        self.decimals = decimals
        self.books: dict[int, IntervalBook] = {}
        self.cleared: dict[int, ClearedInterval] = {}
        self.delivered: dict[int, DeliveryNotice] = {}
        self.refused: list[str] = []
        self._restore()

    def _restore(self) -> None:
        """Reload what arrived before a restart."""
        for key, payload in self.records.all("order").items():
            submission = OrderSubmission.model_validate(payload)
            book = self.book(submission.interval)
            book.orders[key] = submission
            book.answered.add(submission.meter_id)
        for payload in self.records.all("reading").values():
            reading = ReadingSubmission.model_validate(payload)
            self.book(reading.interval).readings[reading.meter_id] = reading

    def book(self, interval: int) -> IntervalBook:
        return self.books.setdefault(interval, IntervalBook())

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, OrderSubmission):
            await self.receive_order(envelope, content)
        elif isinstance(content, NoOrder):
            self.book(content.interval).answered.add(content.meter_id)
        elif isinstance(content, ReadingSubmission):
            self.receive_reading(content)
        elif isinstance(content, TariffNotice):
            self.tariffs = content
        elif isinstance(content, Tick):
            interval = int(content.interval_start.timestamp())
            if content.phase == "clear":
                await self.clear_interval(interval)
            elif content.phase == "settle":
                await self.settle_delivery(interval)

    async def receive_order(self, envelope: Envelope, order: OrderSubmission) -> None:
        """Check an order's signature at once (the chain checks again) and keep it."""
        problem = self._order_problem(order)
        if problem is not None:
            self.refused.append(problem)
            log.warning("%s refused an order: %s", self.name, problem)
            return
        self.records.put_once("order", order.order_id, order.model_dump())
        book = self.book(order.interval)
        book.orders[order.order_id] = order
        book.answered.add(order.meter_id)

    def _order_problem(self, order: OrderSubmission) -> str | None:
        if order.interval in self.cleared:
            return f"order {order.order_id} arrived after gate closure of interval {order.interval}"
        expected = self.signers.get(order.meter_id)
        if expected is None:
            return f"order {order.order_id}: meter {order.meter_id} is not registered here"
        signer = recover_order_signer(self.domain, order.to_signed())
        if signer.lower() != expected.lower():
            return f"order {order.order_id}: signed by {signer}, not the meter's {expected}"
        return None

    def receive_reading(self, reading: ReadingSubmission) -> None:
        self.records.put_once(
            "reading", f"{reading.interval}:{reading.meter_id}", reading.model_dump()
        )
        self.book(reading.interval).readings[reading.meter_id] = reading

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
        if interval in self.cleared:
            return self.cleared[interval]
        submissions = sorted(self.book(interval).orders.values(), key=lambda s: s.order_id)
        submissions = await self._affordable(submissions)
        by_id = {s.order_id: s for s in submissions}
        result = clear(self._book_for_clearing(submissions), self.mechanism)
        batch: list[BatchTrade] = []
        notices: list[TradeNotice] = []
        for trade in result.trades:
            buy, sell = by_id[trade.buy_order_id], by_id[trade.sell_order_id]
            price_units = min(
                max(price_to_units(trade.price, self.decimals), sell.limit_price_units),
                buy.limit_price_units,
            )
            batch.append(
                BatchTrade(
                    buy=(meter_id_to_bytes32(buy.meter_id), buy.nonce),
                    sell=(meter_id_to_bytes32(sell.meter_id), sell.nonce),
                    quantity_wh=trade.quantity_wh,
                    price=price_units,
                )
            )
            notices.append(
                TradeNotice(
                    buy_order=buy.order_id,
                    sell_order=sell.order_id,
                    buyer=buy.meter_id,
                    seller=sell.meter_id,
                    quantity_wh=trade.quantity_wh,
                    price=float(from_units(price_units, self.decimals)),
                )
            )
        tx_hash, gas, error = None, 0, None
        if batch:
            used = {key for t in batch for key in (t.buy, t.sell)}
            signed = [
                s.to_signed()
                for s in submissions
                if (meter_id_to_bytes32(s.meter_id), s.nonce) in used
            ]
            try:
                settled = await asyncio.to_thread(
                    self.market.settle_batch, interval, batch, signed, key=f"batch:{interval}"
                )
                tx_hash = "0x" + bytes(settled.receipt["transactionHash"]).hex()
                gas = settled.gas_used
            except ChainError as exc:
                log.error("%s: batch of interval %d not settled: %s", self.name, interval, exc)
                error = str(exc)
                notices = []
        notice = ClearingNotice(
            interval=interval,
            price=result.price if notices else None,
            trades=notices,
            tx_hash=tx_hash,
            gas_used=gas,
            error=error,
        )
        cleared = ClearedInterval(notice, len(submissions))
        self.cleared[interval] = cleared
        self.records.put("cleared", str(interval), notice.model_dump())
        await self.send(self.community, Performative.INFORM, notice)
        return cleared

    async def _affordable(self, submissions: list[OrderSubmission]) -> list[OrderSubmission]:
        """Drop buy orders whose meter cannot pay their limit (the batch would revert)."""
        buyers = sorted({s.meter_id for s in submissions if s.side == "buy"})
        if not buyers:
            return submissions
        balances = await asyncio.to_thread(self.market.balances, buyers)
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

    async def settle_delivery(self, interval: int) -> DeliveryNotice:
        """Settle the interval's delivery from the readings that arrived."""
        if interval in self.delivered:
            return self.delivered[interval]
        readings = self.book(interval).readings
        cleared = self.cleared.get(interval)
        traders = (
            {t.buyer for t in cleared.notice.trades} | {t.seller for t in cleared.notice.trades}
            if cleared
            else set()
        )
        missing = sorted(traders - set(readings))
        signed = [readings[m].to_signed() for m in sorted(readings)]
        tx_hash, gas, error = None, 0, None
        if signed or traders:
            try:
                receipt = await asyncio.to_thread(
                    self.market.settle_delivery, interval, signed, key=f"delivery:{interval}"
                )
                tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
                gas = int(receipt["gasUsed"])
            except ChainError as exc:
                log.error("%s: delivery of interval %d not settled: %s", self.name, interval, exc)
                error = str(exc)
        notice = DeliveryNotice(
            interval=interval,
            tx_hash=tx_hash,
            gas_used=gas,
            missing_readings=missing,
            error=error,
        )
        if error is None:
            self.delivered[interval] = notice
            self.records.put("delivered", str(interval), notice.model_dump())
        await self.send(self.community, Performative.INFORM, notice)
        if self.coordinator is not None:
            await self.send(
                self.coordinator, Performative.INFORM, Ack(what="settled", interval=interval)
            )
        return notice
