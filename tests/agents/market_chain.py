"""A chain for the market agent's tests: a real anvil with the contract suite, two meters.

The agent tests that need no separate processes run a MarketAgent in the test's event loop
on the in-process bus, against this chain. Each test works inside an EVM snapshot, so what it
settles does not leak into the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from meterchain.chain.client import EnergyMarketClient, MeterKind
from meterchain.chain.deploy import deploy_suite
from meterchain.chain.node import AnvilNode, connect, dev_account, start_anvil, stop_anvil
from meterchain.chain.sender import TransactionSender
from meterchain.chain.units import to_units
from meterchain.store.db import Store
from meterchain.store.outbox import Outbox

METER_IDS = ("20000001", "20000002")
METER_CREDIT_UNITS = 20_000
MAX_POWER_W = 20_000
BASELINE_INTERVAL = 1_700_000_100  # meters enrolled with registers (0, 0), long before the tests
GRID_CREDIT_UNITS = 1_000_000


@dataclass(frozen=True)
class MarketChain:
    """A deployed suite with registered, funded meters, for agents under test."""

    node: AnvilNode
    w3: Web3
    address: str
    boards: dict[str, LocalAccount]

    def client(self, store: Store | None = None) -> EnergyMarketClient:
        """A client with its own sender (senders cache nonces; snapshots rewind them), with
        its transaction outbox in `store` if given (the market agent's needs one)."""
        outbox = None if store is None else Outbox(store)
        sender = TransactionSender(self.w3, dev_account(0), outbox=outbox)
        return EnergyMarketClient(sender, self.address)


@pytest.fixture(scope="session")
def market_chain() -> Iterator[MarketChain]:
    node = start_anvil()
    try:
        w3 = connect(node.rpc_url)
        sender = TransactionSender(w3, dev_account(0))
        addresses = deploy_suite(sender, retail_price="0.80", feed_in_price="0.30")
        market = EnergyMarketClient(sender, addresses["EnergyMarket"])
        credit = market.credit
        total = METER_CREDIT_UNITS * len(METER_IDS) + GRID_CREDIT_UNITS
        credit.mint(sender.address, total)
        market.deposit_grid(GRID_CREDIT_UNITS)
        boards = {}
        for index, meter_id in enumerate(METER_IDS):
            board = Account.from_key(bytes([index + 1]) * 32)
            market.registry.register_meter(
                meter_id, board.address, board.address, MeterKind.PROSUMER, MAX_POWER_W
            )
            market.registry.assign_market(meter_id, market.address)
            market.set_baseline(meter_id, BASELINE_INTERVAL, 0, 0)
            market.deposit(meter_id, METER_CREDIT_UNITS)
            boards[meter_id] = board
        assert to_units(1, credit.decimals) > 0
        yield MarketChain(node, w3, addresses["EnergyMarket"], boards)
    finally:
        stop_anvil(node)


@pytest.fixture
def chain(market_chain: MarketChain) -> Iterator[MarketChain]:
    """The market chain, rewound after the test (evm_snapshot / evm_revert)."""
    w3 = market_chain.w3
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    yield market_chain
    reverted = w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
    assert reverted.get("result") is True, reverted
