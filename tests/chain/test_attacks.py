"""Every attack on a batch reverts with a custom error that names what was wrong; every
unusable reading is refused with a ReadingRejected event that says why (it counts as absent,
so one meter cannot freeze an interval). tests/chain/test_settlement_rules.py has the
economic attacks (issue 8)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from contract_suite import (
    BASELINE,
    INTERVAL,
    NEXT_INTERVAL,
    OUTSIDER,
    TREASURY,
    Suite,
    board_key,
    deploy_test_suite,
    trade,
)
from web3 import Web3

from meterchain.chain.batch import (
    RejectReason,
    pack_batch,
    pack_delivery_entry,
    pack_order,
    pack_trade,
)
from meterchain.chain.client import EnergyMarketClient
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account
from meterchain.chain.signing import MarketDomain, OrderSide, sign_reading


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    return deploy_test_suite(w3)


@pytest.fixture
def suite(deployed: Suite, chain_snapshot: str) -> Suite:
    deployed.nonces.clear()
    return deployed


def reverts(action: Callable[[], Any], error_name: str) -> TransactionReverted:
    with pytest.raises(TransactionReverted) as caught:
        action()
    assert caught.value.error_name == error_name, str(caught.value)
    return caught.value


def rejections(market: EnergyMarketClient, receipt: Any) -> list[tuple[bytes, RejectReason]]:
    """The (meter id, reason) of every ReadingRejected event in a transaction."""
    return [
        (bytes(e["args"]["meterId"]), RejectReason(e["args"]["reason"]))
        for e in market.events_in(receipt, "ReadingRejected")
    ]


def book(suite: Suite) -> tuple[Any, Any]:
    alice, bob, *_ = suite.meters
    return (
        suite.order(alice, OrderSide.BUY, 1000, 70),
        suite.order(bob, OrderSide.SELL, 1000, 40),
    )


# ---- signatures and registration


def test_order_signed_by_another_key_is_rejected(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    forged = suite.order(alice, OrderSide.BUY, 1000, 70, signer=board_key(666))
    sell = suite.order(bob, OrderSide.SELL, 1000, 40)
    error = reverts(
        lambda: suite.market().settle_batch(
            INTERVAL, [trade(forged, sell, 1000, 55)], [forged, sell]
        ),
        "InvalidOrderSignature",
    )
    assert error.args[:2] == (alice.id, forged.order.nonce)
    assert error.args[2] == board_key(666).address


def test_order_with_a_tampered_quantity_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)
    tampered = type(buy)(
        type(buy.order)(**{**buy.order.__dict__, "quantity_wh": 5000}), buy.signature
    )
    reverts(
        lambda: suite.market().settle_batch(
            INTERVAL, [trade(tampered, sell, 1000, 55)], [tampered, sell]
        ),
        "InvalidOrderSignature",
    )


def test_reading_signed_by_another_key_counts_as_absent(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    receipt = market.settle_delivery(INTERVAL, [suite.reading(carol, 10, 0, signer=board_key(667))])
    assert rejections(market, receipt) == [(carol.id, RejectReason.BAD_SIGNATURE)]
    assert market.meter_account(carol.name).last_interval == BASELINE


def test_revoked_meter_can_neither_trade_nor_report(suite: Suite) -> None:
    buy, sell = book(suite)
    bob = suite.meters[1]
    suite.registry().revoke_meter(bob.name)
    market = suite.market()
    error = reverts(
        lambda: market.settle_batch(INTERVAL, [trade(buy, sell, 1000, 55)], [buy, sell]),
        "MeterIsRevoked",
    )
    assert error.args == (bob.id,)
    receipt = market.settle_delivery(INTERVAL, [suite.reading(bob, 0, 5)])
    assert rejections(market, receipt) == [(bob.id, RejectReason.REVOKED)]


def test_old_key_is_useless_after_rotation(suite: Suite) -> None:
    buy, sell = book(suite)
    suite.registry().rotate_signer(suite.meters[0].name, board_key(668).address)
    reverts(
        lambda: suite.market().settle_batch(INTERVAL, [trade(buy, sell, 1000, 55)], [buy, sell]),
        "InvalidOrderSignature",
    )


def test_unregistered_meter_cannot_trade(suite: Suite) -> None:
    buy, _ = book(suite)
    ghost = type(suite.meters[0])("ghost", board_key(669), dev_account(8))
    ghost_sell = suite.order(ghost, OrderSide.SELL, 1000, 40)
    reverts(
        lambda: suite.market().settle_batch(
            INTERVAL, [trade(buy, ghost_sell, 1000, 55)], [buy, ghost_sell]
        ),
        "UnknownMeter",
    )


# ---- replay and double counting


def test_order_replayed_in_another_interval_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)  # signed for INTERVAL
    market = suite.market()
    market.settle_batch(INTERVAL, [trade(buy, sell, 500, 55)], [buy, sell])
    error = reverts(
        lambda: market.settle_batch(NEXT_INTERVAL, [trade(buy, sell, 500, 55)], [buy, sell]),
        "InvalidOrderSignature",
    )
    assert error.args[0] == suite.meters[0].id


def test_order_signed_for_another_market_is_rejected(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    elsewhere = MarketDomain(chain_id=suite.domain.chain_id, market_address="0x" + "42" * 20)
    buy = suite.order(alice, OrderSide.BUY, 1000, 70, domain=elsewhere)
    sell = suite.order(bob, OrderSide.SELL, 1000, 40)
    reverts(
        lambda: suite.market().settle_batch(INTERVAL, [trade(buy, sell, 1000, 55)], [buy, sell]),
        "InvalidOrderSignature",
    )


def test_order_counted_twice_in_one_batch_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)
    orders = pack_order(buy) + pack_order(buy) + pack_order(sell)
    trades = pack_trade(0, 2, 600, 55) + pack_trade(1, 2, 400, 55)
    error = reverts(
        lambda: suite.market().settle_batch_packed(INTERVAL, orders, trades), "OrderCountedTwice"
    )
    assert error.args == (buy.order.meter_id, buy.order.nonce)


def test_orders_out_of_order_are_rejected(suite: Suite) -> None:
    buy, sell = book(suite)  # alice < bob: the correct order is buy, sell
    orders = pack_order(sell) + pack_order(buy)
    reverts(
        lambda: suite.market().settle_batch_packed(INTERVAL, orders, pack_trade(1, 0, 100, 55)),
        "OrdersNotSorted",
    )


def test_same_meter_counted_twice_in_a_delivery_is_rejected(suite: Suite) -> None:
    carol = suite.meters[2]
    entry = pack_delivery_entry(carol.id, None, suite.reading(carol, 10, 0))
    reverts(
        lambda: suite.market().settle_delivery_packed(INTERVAL, entry + entry),
        "MeterCountedTwice",
    )


# ---- limits and quantities


def test_trade_above_the_buyers_limit_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)
    error = reverts(
        lambda: suite.market().settle_batch(INTERVAL, [trade(buy, sell, 1000, 71)], [buy, sell]),
        "PriceAboveBuyLimit",
    )
    assert error.args == (buy.order.meter_id, buy.order.nonce, 71, 70)


def test_trade_below_the_sellers_limit_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)
    error = reverts(
        lambda: suite.market().settle_batch(INTERVAL, [trade(buy, sell, 1000, 39)], [buy, sell]),
        "PriceBelowSellLimit",
    )
    assert error.args == (sell.order.meter_id, sell.order.nonce, 39, 40)


def test_trade_larger_than_the_order_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)
    error = reverts(
        lambda: suite.market().settle_batch(INTERVAL, [trade(buy, sell, 1001, 55)], [buy, sell]),
        "OrderOverfilled",
    )
    assert error.args == (buy.order.meter_id, buy.order.nonce, 1001, 1000)


def test_trades_that_together_overfill_an_order_are_rejected(suite: Suite) -> None:
    alice, bob, carol, _ = suite.meters
    buy = suite.order(alice, OrderSide.BUY, 3000, 70)
    sell = suite.order(bob, OrderSide.SELL, 1000, 40)
    other = suite.order(carol, OrderSide.BUY, 1000, 70)
    error = reverts(
        lambda: suite.market().settle_batch(
            INTERVAL, [trade(buy, sell, 600, 55), trade(other, sell, 600, 55)], [buy, sell, other]
        ),
        "OrderOverfilled",
    )
    assert error.args == (sell.order.meter_id, sell.order.nonce, 1200, 1000)


def test_sell_order_used_as_a_buy_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)
    reverts(
        lambda: suite.market().settle_batch(INTERVAL, [trade(sell, buy, 100, 55)], [buy, sell]),
        "NotABuyOrder",
    )


def test_buy_order_used_as_a_sell_is_rejected(suite: Suite) -> None:
    alice, _, carol, _ = suite.meters
    buy = suite.order(alice, OrderSide.BUY, 1000, 70)
    other = suite.order(carol, OrderSide.BUY, 1000, 70)
    error = reverts(
        lambda: suite.market().settle_batch(INTERVAL, [trade(buy, other, 100, 55)], [buy, other]),
        "NotASellOrder",
    )
    assert error.args == (0, carol.id, other.order.nonce)


def test_trade_naming_an_order_outside_the_batch_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)
    orders = pack_batch([buy, sell], []).orders
    error = reverts(
        lambda: suite.market().settle_batch_packed(INTERVAL, orders, pack_trade(0, 2, 100, 55)),
        "TradeOrderOutOfRange",
    )
    assert error.args == (0, 2, 2)


def test_trade_of_zero_energy_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)
    packed = pack_batch([buy, sell], [trade(buy, sell, 1, 55)])
    zero = packed.trades[:4] + bytes(4) + packed.trades[8:]
    error = reverts(
        lambda: suite.market().settle_batch_packed(INTERVAL, packed.orders, zero),
        "ZeroQuantityTrade",
    )
    assert error.args == (0,)


def test_order_with_a_side_other_than_buy_or_sell_is_rejected(suite: Suite) -> None:
    buy, sell = book(suite)
    packed = pack_batch([buy, sell], [trade(buy, sell, 100, 55)])
    at = packed.orders.index(buy.order.meter_id) + 40  # meterId 32 | nonce 8 | side 1
    orders = packed.orders[:at] + bytes([2]) + packed.orders[at + 1 :]
    error = reverts(
        lambda: suite.market().settle_batch_packed(INTERVAL, orders, packed.trades),
        "InvalidSide",
    )
    assert error.args == (buy.order.meter_id, buy.order.nonce, 2)


def test_meter_trading_with_itself_is_rejected(suite: Suite) -> None:
    alice = suite.meters[0]
    buy = suite.order(alice, OrderSide.BUY, 1000, 70)
    sell = suite.order(alice, OrderSide.SELL, 1000, 40)
    reverts(
        lambda: suite.market().settle_batch(INTERVAL, [trade(buy, sell, 100, 55)], [buy, sell]),
        "SelfTrade",
    )


def test_buyer_without_the_money_cannot_be_escrowed(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    buy = suite.order(alice, OrderSide.BUY, 10**9, 70)
    sell = suite.order(bob, OrderSide.SELL, 10**9, 40)
    error = reverts(
        lambda: suite.market().settle_batch(INTERVAL, [trade(buy, sell, 10**9, 55)], [buy, sell]),
        "InsufficientBalance",
    )
    assert error.args[0] == alice.id


# ---- readings


def test_counter_going_backwards_counts_as_absent(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    market.settle_delivery(INTERVAL, [suite.reading(carol, 3000, 100)])
    receipt = market.settle_delivery(
        NEXT_INTERVAL,
        [suite.reading(carol, 10, 0, interval=NEXT_INTERVAL, start=(2999, 100))],
    )
    assert rejections(market, receipt) == [(carol.id, RejectReason.BACKWARDS)]
    assert market.meter_account(carol.name).import_wh == 3000


def test_end_registers_below_the_start_count_as_absent(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    reading = suite.reading(carol, 0, 0)
    backwards = type(reading.reading)(carol.id, INTERVAL, 500, 0, 400, 0)
    receipt = market.settle_delivery(INTERVAL, [sign_reading(suite.domain, backwards, carol.key)])
    assert rejections(market, receipt) == [(carol.id, RejectReason.BACKWARDS)]


def test_reading_for_an_interval_before_the_last_settled_one_counts_as_absent(
    suite: Suite,
) -> None:
    carol = suite.meters[2]
    market = suite.market()
    market.settle_delivery(NEXT_INTERVAL, [suite.reading(carol, 10, 0, interval=NEXT_INTERVAL)])
    receipt = market.settle_delivery(INTERVAL, [suite.reading(carol, 20, 0)])
    assert rejections(market, receipt) == [(carol.id, RejectReason.STALE)]


def test_unregistered_meters_reading_counts_as_absent(suite: Suite) -> None:
    ghost = type(suite.meters[0])("ghost", board_key(669), dev_account(8))
    market = suite.market()
    receipt = market.settle_delivery(INTERVAL, [suite.reading(ghost, 10, 0)])
    assert rejections(market, receipt) == [(ghost.id, RejectReason.UNKNOWN_METER)]


# ---- settling once


def test_an_intervals_batch_settles_once(suite: Suite) -> None:
    buy, sell = book(suite)
    market = suite.market()
    market.settle_batch(INTERVAL, [trade(buy, sell, 500, 55)], [buy, sell])
    reverts(
        lambda: market.settle_batch(INTERVAL, [trade(buy, sell, 500, 55)], [buy, sell]),
        "BatchAlreadySettled",
    )


def test_an_intervals_delivery_settles_once(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    market.settle_delivery(INTERVAL, [suite.reading(carol, 10, 0)])
    reverts(lambda: market.settle_delivery(INTERVAL, []), "IntervalAlreadySettled")
    buy, sell = book(suite)
    reverts(
        lambda: market.settle_batch(INTERVAL, [trade(buy, sell, 500, 55)], [buy, sell]),
        "IntervalAlreadySettled",
    )


# ---- roles


@pytest.mark.parametrize(
    "action",
    [
        "settle_batch",
        "settle_delivery",
        "set_tariffs",
        "withdraw_grid",
        "mint",
        "redeem",
        "register_meter",
        "assign_market",
        "set_baseline",
        "revoke_meter",
        "grant_role",
    ],
)
def test_calls_without_the_role_are_refused(suite: Suite, action: str) -> None:
    buy, sell = book(suite)
    outsider = dev_account(OUTSIDER)
    market, credit, registry = (
        suite.market(outsider),
        suite.credit(outsider),
        suite.registry(outsider),
    )
    actions: dict[str, Callable[[], Any]] = {
        "settle_batch": lambda: market.settle_batch(
            INTERVAL, [trade(buy, sell, 500, 55)], [buy, sell]
        ),
        "settle_delivery": lambda: market.settle_delivery_packed(INTERVAL, b"", tariffs=(80, 30)),
        "set_tariffs": lambda: market.set_tariffs(1, 1),
        "withdraw_grid": lambda: market.withdraw_grid(1, outsider.address),
        "mint": lambda: credit.mint(outsider.address, 1),
        "redeem": lambda: credit.redeem(1),
        "register_meter": lambda: registry.register_meter(
            "m", outsider.address, outsider.address, 0, 1000
        ),
        "assign_market": lambda: registry.assign_market(suite.meters[0].name, outsider.address),
        "set_baseline": lambda: market.set_baseline(suite.meters[0].name, NEXT_INTERVAL, 0, 0),
        "revoke_meter": lambda: registry.revoke_meter(suite.meters[0].name),
        "grant_role": lambda: market.grant_role("OPERATOR_ROLE", outsider.address),
    }
    error = reverts(actions[action], "AccessControlUnauthorizedAccount")
    assert error.args[0] == outsider.address


def test_only_the_owner_withdraws_a_meters_balance(suite: Suite) -> None:
    alice = suite.meters[0]
    thief = dev_account(OUTSIDER)
    error = reverts(lambda: suite.market(thief).request_withdrawal(alice.name, 1), "NotMeterOwner")
    assert error.args == (alice.id, thief.address)
    suite.market(alice.owner).request_withdrawal(alice.name, 1)
    reverts(lambda: suite.market(TREASURY).withdraw(alice.name, thief.address), "NotMeterOwner")
