"""EnergyMarket on a real anvil node, through the Python client: money, batches, delivery."""

from __future__ import annotations

import time

import pytest
from contract_suite import (
    DEPOSIT,
    FEED_IN,
    GRID,
    GRID_FUNDS,
    INTERVAL,
    NEXT_INTERVAL,
    OPERATOR,
    OUTSIDER,
    RETAIL,
    TREASURY,
    Suite,
    deploy_test_suite,
    trade,
)
from web3 import Web3

from meterchain.chain.batch import Position, compute_positions, decode_positions, settle_meter
from meterchain.chain.client import IntervalStatus
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account
from meterchain.chain.signing import OrderSide

BASELINE = INTERVAL - 900


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    return deploy_test_suite(w3)


@pytest.fixture
def suite(deployed: Suite, chain_snapshot: str) -> Suite:
    deployed.nonces.clear()
    return deployed


def set_baseline(suite: Suite) -> None:
    """Alice has imported 1,000 Wh and Bob exported 2,000 Wh before the traded interval."""
    alice, bob, *_ = suite.meters
    suite.market().settle_delivery(
        BASELINE,
        [
            suite.reading(alice, 1000, 0, interval=BASELINE),
            suite.reading(bob, 0, 2000, interval=BASELINE),
        ],
    )


def settle_one_trade(suite: Suite) -> None:
    """Alice buys 1,000 Wh from Bob at 55 cents/kWh (limits 70 and 40)."""
    alice, bob, *_ = suite.meters
    buy = suite.order(alice, OrderSide.BUY, 1000, 70)
    sell = suite.order(bob, OrderSide.SELL, 1500, 40)
    suite.market().settle_batch(INTERVAL, [trade(buy, sell, 1000, 55)], [buy, sell])


# ---- money in and out


def test_deposit_moves_credit_from_the_owner_into_the_meter_balance(suite: Suite) -> None:
    alice = suite.meters[0]
    suite.credit(TREASURY).mint(alice.owner.address, 500)
    owner_market = suite.market(alice.owner)
    owner_market.deposit(alice.name, 500)
    assert owner_market.balance_of(alice.name) == DEPOSIT + 500
    assert suite.credit().balance_of(alice.owner.address) == 0


def test_deposit_with_permit_needs_no_approval(suite: Suite) -> None:
    alice = suite.meters[0]
    suite.credit(TREASURY).mint(alice.owner.address, 700)
    market = suite.market(alice.owner)
    market.deposit_with_permit(alice.name, 700, alice.owner, deadline=int(time.time()) + 3600)
    assert market.balance_of(alice.name) == DEPOSIT + 700


def test_deposit_for_an_unknown_meter_is_refused(suite: Suite) -> None:
    with pytest.raises(TransactionReverted) as caught:
        suite.market(TREASURY).deposit("nobody", 10)
    assert caught.value.error_name == "UnknownMeter"


def test_owner_withdraws_to_any_address(suite: Suite) -> None:
    alice = suite.meters[0]
    receiver = dev_account(8).address
    suite.market(alice.owner).withdraw(alice.name, 300, receiver)
    assert suite.market().balance_of(alice.name) == DEPOSIT - 300
    assert suite.credit().balance_of(receiver) == 300


def test_withdrawing_more_than_the_balance_is_refused(suite: Suite) -> None:
    alice = suite.meters[0]
    with pytest.raises(TransactionReverted) as caught:
        suite.market(alice.owner).withdraw(alice.name, DEPOSIT + 1, alice.owner.address)
    assert caught.value.error_name == "InsufficientBalance"
    assert caught.value.args[1:] == (DEPOSIT + 1, DEPOSIT)


def test_grid_account_deposits_and_withdraws(suite: Suite) -> None:
    suite.credit(TREASURY).mint(dev_account(GRID).address, 1000)
    grid = suite.market(GRID)
    grid.deposit_grid(1000)
    assert grid.grid_balance() == GRID_FUNDS + 1000
    grid.withdraw_grid(400, dev_account(8).address)
    assert grid.grid_balance() == GRID_FUNDS + 600
    assert suite.credit().balance_of(dev_account(8).address) == 400


def test_operator_sets_tariffs(suite: Suite) -> None:
    market = suite.market(OPERATOR)
    assert market.tariffs() == (RETAIL, FEED_IN)
    market.set_tariffs(95, 25)
    assert market.tariffs() == (95, 25)
    assert (
        market.events_in(market.set_tariffs(96, 26), "TariffsSet")[0]["args"]["retailPrice"] == 96
    )


# ---- batches


def test_batch_escrows_the_buyers_payment_and_records_positions(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    buy = suite.order(alice, OrderSide.BUY, 1000, 70)
    sell = suite.order(bob, OrderSide.SELL, 1500, 40)
    market = suite.market()
    result = market.settle_batch(INTERVAL, [trade(buy, sell, 1000, 55)], [buy, sell])
    assert market.balance_of(alice.name) == DEPOSIT - 55  # 1 kWh at 55 cents
    assert market.balance_of(bob.name) == DEPOSIT  # sellers are paid on delivery
    assert market.escrow_total() == 55
    assert market.interval_status(INTERVAL) is IntervalStatus.BATCH_SETTLED
    event = market.events_in(result.receipt, "BatchSettled")[0]["args"]
    assert (event["orders"], event["trades"], event["escrowed"]) == (2, 1, 55)
    assert decode_positions(bytes(event["positions"])) == result.positions
    assert market.positions(INTERVAL) == result.positions


def test_one_order_can_fill_several_trades_and_is_verified_once(suite: Suite) -> None:
    alice, bob, carol, _ = suite.meters
    buy = suite.order(alice, OrderSide.BUY, 2000, 70)
    sell_bob = suite.order(bob, OrderSide.SELL, 800, 40)
    sell_carol = suite.order(carol, OrderSide.SELL, 1200, 50)
    market = suite.market()
    market.settle_batch(
        INTERVAL,
        [trade(buy, sell_bob, 800, 60), trade(buy, sell_carol, 1200, 60)],
        [buy, sell_bob, sell_carol],
    )
    assert market.balance_of(alice.name) == DEPOSIT - 120  # 2 kWh at 60 cents


def test_a_meter_that_buys_and_sells_in_one_batch_gets_one_position(suite: Suite) -> None:
    alice, bob, carol, _ = suite.meters
    alice_buy = suite.order(alice, OrderSide.BUY, 1000, 70)
    alice_sell = suite.order(alice, OrderSide.SELL, 500, 40)
    bob_sell = suite.order(bob, OrderSide.SELL, 1000, 40)
    carol_buy = suite.order(carol, OrderSide.BUY, 500, 70)
    trades = [trade(alice_buy, bob_sell, 1000, 55), trade(carol_buy, alice_sell, 500, 50)]
    market = suite.market()
    result = market.settle_batch(INTERVAL, trades, [carol_buy, alice_sell, bob_sell, alice_buy])
    assert result.positions == compute_positions(trades)
    assert market.positions(INTERVAL) == result.positions
    assert result.positions[0] == Position(alice.id, 1000, 55_000, 500, 25_000)
    assert market.balance_of(alice.name) == DEPOSIT - 55
    assert market.balance_of(carol.name) == DEPOSIT - 25


def test_costs_are_exact_in_thousandths_and_rounded_once_per_buyer(suite: Suite) -> None:
    alice, bob, carol, _ = suite.meters
    buy = suite.order(alice, OrderSide.BUY, 3000, 70)
    sell_bob = suite.order(bob, OrderSide.SELL, 1001, 40)
    sell_carol = suite.order(carol, OrderSide.SELL, 1001, 40)
    market = suite.market()
    result = market.settle_batch(
        INTERVAL,
        [trade(buy, sell_bob, 1001, 55), trade(buy, sell_carol, 1001, 55)],
        [buy, sell_bob, sell_carol],
    )
    # 2,002 Wh × 55 cents/kWh = 110.11 cents: one ceiling for the buyer, not two
    assert result.positions[0].cost_milli == 110_110
    assert market.balance_of(alice.name) == DEPOSIT - 111


# ---- delivery


def test_delivery_pays_sellers_refunds_buyers_and_bills_the_rest_at_tariffs(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    set_baseline(suite)
    settle_one_trade(suite)
    market = suite.market()
    grid_before = market.grid_balance()
    # Alice imported 1,200 Wh (bought 1,000); Bob exported 900 Wh (sold 1,000).
    receipt = market.settle_delivery(
        INTERVAL, [suite.reading(alice, 2200, 0), suite.reading(bob, 0, 2900)]
    )
    # Alice: 55 for the kWh received + 200 Wh at 80 cents/kWh = 71; her 55 escrow came back.
    assert market.balance_of(alice.name) == DEPOSIT - 71
    # Bob: paid for the 900 Wh delivered: 49.5 cents, rounded down.
    assert market.balance_of(bob.name) == DEPOSIT + 49
    assert market.grid_balance() == grid_before + 22
    assert market.escrow_total() == 0
    assert market.interval_status(INTERVAL) is IntervalStatus.DELIVERED
    lines = {line.meter_id: line for line in market.settlements(INTERVAL)}
    assert (lines[alice.id].imported_wh, lines[alice.id].balance_change) == (1200, -16)
    assert (lines[bob.id].exported_wh, lines[bob.id].balance_change) == (900, 49)
    event = market.events_in(receipt, "DeliverySettled")[0]["args"]
    assert event["gridBalanceChange"] == 22


def test_buyer_who_imports_less_than_bought_is_refunded_pro_rata(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    set_baseline(suite)
    settle_one_trade(suite)
    market = suite.market()
    market.settle_delivery(INTERVAL, [suite.reading(alice, 1400, 0), suite.reading(bob, 0, 3000)])
    # Alice received 400 of 1,000 Wh: pays 22 of her 55 cents.
    assert market.balance_of(alice.name) == DEPOSIT - 22
    assert market.balance_of(bob.name) == DEPOSIT + 55


def test_export_beyond_what_was_sold_earns_the_feed_in_tariff(suite: Suite) -> None:
    _, _, carol, _ = suite.meters
    market = suite.market()
    market.settle_delivery(BASELINE, [suite.reading(carol, 0, 0, interval=BASELINE)])
    market.settle_delivery(INTERVAL, [suite.reading(carol, 0, 2000)])
    assert market.balance_of(carol.name) == DEPOSIT + 2 * FEED_IN


def test_first_reading_of_a_meter_only_sets_its_baseline(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    market.settle_delivery(INTERVAL, [suite.reading(carol, 50_000, 7_000)])
    assert market.balance_of(carol.name) == DEPOSIT
    account = market.meter_account(carol.name)
    assert (account.last_interval, account.import_wh, account.export_wh) == (
        INTERVAL,
        50_000,
        7_000,
    )


def test_meter_without_a_reading_is_settled_as_delivering_nothing(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    set_baseline(suite)
    settle_one_trade(suite)
    market = suite.market()
    grid_before = market.grid_balance()
    market.settle_delivery(INTERVAL, [suite.reading(alice, 2000, 0)])  # no reading from Bob
    # Alice imported the kWh she bought and pays its price; Bob, unread, is not paid, so the
    # grid, which supplied that energy, receives the money.
    assert market.balance_of(alice.name) == DEPOSIT - 55
    assert market.balance_of(bob.name) == DEPOSIT
    assert market.grid_balance() == grid_before + 55
    assert market.meter_account(bob.name).last_interval == BASELINE


def test_a_meter_that_cannot_pay_leaves_the_shortfall_to_the_grid(suite: Suite) -> None:
    alice = suite.meters[0]
    market = suite.market()
    suite.market(alice.owner).withdraw(alice.name, DEPOSIT - 10, alice.owner.address)
    market.settle_delivery(BASELINE, [suite.reading(alice, 0, 0, interval=BASELINE)])
    grid_before = market.grid_balance()
    receipt = market.settle_delivery(INTERVAL, [suite.reading(alice, 1000, 0)])  # owes 80
    assert market.balance_of(alice.name) == 0
    shortfall = market.events_in(receipt, "Shortfall")[0]["args"]
    assert (shortfall["meterId"], shortfall["amount"]) == (alice.id, 70)
    assert market.grid_balance() == grid_before + 10


def test_delivery_needs_the_grid_to_cover_what_it_buys(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    suite.market(GRID).withdraw_grid(GRID_FUNDS, dev_account(GRID).address)
    market.settle_delivery(BASELINE, [suite.reading(carol, 0, 0, interval=BASELINE)])
    with pytest.raises(TransactionReverted) as caught:
        market.settle_delivery(INTERVAL, [suite.reading(carol, 0, 1000)])
    assert caught.value.error_name == "InsufficientGridBalance"
    assert caught.value.args == (FEED_IN, 0)


def test_delivery_must_resubmit_the_batch_positions_exactly(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    settle_one_trade(suite)
    market = suite.market()
    honest = market.positions(INTERVAL)
    inflated = [
        p if p.meter_id != bob.id else type(p)(p.meter_id, 0, 0, p.sold_wh, p.value_milli * 2)
        for p in honest
    ]
    with pytest.raises(TransactionReverted) as caught:
        market.settle_delivery(INTERVAL, [suite.reading(alice, 1, 0)], positions=inflated)
    assert caught.value.error_name == "PositionsMismatch"
    with pytest.raises(TransactionReverted) as caught:
        market.settle_delivery(INTERVAL, [suite.reading(alice, 1, 0)], positions=[])
    assert caught.value.error_name == "PositionsMismatch"


def test_settlement_arithmetic_in_python_matches_the_contract(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    set_baseline(suite)
    settle_one_trade(suite)
    market = suite.market()
    positions = {p.meter_id: p for p in market.positions(INTERVAL)}
    market.settle_delivery(INTERVAL, [suite.reading(alice, 1900, 0), suite.reading(bob, 0, 3333)])
    lines = {line.meter_id: line for line in market.settlements(INTERVAL)}
    for meter, imported, exported in ((alice, 900, 0), (bob, 0, 1333)):
        expected = settle_meter(positions[meter.id], imported, exported, RETAIL, FEED_IN)
        assert lines[meter.id].balance_change == expected.credits - expected.debit


def test_tariff_change_applies_to_later_deliveries(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    market.settle_delivery(BASELINE, [suite.reading(carol, 0, 0, interval=BASELINE)])
    market.set_tariffs(100, 10)
    market.settle_delivery(INTERVAL, [suite.reading(carol, 1000, 0)])
    assert market.balance_of(carol.name) == DEPOSIT - 100
    market.settle_delivery(
        NEXT_INTERVAL, [suite.reading(carol, 1000, 1000, interval=NEXT_INTERVAL)]
    )
    assert market.balance_of(carol.name) == DEPOSIT - 90


def test_views_expose_the_domain_and_the_meter_slot(suite: Suite) -> None:
    market = suite.market(OUTSIDER)
    assert market.domain_separator() == suite.domain.separator()
    assert market.meter_account(suite.meters[0].name).balance == DEPOSIT
    assert market.interval_status(INTERVAL) is IntervalStatus.OPEN
    assert market.positions(INTERVAL) == []
    assert market.settlements(INTERVAL) == []
