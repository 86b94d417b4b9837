"""The market agent's side of issue 8, in process against a real anvil node.

- it re-checks every order's meter and key at gate closure, so a key rotated or revoked after
  its orders arrived never reaches the batch;
- a batch the chain refuses because of one meter is cleared again without it, so the others'
  trades settle;
- it never posts a batch whose delivery would not fit in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from meterchain.agents.bus_local import LocalBus
from meterchain.agents.market import MarketAgent
from meterchain.agents.messages import OrderSubmission, ReadingSubmission, TariffNotice
from meterchain.agents.monitor import AlarmListener
from meterchain.chain.batch import DELIVERY_GAS_BASE, DELIVERY_GAS_PER_ENTRY
from meterchain.chain.client import EnergyMarketClient, IntervalStatus, MeterKind
from meterchain.chain.deploy import deploy_suite
from meterchain.chain.node import AnvilNode, connect, dev_account, start_anvil, stop_anvil
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
from meterchain.store.outbox import Outbox
from meterchain.store.records import Records

INTERVAL = 1_795_000_500
DEPOSIT = 10_000  # cents


@dataclass
class Board:
    name: str
    key: LocalAccount
    nonce: int = 0

    def order(
        self, market: EnergyMarketClient, side: str, quantity_wh: int, limit: int
    ) -> OrderSubmission:
        self.nonce += 1
        message = OrderMessage(
            meter_id_to_bytes32(self.name),
            INTERVAL,
            OrderSide.BUY if side == "buy" else OrderSide.SELL,
            quantity_wh,
            limit,
            self.nonce,
        )
        signed = sign_order(market.domain, message, self.key)
        return OrderSubmission(
            meter_id=self.name,
            interval=INTERVAL,
            side=side,  # type: ignore[arg-type]
            quantity_wh=quantity_wh,
            limit_price_units=limit,
            nonce=self.nonce,
            signature="0x" + signed.signature.hex(),
        )


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    running = start_anvil()
    yield running
    stop_anvil(running)


@pytest.fixture
def chain(node: AnvilNode) -> Iterator[EnergyMarketClient]:
    w3 = connect(node.rpc_url)
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    sender = TransactionSender(w3, dev_account(0))
    addresses = deploy_suite(sender, operator=dev_account(1).address)
    market = EnergyMarketClient(sender, addresses["EnergyMarket"])
    market.credit.mint(sender.address, 10 * DEPOSIT + 10**6)
    market.deposit_grid(10**6)
    yield market
    w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


def enrol(market: EnergyMarketClient, names: list[str]) -> dict[str, Board]:
    boards = {}
    for i, name in enumerate(names):
        key: LocalAccount = Account.from_key((0xA6E47000 + i).to_bytes(32, "big"))
        market.registry.register_meter(name, key.address, market.sender.address,
                                       MeterKind.PROSUMER, 20_000)  # fmt: skip
        market.registry.assign_market(name, market.address)
        market.set_baseline(name, INTERVAL - 900, 0, 0)
        market.deposit(name, DEPOSIT)
        boards[name] = Board(name, key)
    return boards


def market_agent(chain: EnergyMarketClient, store: Store, **options: int) -> MarketAgent:
    """The market agent, as the operator (dev account 1) with its outbox in `store`."""
    operator = TransactionSender(chain.w3, dev_account(1), outbox=Outbox(store))
    client = EnergyMarketClient(operator, chain.address)
    return MarketAgent(
        "market",
        LocalBus(),
        market=client,
        domain=client.domain,
        records=Records(store, "market"),
        tariffs=TariffNotice(retail_price=0.80, feed_in_price=0.30),
        **options,
    )


@pytest.fixture
async def agent(chain: EnergyMarketClient, tmp_path: Path) -> AsyncIterator[MarketAgent]:
    store = open_store(f"sqlite:///{tmp_path / 'market.db'}")
    yield market_agent(chain, store)
    store.close()


async def receive(agent: MarketAgent, *orders: OrderSubmission) -> None:
    for order in orders:
        await agent._order_problem(order)  # warm the registry cache, as arrival does
        assert await agent._order_problem(order) is None
        await agent.receive_order(None, order)  # type: ignore[arg-type]


def traders(chain: EnergyMarketClient) -> set[str]:
    return {p.meter_id.rstrip(b"\0").decode() for p in chain.positions(INTERVAL)}


async def test_a_key_rotated_after_its_orders_arrived_is_caught_at_gate_closure(
    agent: MarketAgent, chain: EnergyMarketClient
) -> None:
    boards = enrol(chain, ["alice", "bob", "dave"])
    await receive(
        agent,
        boards["alice"].order(chain, "buy", 1000, 70),
        boards["bob"].order(chain, "sell", 1000, 40),
        boards["dave"].order(chain, "sell", 1000, 45),
    )
    chain.registry.rotate_signer("bob", dev_account(7).address)  # bob's board was replaced
    cleared = await agent.clear_interval(INTERVAL)
    assert cleared.notice.error is None
    assert traders(chain) == {"alice", "dave"}
    assert any("at gate closure" in r and "bob" in r for r in agent.refused)


async def test_a_meter_that_breaks_the_batch_is_left_out_and_the_rest_settles(
    agent: MarketAgent, chain: EnergyMarketClient
) -> None:
    boards = enrol(chain, ["alice", "bob", "carol"])
    await receive(
        agent,
        boards["alice"].order(chain, "buy", 1000, 70),
        boards["carol"].order(chain, "buy", 1000, 70),
        boards["bob"].order(chain, "sell", 2000, 40),
    )
    # The clearing was worked out and recorded (gate closure), then the market restarted…
    plan = await agent._plan(INTERVAL, [])
    agent.records.put_once("plan", str(INTERVAL), plan)
    assert {t["buy"][0] for t in plan["batch"]} == {"alice", "carol"}
    # …and meanwhile Alice's whole balance left (a withdrawal requested long before).
    chain.request_withdrawal("alice", DEPOSIT)
    chain.w3.provider.make_request("evm_increaseTime", [chain.withdrawal_delay])  # type: ignore[arg-type]
    chain.withdraw("alice", chain.sender.address)
    cleared = await agent.clear_interval(INTERVAL)
    assert cleared.notice.error is None
    assert chain.interval_status(INTERVAL) is IntervalStatus.BATCH_SETTLED
    assert traders(chain) == {"bob", "carol"}
    assert any("alice" in r and "InsufficientBalance" in r for r in agent.refused)
    assert agent.records.get("plan", str(INTERVAL))["excluded"] == ["alice"]  # type: ignore[index]


async def test_a_batch_never_holds_more_meters_than_one_delivery_can_settle(
    chain: EnergyMarketClient, tmp_path: Path
) -> None:
    boards = enrol(chain, ["m1", "m2", "m3", "m4", "m5", "m6"])
    store = open_store(f"sqlite:///{tmp_path / 'capped.db'}")
    # Room for four meters in a delivery.
    agent = market_agent(chain, store, delivery_gas=DELIVERY_GAS_BASE + 4 * DELIVERY_GAS_PER_ENTRY)
    try:
        await receive(
            agent,
            *(
                boards[m].order(chain, "buy", 1000 + i, 70)
                for i, m in enumerate(["m1", "m2", "m3"])
            ),
            *(
                boards[m].order(chain, "sell", 1000 + i, 40)
                for i, m in enumerate(["m4", "m5", "m6"])
            ),
        )
        await agent.clear_interval(INTERVAL)
        assert 0 < len(traders(chain)) <= 4
        assert any("more meters traded than one delivery can settle" in r for r in agent.refused)
    finally:
        store.close()


async def test_what_follows_a_delivery_runs_once_it_is_settled(
    agent: MarketAgent, chain: EnergyMarketClient
) -> None:
    """The deployed market issues the interval's certificates this way (agents/services.py)."""
    enrol(chain, ["alice"])
    followed: list[int] = []

    async def follow_up(interval: int) -> None:
        followed.append(interval)

    agent.after_delivery.append(follow_up)
    await agent._settle_step(INTERVAL)
    assert followed == [INTERVAL]
    assert chain.interval_status(INTERVAL) is IntervalStatus.DELIVERED


async def test_an_absurd_signed_reading_is_refused_with_an_alarm_and_bricks_nothing(
    agent: MarketAgent, chain: EnergyMarketClient
) -> None:
    """Issue 14: a faulty meter's 10^12 Wh, signed by the board's own key, emptied the meter's
    balance and left every later reading `CounterWentBackwards`. Now the chain refuses it as
    implausible for the meter's connection, the market says so and raises an alarm, and the
    next genuine reading settles."""
    boards = enrol(chain, ["alice"])
    monitor = AlarmListener("monitor", agent.bus)
    await monitor.start()
    agent.monitor = "monitor"
    try:
        before = chain.balance_of("alice")
        absurd = reading(chain, boards["alice"], INTERVAL, (0, 0), (10**12, 0))
        await agent.receive_reading(absurd)
        await agent._settle_step(INTERVAL)
        assert chain.interval_status(INTERVAL) is IntervalStatus.DELIVERED
        assert chain.balance_of("alice") == before  # nothing billed for it
        assert any("exceeds what the meter's connection can carry" in p for p in agent.refused)
        for _ in range(50):
            if monitor.received:
                break
            await asyncio.sleep(0.02)
        [alarm] = monitor.received
        assert (alarm.kind, alarm.meter_id) == ("reading-refused", "alice")
        # The meter is not bricked: its next genuine reading (from its last settled registers)
        # settles, and bills the energy since then at the tariffs.
        genuine = reading(chain, boards["alice"], INTERVAL + 900, (0, 0), (400, 0))
        await agent.receive_reading(genuine)
        await agent._settle_step(INTERVAL + 900)
        assert chain.balance_of("alice") < before
        assert len(agent.refused) == 1
    finally:
        await monitor.stop()


def reading(
    market: EnergyMarketClient,
    board: Board,
    interval: int,
    start: tuple[int, int],
    end: tuple[int, int],
) -> ReadingSubmission:
    """A reading of (import, export) registers at both ends, signed by the board's key."""
    message = ReadingMessage(meter_id_to_bytes32(board.name), interval, *start, *end)
    return ReadingSubmission.from_signed(
        board.name, sign_reading(market.domain, message, board.key)
    )
