"""EnergyMarket on a real anvil node, through the Python client: money, batches, delivery."""

from __future__ import annotations

import time

import pytest
from contract_suite import (
    BASELINE,
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
    board_key,
    deploy_test_suite,
    enrol,
    trade,
)
from web3 import Web3

from meterchain.chain.batch import (
    Metered,
    Position,
    compute_positions,
    decode_positions,
    settle_meter,
)
from meterchain.chain.client import BatchTerms, IntervalStatus
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account
from meterchain.chain.signing import OrderSide


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    return deploy_test_suite(w3)


@pytest.fixture
def suite(deployed: Suite, chain_snapshot: str) -> Suite:
    deployed.nonces.clear()
    return deployed


def later(suite: Suite, seconds: int) -> None:
    """Move the chain's clock forward and mine a block."""
    suite.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    suite.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


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


def test_owner_withdraws_to_any_address_after_the_delay(suite: Suite) -> None:
    alice = suite.meters[0]
    receiver = dev_account(8).address
    owner_market = suite.market(alice.owner)
    owner_market.request_withdrawal(alice.name, 300)
    amount, available_at = owner_market.pending_withdrawal(alice.name)
    assert amount == 300 and available_at > 0
    with pytest.raises(TransactionReverted) as caught:
        owner_market.withdraw(alice.name, receiver)
    assert caught.value.error_name == "WithdrawalNotYetAvailable"
    later(suite, owner_market.withdrawal_delay)
    owner_market.withdraw(alice.name, receiver)
    assert suite.market().balance_of(alice.name) == DEPOSIT - 300
    assert suite.credit().balance_of(receiver) == 300
    assert owner_market.pending_withdrawal(alice.name) == (0, 0)


def test_withdrawing_more_than_the_balance_is_refused(suite: Suite) -> None:
    alice = suite.meters[0]
    owner_market = suite.market(alice.owner)
    owner_market.request_withdrawal(alice.name, DEPOSIT + 1)
    later(suite, owner_market.withdrawal_delay)
    with pytest.raises(TransactionReverted) as caught:
        owner_market.withdraw(alice.name, alice.owner.address)
    assert caught.value.error_name == "InsufficientBalance"
    assert caught.value.args[1:] == (DEPOSIT + 1, DEPOSIT)


def test_a_withdrawal_request_can_be_cancelled(suite: Suite) -> None:
    alice = suite.meters[0]
    owner_market = suite.market(alice.owner)
    owner_market.request_withdrawal(alice.name, 300)
    owner_market.request_withdrawal(alice.name, 0)
    later(suite, owner_market.withdrawal_delay)
    with pytest.raises(TransactionReverted) as caught:
        owner_market.withdraw(alice.name, alice.owner.address)
    assert caught.value.error_name == "NoWithdrawalRequested"


def test_grid_account_deposits_and_withdraws(suite: Suite) -> None:
    suite.credit(TREASURY).mint(dev_account(GRID).address, 1000)
    grid = suite.market(GRID)
    grid.deposit_grid(1000)
    assert grid.grid_balance() == GRID_FUNDS + 1000
    grid.withdraw_grid(400, dev_account(8).address)
    assert grid.grid_balance() == GRID_FUNDS + 600
    assert suite.credit().balance_of(dev_account(8).address) == 400


def test_the_grid_sets_tariffs_within_bounds(suite: Suite) -> None:
    market = suite.market(GRID)
    assert market.tariffs() == (RETAIL, FEED_IN)
    market.set_tariffs(95, 25)
    assert market.tariffs() == (95, 25)
    assert (
        market.events_in(market.set_tariffs(96, 26), "TariffsSet")[0]["args"]["retailPrice"] == 96
    )
    for retail, feed_in in ((market.max_retail_price + 1, 10), (50, 51), (0, 0)):
        with pytest.raises(TransactionReverted) as caught:
            market.set_tariffs(retail, feed_in)
        assert caught.value.error_name == "TariffsOutOfBounds"
    with pytest.raises(TransactionReverted) as caught:
        suite.market(OPERATOR).set_tariffs(90, 30)
    assert caught.value.error_name == "AccessControlUnauthorizedAccount"


# ---- batches


def test_batch_locks_the_buyers_payment_and_the_sellers_worst_case(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    buy = suite.order(alice, OrderSide.BUY, 1000, 70)
    sell = suite.order(bob, OrderSide.SELL, 1500, 40)
    market = suite.market()
    result = market.settle_batch(INTERVAL, [trade(buy, sell, 1000, 55)], [buy, sell])
    assert market.balance_of(alice.name) == DEPOSIT - 55  # 1 kWh at 55 cents
    # Bob would owe 80 cents if he delivered nothing; his sale pays 55: 25 are locked.
    assert market.balance_of(bob.name) == DEPOSIT - 25
    assert market.escrow_total() == 80
    assert market.interval_status(INTERVAL) is IntervalStatus.BATCH_SETTLED
    event = market.events_in(result.receipt, "BatchSettled")[0]["args"]
    assert (event["orders"], event["trades"], event["locked"]) == (2, 1, 80)
    assert (event["retailPrice"], event["feedInPrice"]) == (RETAIL, FEED_IN)
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
    # Alice locks her cost (55) and, as a seller of 500 Wh, 40 - 25 = 15 more.
    assert market.balance_of(alice.name) == DEPOSIT - 70
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


def test_delivery_pays_the_trades_and_settles_deviations_at_the_tariffs(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    settle_one_trade(suite)
    market = suite.market()
    grid_before = market.grid_balance()
    # Alice imported 1,200 Wh (bought 1,000); Bob exported 900 Wh (sold 1,000).
    receipt = market.settle_delivery(
        INTERVAL, [suite.reading(alice, 1200, 0), suite.reading(bob, 0, 900)]
    )
    # Alice: 55 for the kWh bought + 200 Wh at 80 cents/kWh = 71.
    assert market.balance_of(alice.name) == DEPOSIT - 71
    # Bob: 55 for the kWh sold, less the 100 Wh he did not deliver at retail (8): +47.
    assert market.balance_of(bob.name) == DEPOSIT + 47
    assert market.grid_balance() == grid_before + 24
    assert market.escrow_total() == 0
    assert market.interval_status(INTERVAL) is IntervalStatus.DELIVERED
    lines = {line.meter_id: line for line in market.settlements(INTERVAL)}
    assert (lines[alice.id].imported_wh, lines[alice.id].balance_change) == (1200, -16)
    assert (lines[bob.id].exported_wh, lines[bob.id].balance_change) == (900, 72)
    event = market.events_in(receipt, "DeliverySettled")[0]["args"]
    assert event["gridBalanceChange"] == 24


def test_a_buyer_pays_what_it_bought_and_sells_the_unused_part_at_feed_in(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    settle_one_trade(suite)
    market = suite.market()
    market.settle_delivery(INTERVAL, [suite.reading(alice, 400, 0), suite.reading(bob, 0, 3000)])
    # Alice used 400 of 1,000 Wh: pays 55, gets 600 Wh × 30 = 18 back.
    assert market.balance_of(alice.name) == DEPOSIT - 37
    # Bob: 55 for the kWh sold + 2,000 Wh beyond it at feed-in (60).
    assert market.balance_of(bob.name) == DEPOSIT + 115


def test_export_beyond_what_was_sold_earns_the_feed_in_tariff(suite: Suite) -> None:
    _, _, carol, _ = suite.meters
    market = suite.market()
    market.settle_delivery(INTERVAL, [suite.reading(carol, 0, 2000)])
    assert market.balance_of(carol.name) == DEPOSIT + 2 * FEED_IN


def test_energy_since_the_baseline_is_billed_with_the_first_reading(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    # No reading settled for INTERVAL: the 1,000 Wh Carol imported in it are a gap before
    # NEXT_INTERVAL's reading, billed at retail with it.
    market.settle_delivery(
        NEXT_INTERVAL, [suite.reading(carol, 500, 0, start=(1000, 0), interval=NEXT_INTERVAL)]
    )
    assert market.balance_of(carol.name) == DEPOSIT - 120
    account = market.meter_account(carol.name)
    assert (account.last_interval, account.import_wh, account.export_wh) == (
        NEXT_INTERVAL,
        1500,
        0,
    )


def test_meter_without_a_reading_is_settled_as_delivering_nothing(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    settle_one_trade(suite)
    market = suite.market()
    grid_before = market.grid_balance()
    market.settle_delivery(INTERVAL, [suite.reading(alice, 1000, 0)])  # no reading from Bob
    # Alice imported the kWh she bought and pays its price; Bob, unread, buys the kWh he sold
    # from the grid at retail: he ends 25 cents down, and the grid has sold 1 kWh at retail.
    assert market.balance_of(alice.name) == DEPOSIT - 55
    assert market.balance_of(bob.name) == DEPOSIT - 25
    assert market.grid_balance() == grid_before + RETAIL
    assert market.meter_account(bob.name).last_interval == BASELINE


def test_a_meter_that_cannot_pay_leaves_the_shortfall_to_the_grid(suite: Suite) -> None:
    market = suite.market()
    erin = type(suite.meters[0])("erin", board_key(70), dev_account(8))
    enrol(suite, erin.name, erin.key.address, erin.owner.address)
    suite.credit(TREASURY).mint(erin.owner.address, 10)
    suite.market(erin.owner).deposit(erin.name, 10)
    grid_before = market.grid_balance()
    receipt = market.settle_delivery(INTERVAL, [suite.reading(erin, 1000, 0)])  # owes 80
    assert market.balance_of(erin.name) == 0
    shortfall = market.events_in(receipt, "Shortfall")[0]["args"]
    assert (shortfall["meterId"], shortfall["amount"]) == (erin.id, 70)
    assert market.grid_balance() == grid_before + 10


def test_delivery_needs_the_grid_to_cover_what_it_buys(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    suite.market(GRID).withdraw_grid(GRID_FUNDS, dev_account(GRID).address)
    with pytest.raises(TransactionReverted) as caught:
        market.settle_delivery(INTERVAL, [suite.reading(carol, 0, 1000)])
    assert caught.value.error_name == "InsufficientGridBalance"
    assert caught.value.args == (FEED_IN, 0)


def test_delivery_must_resubmit_the_batch_positions_and_tariffs_exactly(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    settle_one_trade(suite)
    market = suite.market()
    honest = market.batch_terms(INTERVAL)
    inflated = [
        p if p.meter_id != bob.id else type(p)(p.meter_id, 0, 0, p.sold_wh, p.value_milli * 2)
        for p in honest.positions
    ]
    for terms in (
        BatchTerms(RETAIL, FEED_IN, inflated),
        BatchTerms(RETAIL, FEED_IN, []),
        BatchTerms(RETAIL + 1, FEED_IN, honest.positions),
    ):
        with pytest.raises(TransactionReverted) as caught:
            market.settle_delivery(INTERVAL, [suite.reading(alice, 1, 0)], terms=terms)
        assert caught.value.error_name == "PositionsMismatch"


def test_a_batch_keeps_its_tariffs_when_the_grid_changes_them(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    settle_one_trade(suite)
    suite.market(GRID).set_tariffs(200, 5)
    market = suite.market()
    market.settle_delivery(INTERVAL, [suite.reading(alice, 1000, 0), suite.reading(bob, 0, 900)])
    # Bob's 100 Wh not delivered cost the batch's retail (80), not the new 200.
    assert market.balance_of(bob.name) == DEPOSIT + 47


def test_an_interval_without_a_batch_settles_at_the_tariffs_in_force(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    suite.market(GRID).set_tariffs(100, 10)
    with pytest.raises(TransactionReverted) as caught:
        market.settle_delivery(
            INTERVAL, [suite.reading(carol, 1000, 0)], terms=BatchTerms(RETAIL, FEED_IN, [])
        )
    assert caught.value.error_name == "TariffsMismatch"
    market.settle_delivery(INTERVAL, [suite.reading(carol, 1000, 0)])
    assert market.balance_of(carol.name) == DEPOSIT - 100
    market.settle_delivery(
        NEXT_INTERVAL,
        [suite.reading(carol, 0, 1000, interval=NEXT_INTERVAL, start=(1000, 0))],
    )
    assert market.balance_of(carol.name) == DEPOSIT - 90


def test_settlement_arithmetic_in_python_matches_the_contract(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    buy = suite.order(alice, OrderSide.BUY, 1000, 70, interval=NEXT_INTERVAL)
    sell = suite.order(bob, OrderSide.SELL, 1500, 40, interval=NEXT_INTERVAL)
    market = suite.market()
    market.settle_batch(NEXT_INTERVAL, [trade(buy, sell, 1000, 55)], [buy, sell])
    positions = {p.meter_id: p for p in market.positions(NEXT_INTERVAL)}
    market.settle_delivery(
        NEXT_INTERVAL,
        [
            suite.reading(alice, 900, 0, start=(7, 0), interval=NEXT_INTERVAL),
            suite.reading(bob, 0, 1333, start=(0, 11), interval=NEXT_INTERVAL),
        ],
    )
    lines = {line.meter_id: line for line in market.settlements(NEXT_INTERVAL)}
    for meter, metered in (
        (alice, Metered(900, 0, 7, 0)),
        (bob, Metered(0, 1333, 0, 11)),
    ):
        expected = settle_meter(positions[meter.id], metered, RETAIL, FEED_IN)
        assert lines[meter.id].balance_change == expected.credits - expected.debit


def test_views_expose_the_domain_and_the_meter_slot(suite: Suite) -> None:
    market = suite.market(OUTSIDER)
    assert market.domain_separator() == suite.domain.separator()
    assert market.meter_account(suite.meters[0].name).balance == DEPOSIT
    assert market.interval_status(INTERVAL) is IntervalStatus.OPEN
    assert market.positions(INTERVAL) == []
    assert market.settlements(INTERVAL) == []
