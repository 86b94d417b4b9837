"""The market agent's receipt of orders and readings, its restart recovery and its void
intervals, against a real chain (anvil with the contract suite) on the in-process bus.

- A malformed order or reading never produces a traceback: it is refused with one line that
  names the field, and the sender is told (not-understood).
- Every order is kept on arrival; a restarted market clears an interval whose gate closed
  while it was down if it still can, and otherwise voids it, saying so on the bus.
- An interval is settled on chain or void, never "delivered" without a transaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from market_chain import MAX_POWER_W, METER_IDS, MarketChain

from listener import Listener
from meterchain.agents.bus_local import LocalBus
from meterchain.agents.market import MarketAgent
from meterchain.agents.messages import (
    ClearingNotice,
    DeliveryNotice,
    OrderSubmission,
    ReadingSubmission,
    TariffNotice,
    Tick,
    VoidNotice,
)
from meterchain.agents.runtime import Envelope, NotUnderstood, Performative
from meterchain.chain.client import EnergyMarketClient, MeterKind
from meterchain.chain.deploy import deploy_suite
from meterchain.chain.node import connect, dev_account, start_anvil, stop_anvil
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import (
    OrderMessage,
    OrderSide,
    ReadingMessage,
    meter_id_to_bytes32,
    sign_order,
    sign_reading,
)
from meterchain.store.db import Store, open_store
from meterchain.store.records import Records

INTERVAL_S = 900
T = 1_800_000_000 // INTERVAL_S * INTERVAL_S  # an interval start, in the future of anvil's clock
SELLER, BUYER = METER_IDS


@dataclass
class Setup:
    chain: MarketChain
    bus: LocalBus
    store: Store
    listener: Listener
    hostile: Listener
    markets: list[MarketAgent] = field(default_factory=list)

    async def start_market(self) -> MarketAgent:
        client = self.chain.client(self.store)
        market = MarketAgent(
            "market",
            self.bus,
            market=client,
            domain=client.domain,
            records=Records(self.store, "market"),
            tariffs=TariffNotice(retail_price=0.80, feed_in_price=0.30),
            chain_retry_max_s=0.2,
        )
        await market.start()
        self.markets.append(market)
        return market

    async def stop_market(self, market: MarketAgent) -> None:
        await market.stop()
        self.markets.remove(market)

    def order(self, meter_id: str, side: str, quantity_wh: int, price: int, nonce: int = 0,
              interval: int = T) -> OrderSubmission:  # fmt: skip
        message = OrderMessage(
            meter_id=meter_id_to_bytes32(meter_id),
            interval=interval,
            side=OrderSide.BUY if side == "buy" else OrderSide.SELL,
            quantity_wh=quantity_wh,
            limit_price=price,
            nonce=nonce,
        )
        signed = sign_order(self.client_domain, message, self.chain.boards[meter_id])
        return OrderSubmission(
            meter_id=meter_id,
            interval=interval,
            side=side,  # type: ignore[arg-type]
            quantity_wh=quantity_wh,
            limit_price_units=price,
            nonce=nonce,
            signature="0x" + signed.signature.hex(),
        )

    def reading(self, meter_id: str, import_wh: int, export_wh: int,
                interval: int = T) -> ReadingSubmission:  # fmt: skip
        """A signed reading whose registers start at 0 and end at `import_wh`/`export_wh`."""
        message = ReadingMessage(
            meter_id_to_bytes32(meter_id), interval, 0, 0, import_wh, export_wh
        )
        signed = sign_reading(self.client_domain, message, self.chain.boards[meter_id])
        return ReadingSubmission.from_signed(meter_id, signed)

    @functools.cached_property
    def client_domain(self) -> Any:
        return self.chain.client().domain

    async def send_raw(self, content_type: str, content: dict[str, Any]) -> None:
        await self.bus.send(
            Envelope(
                performative=Performative.PROPOSE,
                sender="hostile",
                receiver="market",
                content_type=content_type,
                content=content,
            )
        )


@pytest.fixture
async def setup(chain: MarketChain, tmp_path: Path) -> AsyncIterator[Setup]:
    bus = LocalBus()
    store = open_store(f"sqlite:///{tmp_path / 'market.db'}")
    listener, hostile = (
        Listener("board", bus, ("community",)),
        Listener("hostile", bus, ("community",)),
    )
    await listener.start()
    await hostile.start()
    running = Setup(chain, bus, store, listener, hostile)
    try:
        yield running
    finally:
        for market in list(running.markets):
            await running.stop_market(market)
        await listener.stop()
        await hostile.stop()
        store.close()


def tick(
    phase: str, deadline_s: float | None = None, interval: int = T, *, overdue: bool = False
) -> Tick:
    """A tick as the market's Ticker posts it (overdue: after its deadline, the market down)."""
    start = datetime.fromtimestamp(interval, UTC)
    deadline = None if deadline_s is None else start + timedelta(seconds=deadline_s)
    return Tick(interval_start=start, phase=phase, deadline=deadline, overdue=overdue)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, f"a traceback was logged: {record.getMessage()}"
        assert "\n" not in record.getMessage(), f"a multi-line log: {record.getMessage()!r}"


# ---- malformed orders and readings ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        ({"interval": 2**70}, "interval"),
        ({"signature": "0x" + "00" * 65}, "signature"),
        ({"quantity_wh": 2**64}, "quantity_wh"),
        ({"limit_price_units": 2**64}, "limit_price_units"),
        ({"nonce": 2**64}, "nonce"),
        ({"meter_id": "x" * 33}, "meter_id"),
    ],
)
async def test_a_malformed_order_is_refused_in_one_line_naming_the_field(
    setup: Setup, caplog: pytest.LogCaptureFixture, change: dict[str, Any], field_name: str
) -> None:
    market = await setup.start_market()
    good = setup.order(SELLER, "sell", 500, 30)
    caplog.set_level(logging.INFO)
    await setup.send_raw("order", {**good.model_dump(), **change})
    await setup.hostile.wait_for(NotUnderstood)

    no_tracebacks(caplog)
    refusals = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refusals) == 1, refusals
    assert field_name in refusals[0]
    assert field_name in setup.hostile.of(NotUnderstood)[0].reason
    # The market carries on: the well-formed order is taken.
    await setup.bus.send(_envelope(good))
    await until(lambda: good.order_id in market.book(T).orders)


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        ({"interval": 2**70}, "interval"),
        ({"signature": "0x" + "00" * 65}, "signature"),
        ({"end_import_wh": 2**64}, "end_import_wh"),
        ({"start_export_wh": -1}, "start_export_wh"),
    ],
)
async def test_a_malformed_reading_is_refused_in_one_line_naming_the_field(
    setup: Setup, caplog: pytest.LogCaptureFixture, change: dict[str, Any], field_name: str
) -> None:
    await setup.start_market()
    good = setup.reading(SELLER, 1000, 2000)
    caplog.set_level(logging.INFO)
    await setup.send_raw("reading", {**good.model_dump(), **change})
    await setup.hostile.wait_for(NotUnderstood)

    no_tracebacks(caplog)
    refusals = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refusals) == 1 and field_name in refusals[0], refusals


async def test_an_order_signed_by_someone_else_is_refused_in_one_line(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    market = await setup.start_market()
    forged = setup.order(SELLER, "sell", 500, 30).model_copy(
        update={"signature": setup.order(BUYER, "sell", 500, 30).signature}
    )
    caplog.set_level(logging.INFO)
    await setup.send_raw("order", forged.model_dump())
    await until(lambda: bool(market.refused))
    no_tracebacks(caplog)
    assert forged.order_id not in market.book(T).orders


# ---- orders kept on arrival; restarts ---------------------------------------------------------


async def test_every_order_is_kept_on_arrival_and_found_again_after_a_restart(
    setup: Setup,
) -> None:
    market = await setup.start_market()
    orders = [setup.order(SELLER, "sell", 500, 30), setup.order(BUYER, "buy", 400, 70)]
    for order in orders:
        await setup.bus.send(_envelope(order))
    await until(lambda: len(market.book(T).orders) == 2)
    await setup.stop_market(market)  # whatever it held in memory is gone

    again = await setup.start_market()
    assert sorted(again.book(T).orders) == sorted(o.order_id for o in orders)


async def put_orders(setup: Setup, market: MarketAgent) -> list[OrderSubmission]:
    orders = [setup.order(SELLER, "sell", 500, 30), setup.order(BUYER, "buy", 400, 70)]
    for order in orders:
        await market.receive_order(
            _envelope(order),
            order,
        )
    return orders


async def test_a_restarted_market_clears_an_interval_whose_gate_closed_while_it_was_down(
    setup: Setup,
) -> None:
    market = await setup.start_market()
    await put_orders(setup, market)
    await setup.stop_market(market)  # down across gate closure (T - 60), back before T + 900

    again = await setup.start_market()
    again.post_local(tick("clear", deadline_s=INTERVAL_S))
    notices = await setup.listener.wait_for(ClearingNotice)
    assert notices[0].interval == T and notices[0].tx_hash is not None
    assert sum(t.quantity_wh for t in notices[0].trades) == 400
    assert setup.listener.of(VoidNotice) == []
    client = setup.chain.client()
    assert [int(e["args"]["interval"]) for e in client.events("BatchSettled")] == [T]


async def test_a_restarted_market_voids_an_interval_it_can_no_longer_clear(
    setup: Setup,
) -> None:
    market = await setup.start_market()
    await put_orders(setup, market)
    await setup.stop_market(market)
    again = await setup.start_market()  # back after the interval: its gate closure is overdue
    again.post_local(tick("clear", deadline_s=INTERVAL_S, overdue=True))
    voids = await setup.listener.wait_for(VoidNotice)
    assert voids[0].interval == T
    assert "gate closure" in voids[0].reason
    assert setup.listener.of(ClearingNotice) == []
    assert setup.chain.client().events("BatchSettled") == []
    # The void is final: a restarted market neither clears it nor forgets it.
    await setup.stop_market(again)
    third = await setup.start_market()
    third.post_local(tick("clear", deadline_s=INTERVAL_S, overdue=True))
    third.post_local(tick("settle"))
    await setup.listener.wait_for(DeliveryNotice)
    assert len(setup.listener.of(VoidNotice)) == 1
    assert setup.chain.client().events("BatchSettled") == []
    assert T in third.void


async def test_an_interval_with_nothing_to_settle_is_settled_on_chain_all_the_same(
    setup: Setup,
) -> None:
    """Never 'delivered' without a transaction: the chain says the interval is done."""
    market = await setup.start_market()
    market.post_local(tick("clear", deadline_s=INTERVAL_S))
    market.post_local(tick("settle"))
    notices = await setup.listener.wait_for(DeliveryNotice)
    assert notices[0].tx_hash is not None and notices[0].error is None
    events = setup.chain.client().events("DeliverySettled")
    assert [int(e["args"]["interval"]) for e in events] == [T]
    record = Records(setup.store, "market").get("delivered", str(T))
    assert record is not None and record["tx_hash"] == notices[0].tx_hash


async def test_a_reading_that_arrives_before_the_delivery_is_settled_counts(
    setup: Setup,
) -> None:
    market = await setup.start_market()
    await put_orders(setup, market)
    market.post_local(tick("clear", deadline_s=INTERVAL_S))
    await setup.listener.wait_for(ClearingNotice)
    for meter_id in METER_IDS:  # baselines in an earlier interval
        await market.receive_reading(setup.reading(meter_id, 1000, 1000, interval=T - INTERVAL_S))
    market.post_local(tick("settle", interval=T - INTERVAL_S))
    await setup.listener.wait_for(DeliveryNotice)
    # Late, long after the reading was due, but before the market settles the interval.
    await market.receive_reading(setup.reading(SELLER, 1000, 1500))
    await market.receive_reading(setup.reading(BUYER, 1400, 1000))
    market.post_local(tick("settle"))
    notices = await setup.listener.wait_for(DeliveryNotice, 2)
    assert notices[1].interval == T and notices[1].missing_readings == []


async def test_the_market_keeps_taking_orders_while_a_chain_step_waits_for_the_node(
    tmp_path: Path,
) -> None:
    """The chain work runs beside the mailbox: a clearing stuck on a node that is away does
    not stop the market from taking the next interval's orders."""
    node = start_anvil()
    try:
        w3 = connect(node.rpc_url)
        sender = TransactionSender(w3, dev_account(0))
        addresses = deploy_suite(sender)
        client = EnergyMarketClient(sender, addresses["EnergyMarket"])
        boards = {m: Account.from_key(bytes([i + 1]) * 32) for i, m in enumerate(METER_IDS)}
        for meter_id, board in boards.items():
            client.registry.register_meter(
                meter_id, board.address, board.address, MeterKind.PROSUMER, MAX_POWER_W
            )
            client.registry.assign_market(meter_id, client.address)
        bus, store = LocalBus(), open_store(f"sqlite:///{tmp_path / 'market.db'}")
        market = MarketAgent(
            "market",
            bus,
            market=client,
            domain=client.domain,
            records=Records(store, "market"),
            tariffs=TariffNotice(retail_price=0.80, feed_in_price=0.30),
            chain_retry_max_s=0.2,
        )
        await market.start()
        chain = MarketChain(node, w3, addresses["EnergyMarket"], boards)
        setup = Setup(
            chain,
            bus,
            store,
            Listener("board", bus, ("community",)),
            Listener("hostile", bus, ("community",)),
        )
        for order in [setup.order(SELLER, "sell", 500, 30), setup.order(BUYER, "buy", 400, 70)]:
            await market.receive_order(_envelope(order), order)
        stop_anvil(node)  # the node goes away just before gate closure
        market.post_local(tick("clear", deadline_s=INTERVAL_S))
        await until(lambda: market.chain_retries > 0)

        later = setup.order(SELLER, "sell", 300, 30, interval=T + INTERVAL_S)
        await bus.send(_envelope(later))
        await until(lambda: later.order_id in market.book(T + INTERVAL_S).orders, timeout_s=2)
        late = setup.order(BUYER, "buy", 100, 70, nonce=5)  # after gate closure of T
        await bus.send(_envelope(late))
        await until(lambda: bool(market.refused), timeout_s=2)
        assert "gate closure" in market.refused[-1]
        assert T not in market.cleared
        await market.stop()
        store.close()
    finally:
        stop_anvil(node)


def _envelope(order: OrderSubmission) -> Envelope:
    return Envelope(
        performative=Performative.PROPOSE,
        sender=f"prosumer-{order.meter_id}",
        receiver="market",
        content_type="order",
        content=order.model_dump(),
    )


async def test_a_market_starting_fresh_voids_nothing_that_had_no_orders(setup: Setup) -> None:
    market = await setup.start_market()
    for back in range(4):  # the catch-up of a first start: overdue gate closures, no orders
        market.post_local(tick("clear", INTERVAL_S, T - back * INTERVAL_S, overdue=True))
    market.post_local(tick("settle"))
    await setup.listener.wait_for(DeliveryNotice)
    assert setup.listener.of(VoidNotice) == [] and market.void == {}
