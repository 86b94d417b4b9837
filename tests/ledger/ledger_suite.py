"""The chain tests' deployed suite with the ledger contracts, and helpers to trade and deliver
an interval in one call, for the ledger tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from contract_suite import (
    ADMIN,
    BASELINE,
    GRID,
    INTERVAL,
    MAX_POWER_W,
    OUTSIDER,
    TREASURY,
    Meter,
    Suite,
    board_key,
    deploy_test_suite,
    trade,
)
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import TxReceipt

from meterchain.chain.client import MeterKind
from meterchain.chain.deploy import FundCampaign, deploy_fund
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.ledger_clients import (
    BillingClient,
    CommunityFundClient,
    EnergyCertificatesClient,
)
from meterchain.chain.node import dev_account
from meterchain.chain.signing import OrderSide, SignedReading, meter_id_to_bytes32

ALICE, BOB, CAROL, DAVE = 0, 1, 2, 3
FORTALEZA = "-3.7319,-38.5267 Fortaleza CE BR"
COMMISSIONED = 1_767_225_600  # 2026-01-01


@dataclass(frozen=True)
class Sale:
    """`seller` sells `buyer` `wh` at `price` (cents/kWh) in the batch."""

    buyer: int
    seller: int
    wh: int
    price: int = 50


def certificates(suite: Suite, account: int | Any = ADMIN) -> EnergyCertificatesClient:
    return EnergyCertificatesClient(suite.sender(account), suite.addresses["EnergyCertificates"])


def billing(suite: Suite, account: int | Any = ADMIN) -> BillingClient:
    return BillingClient(suite.sender(account), suite.addresses["Billing"])


def fund(suite: Suite, address: str, account: int | Any = ADMIN) -> CommunityFundClient:
    return CommunityFundClient(suite.sender(account), address)


def register_pv(suite: Suite, meter: Meter, capacity_w: int = 20_000) -> None:
    """Register a meter as a PV device (the issuer is the admin); 20 kW: 5 kWh per interval."""
    certificates(suite).register_device(
        meter.name,
        capacity_w=capacity_w,
        commissioned_at=COMMISSIONED,
        site=f"house of {meter.name}",
        technology="Solar;Photovoltaic;Roof mounted",
        location=FORTALEZA,
    )


def settle(
    suite: Suite,
    sales: Sequence[Sale],
    flows: dict[int, tuple[int, int]],
    *,
    interval: int = INTERVAL,
    starts: dict[int, tuple[int, int]] | None = None,
) -> TxReceipt:
    """Batch `sales` (if any) and deliver the interval with a reading of each meter in `flows`
    (meter index → (imported Wh, exported Wh)) starting from `starts` (default (0, 0))."""
    orders = []
    trades = []
    for sale in sales:
        buyer, seller = suite.meters[sale.buyer], suite.meters[sale.seller]
        buy = suite.order(buyer, OrderSide.BUY, sale.wh, sale.price, interval=interval)
        sell = suite.order(seller, OrderSide.SELL, sale.wh, sale.price, interval=interval)
        orders += [buy, sell]
        trades.append(trade(buy, sell, sale.wh, sale.price))
    market = suite.market()
    if trades:
        market.settle_batch(interval, trades, orders)
    readings: list[SignedReading] = [
        suite.reading(
            suite.meters[index],
            imported,
            exported,
            interval=interval,
            start=(starts or {}).get(index, (0, 0)),
        )
        for index, (imported, exported) in flows.items()
    ]
    return market.settle_delivery(interval, readings)


@contextmanager
def snapshot(w3: Web3) -> Iterator[None]:
    """Revert what the block does (a snapshot per hypothesis example)."""
    snapshot_id = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield
    finally:
        w3.provider.make_request("evm_revert", [snapshot_id])  # type: ignore[arg-type]


def deploy_street(w3: Web3) -> Suite:
    """alice and bob: PV prosumers registered as devices (20 kW and 8 kW: 5,000 and 2,000 Wh
    per interval at most); carol: a consumer; dave: a prosumer that is not a device."""
    suite = deploy_test_suite(
        w3,
        kinds=[MeterKind.PROSUMER, MeterKind.PROSUMER, MeterKind.CONSUMER, MeterKind.PROSUMER],
    )
    register_pv(suite, suite.meters[ALICE])
    register_pv(suite, suite.meters[BOB], capacity_w=8_000)
    return suite


def reverts(action: Callable[[], Any], error_name: str) -> TransactionReverted:
    with pytest.raises(TransactionReverted) as caught:
        action()
    assert caught.value.error_name == error_name, str(caught.value)
    return caught.value


def later(suite: Suite, seconds: int) -> None:
    suite.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    suite.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def now(suite: Suite) -> int:
    return int(suite.w3.eth.get_block("latest")["timestamp"])


def owner_address(suite: Suite, index: int) -> str:
    return str(suite.meters[index].owner.address)


def account(index: int) -> Any:
    return dev_account(index)


# ---- a community plant funded by the backers

PRICE = 10_000  # cents per share (100 currency units)
GOAL_SHARES, CAP_SHARES = 5, 10
DAY = 86_400
PLANT, CAROL = 4, 2  # the plant is the suite's fifth meter; carol buys its energy
MANAGER = 8  # the plant's owner (draws the funds)
BACKERS = (4, 5, 6)  # dev accounts that buy shares (they also own alice, bob, carol)


@dataclass
class Plant:
    suite: Suite
    fund: str

    def client(self, account: int | LocalAccount) -> CommunityFundClient:
        return fund(self.suite, self.fund, account)


def deploy_plant(w3: Web3) -> Plant:
    suite = deploy_test_suite(
        w3,
        kinds=[MeterKind.PROSUMER, MeterKind.PROSUMER, MeterKind.CONSUMER, MeterKind.PROSUMER],
    )
    admin = suite.sender(ADMIN)
    address = deploy_fund(
        admin,
        suite.addresses["EnergyCredit"],
        suite.addresses["EnergyMarket"],
        FundCampaign(
            plant_meter_id=meter_id_to_bytes32("plant"),
            price_per_share=PRICE,
            goal=GOAL_SHARES * PRICE,
            cap=CAP_SHARES * PRICE,
            deadline=int(w3.eth.get_block("latest")["timestamp"]) + 7 * DAY,
        ),
        manager=dev_account(MANAGER).address,
    )
    # The plant's meter is a generator owned by the fund: its revenue can only go there.
    plant = Meter("plant", board_key(PLANT), dev_account(MANAGER))
    suite.registry(ADMIN).register_meter(
        plant.name, plant.key.address, address, MeterKind.GENERATOR, MAX_POWER_W
    )
    suite.registry(ADMIN).assign_market(plant.name, suite.addresses["EnergyMarket"])
    suite.market(GRID).set_baseline(plant.name, BASELINE, 0, 0)
    suite.meters.append(plant)
    register_pv(suite, plant, capacity_w=20_000)
    # The manager leaves a reserve in the market for the locks of the plant's sales.
    suite.credit(TREASURY).mint(dev_account(MANAGER).address, 10_000)
    suite.market(MANAGER).deposit(plant.name, 10_000)
    fund(suite, address, MANAGER).set_reserve(10_000)
    for backer in (*BACKERS, OUTSIDER):
        suite.credit(TREASURY).mint(dev_account(backer).address, CAP_SHARES * PRICE)
    return Plant(suite, address)
