"""Many meters' balances come back in one JSON-RPC batch, equal to one call each."""

from __future__ import annotations

from meterchain.chain.client import (
    EnergyCreditClient,
    EnergyMarketClient,
    MeterKind,
    MeterRegistryClient,
)
from meterchain.chain.deploy import deploy_suite
from meterchain.chain.sender import TransactionSender


def test_balances_of_many_meters_equal_single_calls(sender: TransactionSender) -> None:
    addresses = deploy_suite(sender)
    registry = MeterRegistryClient(sender, addresses["MeterRegistry"])
    credit = EnergyCreditClient(sender, addresses["EnergyCredit"])
    market = EnergyMarketClient(sender, addresses["EnergyMarket"])
    credit.mint(sender.address, 10_000)
    meters = [f"{30_000_000 + i}" for i in range(6)]
    for index, meter in enumerate(meters[:5]):  # the sixth is not even registered
        registry.register_meter(meter, sender.address, sender.address, MeterKind.CONSUMER, 10_000)
        market.deposit(meter, 100 * (index + 1))
    balances = market.balances(meters)
    assert list(balances.values()) == [100, 200, 300, 400, 500, 0]
    assert balances == {m: market.balance_of(m) for m in balances}
