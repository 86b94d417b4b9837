"""One attack per finding of issue 8's review, each answered by a custom error or an event.

1. imbalances at the grid's tariffs: phantom sellers and buyers gain nothing, consumers
   cannot sell, trade prices stay within [feed-in, retail];
2. a reading is bound to its interval: withheld readings settle as gaps at the tariffs, and
   energy before the first reading is billed from the baseline set at enrolment;
3. a withdrawal cannot void a batch;
4. one bad reading cannot freeze an interval (revoked, backwards, bad signature: absent);
5. anyone can refund an undelivered interval after the deadline;
6. a meter belongs to one market at a time;
7. a delivery of as many meters as the market agent lets trade fits its gas (the cap itself:
   tests/agents/test_market_agent.py);
8. two different signatures for one slot are evidence that revokes the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from contract_suite import (
    ADMIN,
    BASELINE,
    DEPOSIT,
    FEED_IN,
    GRID,
    INTERVAL,
    NEXT_INTERVAL,
    OUTSIDER,
    RETAIL,
    Suite,
    board_key,
    deploy_test_suite,
    trade,
)
from eth_hash.auto import keccak
from web3 import Web3

from meterchain.chain.batch import RejectReason, max_delivery_entries, pack_positions
from meterchain.chain.client import EnergyMarketClient, IntervalStatus, MeterKind
from meterchain.chain.deploy import deploy_market
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account
from meterchain.chain.signing import OrderSide, ReadingMessage, sign_reading

KWH = 1000


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    # alice, bob: prosumers; carol: a consumer; dave: a prosumer
    return deploy_test_suite(
        w3,
        kinds=[MeterKind.PROSUMER, MeterKind.PROSUMER, MeterKind.CONSUMER, MeterKind.PROSUMER],
    )


@pytest.fixture
def suite(deployed: Suite, chain_snapshot: str) -> Suite:
    deployed.nonces.clear()
    return deployed


def reverts(action: Callable[[], Any], error_name: str) -> TransactionReverted:
    with pytest.raises(TransactionReverted) as caught:
        action()
    assert caught.value.error_name == error_name, str(caught.value)
    return caught.value


def later(suite: Suite, seconds: int) -> None:
    suite.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    suite.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def balances(suite: Suite) -> dict[str, int]:
    market = suite.market()
    return {m.name: market.balance_of(m.name) for m in suite.meters}


def trade_one_kwh(suite: Suite, buyer: int, seller: int, price: int, interval: int = INTERVAL):
    """`buyer` buys 1 kWh from `seller` at `price` (cents/kWh) in `interval`'s batch."""
    b, s = suite.meters[buyer], suite.meters[seller]
    buy = suite.order(b, OrderSide.BUY, KWH, price, interval=interval)
    sell = suite.order(s, OrderSide.SELL, KWH, price, interval=interval)
    return suite.market().settle_batch(interval, [trade(buy, sell, KWH, price)], [buy, sell])


# ---- 1. imbalances at the grid's tariffs


def test_a_phantom_seller_and_its_buyer_pay_what_the_grid_would_charge(suite: Suite) -> None:
    """Bob sells Alice 1 kWh he never exports; Alice imports it. Together they pay retail."""
    before = balances(suite)
    trade_one_kwh(suite, buyer=0, seller=1, price=FEED_IN)  # the price most favourable to Alice
    suite.market().settle_delivery(
        INTERVAL, [suite.reading(suite.meters[0], KWH, 0), suite.reading(suite.meters[1], 0, 0)]
    )
    after = balances(suite)
    coalition = (after["alice"] - before["alice"]) + (after["bob"] - before["bob"])
    assert coalition == -RETAIL  # exactly what the grid charges for 1 kWh


def test_a_phantom_buyer_and_its_seller_get_only_the_feed_in_tariff(suite: Suite) -> None:
    """Alice buys 1 kWh she never imports from Bob, who exports it: together, feed-in."""
    before = balances(suite)
    trade_one_kwh(suite, buyer=0, seller=1, price=RETAIL)  # the price most favourable to Bob
    suite.market().settle_delivery(
        INTERVAL, [suite.reading(suite.meters[0], 0, 0), suite.reading(suite.meters[1], 0, KWH)]
    )
    after = balances(suite)
    coalition = (after["alice"] - before["alice"]) + (after["bob"] - before["bob"])
    assert coalition == FEED_IN


def test_a_consumer_cannot_sell(suite: Suite) -> None:
    carol = suite.meters[2]
    error = reverts(lambda: trade_one_kwh(suite, buyer=0, seller=2, price=50), "MeterCannotSell")
    assert error.args == (carol.id, int(MeterKind.CONSUMER))


@pytest.mark.parametrize("price", [RETAIL + 1, FEED_IN - 1, 90_000])
def test_trade_prices_stay_within_the_tariffs(suite: Suite, price: int) -> None:
    error = reverts(
        lambda: trade_one_kwh(suite, buyer=0, seller=1, price=price), "PriceOutsideTariffs"
    )
    assert error.args == (0, price, FEED_IN, RETAIL)


# ---- 2. readings bound to their interval


def test_a_withheld_reading_is_settled_later_at_the_tariffs_only(suite: Suite) -> None:
    """Bob sold 1 kWh for INTERVAL, exported it, but withheld that reading and sent the next
    one: the trade counts as undelivered (he buys it at retail) and the exported kWh reaches
    him at feed-in with the next reading. Withholding never pays."""
    alice, bob, *_ = suite.meters
    before = bob_before = balances(suite)["bob"]
    trade_one_kwh(suite, buyer=0, seller=1, price=60)
    market = suite.market()
    market.settle_delivery(INTERVAL, [suite.reading(alice, KWH, 0)])
    market.settle_delivery(
        NEXT_INTERVAL, [suite.reading(bob, 0, 0, interval=NEXT_INTERVAL, start=(0, KWH))]
    )
    withheld = balances(suite)["bob"] - before
    assert withheld == 60 - RETAIL + FEED_IN  # sale, less undelivered at retail, plus feed-in
    honest = 60  # had he sent it: the sale, delivered
    assert withheld < honest
    assert bob_before - RETAIL < balances(suite)["bob"]


def test_energy_since_enrolment_is_billed_with_the_first_reading(suite: Suite) -> None:
    carol = suite.meters[2]
    market = suite.market()
    # Nothing was settled for INTERVAL; Carol imported 2 kWh then and 1 kWh in NEXT_INTERVAL.
    market.settle_delivery(
        NEXT_INTERVAL, [suite.reading(carol, KWH, 0, interval=NEXT_INTERVAL, start=(2 * KWH, 0))]
    )
    assert market.balance_of(carol.name) == DEPOSIT - 3 * RETAIL


def test_a_reading_for_another_interval_does_not_count_for_this_one(suite: Suite) -> None:
    bob = suite.meters[1]
    market = suite.market()
    signed_for_next = suite.reading(bob, 0, KWH, interval=NEXT_INTERVAL)
    moved = type(signed_for_next)(
        ReadingMessage(bob.id, INTERVAL, 0, 0, 0, KWH), signed_for_next.signature
    )
    receipt = market.settle_delivery(INTERVAL, [moved])
    rejected = market.events_in(receipt, "ReadingRejected")
    assert [r["args"]["reason"] for r in rejected] == [RejectReason.BAD_SIGNATURE]


def test_an_absurd_reading_is_refused_and_the_meter_keeps_settling(suite: Suite) -> None:
    """A glitching driver's 10^12 Wh: refused as implausible (no meter is emptied), and the
    next genuine reading settles, its gap included."""
    carol = suite.meters[2]
    market = suite.market()
    receipt = market.settle_delivery(INTERVAL, [suite.reading(carol, 10**12, 0)])
    assert [e["args"]["reason"] for e in market.events_in(receipt, "ReadingRejected")] == [
        RejectReason.IMPLAUSIBLE
    ]
    assert market.balance_of(carol.name) == DEPOSIT
    market.settle_delivery(
        NEXT_INTERVAL, [suite.reading(carol, 500, 0, interval=NEXT_INTERVAL, start=(500, 0))]
    )
    assert market.balance_of(carol.name) == DEPOSIT - RETAIL  # 1 kWh over the two intervals


def test_a_replaced_meter_resumes_from_its_new_baseline_with_nothing_counted_twice(
    suite: Suite,
) -> None:
    carol = suite.meters[2]
    market, grid = suite.market(), suite.market(GRID)
    market.settle_delivery(INTERVAL, [suite.reading(carol, KWH, 0, start=(0, 0))])
    # The new meter's registers start near zero: its readings run "backwards"...
    receipt = market.settle_delivery(
        NEXT_INTERVAL, [suite.reading(carol, KWH, 0, interval=NEXT_INTERVAL, start=(3, 0))]
    )
    assert market.events_in(receipt, "ReadingRejected")[0]["args"]["reason"] == (
        RejectReason.BACKWARDS
    )
    # ...until the grid records its baseline, with the reason.
    later_interval = NEXT_INTERVAL + 900
    baseline = grid.set_baseline(carol.name, NEXT_INTERVAL, 3, 0, "meter replaced")
    event = grid.events_in(baseline, "BaselineSet")[0]["args"]
    assert event["reason"].rstrip(b"\0") == b"meter replaced"
    assert (event["previousInterval"], event["previousImportWh"]) == (INTERVAL, KWH)
    reverts(
        lambda: grid.set_baseline(carol.name, BASELINE, 0, 0, "rewind"), "BaselineBeforeLastSettled"
    )
    market.settle_delivery(
        later_interval, [suite.reading(carol, KWH, 0, interval=later_interval, start=(3, 0))]
    )
    assert market.balance_of(carol.name) == DEPOSIT - 2 * RETAIL


# ---- 3. a withdrawal cannot void a batch


def test_a_withdrawal_just_before_the_batch_does_not_void_it(suite: Suite) -> None:
    alice = suite.meters[0]
    owner_market = suite.market(alice.owner)
    owner_market.request_withdrawal(alice.name, DEPOSIT)  # everything, just before gate closure
    reverts(
        lambda: owner_market.withdraw(alice.name, alice.owner.address), "WithdrawalNotYetAvailable"
    )
    trade_one_kwh(suite, buyer=0, seller=1, price=60)  # the batch still finds the money
    assert suite.market().interval_status(INTERVAL) is IntervalStatus.BATCH_SETTLED
    later(suite, owner_market.withdrawal_delay)
    # What the batch locked is not hers to take: the full request no longer fits.
    reverts(lambda: owner_market.withdraw(alice.name, alice.owner.address), "InsufficientBalance")


# ---- 4. one bad reading cannot freeze an interval


def test_a_meter_revoked_after_its_reading_does_not_freeze_the_interval(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    trade_one_kwh(suite, buyer=0, seller=1, price=60)
    readings = [suite.reading(alice, KWH, 0), suite.reading(bob, 0, KWH)]
    suite.registry(ADMIN).revoke_meter(bob.name)
    market = suite.market()
    receipt = market.settle_delivery(INTERVAL, readings)
    rejected = market.events_in(receipt, "ReadingRejected")
    assert [(e["args"]["meterId"], e["args"]["reason"]) for e in rejected] == [
        (bob.id, RejectReason.REVOKED)
    ]
    assert market.interval_status(INTERVAL) is IntervalStatus.DELIVERED


def test_many_bad_readings_never_freeze_an_interval(suite: Suite) -> None:
    market = suite.market()
    alice, bob, carol, dave = suite.meters
    bad = [
        suite.reading(alice, 10, 0, signer=board_key(99)),
        sign_reading(suite.domain, ReadingMessage(bob.id, INTERVAL, 5, 0, 1, 0), bob.key),
        suite.reading(carol, 10**9, 0),
        suite.reading(dave, 0, 10, interval=INTERVAL),
    ]
    market.settle_delivery(NEXT_INTERVAL, [suite.reading(dave, 0, 0, interval=NEXT_INTERVAL)])
    receipt = market.settle_delivery(INTERVAL, bad)
    reasons = sorted(e["args"]["reason"] for e in market.events_in(receipt, "ReadingRejected"))
    assert reasons == sorted(
        [
            RejectReason.BAD_SIGNATURE,
            RejectReason.BACKWARDS,
            RejectReason.IMPLAUSIBLE,
            RejectReason.STALE,
        ]
    )
    assert market.interval_status(INTERVAL) is IntervalStatus.DELIVERED


# ---- 5. refunds after a deadline


def test_anyone_refunds_an_undelivered_interval_after_the_deadline(suite: Suite) -> None:
    before = balances(suite)
    trade_one_kwh(suite, buyer=0, seller=1, price=60)
    outsider = suite.market(OUTSIDER)
    error = reverts(lambda: outsider.refund_interval(INTERVAL), "RefundTooEarly")
    later(suite, outsider.refund_delay)
    receipt = outsider.refund_interval(INTERVAL)
    assert outsider.events_in(receipt, "IntervalRefunded")[0]["args"]["refunded"] == 60 + 20
    assert balances(suite) == before
    assert suite.market().escrow_total() == 0
    assert outsider.interval_status(INTERVAL) is IntervalStatus.REFUNDED
    reverts(lambda: suite.market().settle_delivery(INTERVAL, []), "IntervalRefundedAlready")
    assert error.args[0] == INTERVAL


def test_a_refund_must_name_the_batch_exactly(suite: Suite) -> None:
    trade_one_kwh(suite, buyer=0, seller=1, price=60)
    terms = suite.market().batch_terms(INTERVAL)
    inflated = type(terms)(terms.retail_price, terms.feed_in_price, [
        type(p)(p.meter_id, p.bought_wh * 10, p.cost_milli * 10, p.sold_wh, p.value_milli)
        for p in terms.positions
    ])  # fmt: skip
    reverts(lambda: suite.market().refund_interval(INTERVAL, inflated), "PositionsMismatch")


# ---- 6. one market at a time


def test_a_meter_is_settled_by_one_market_only(suite: Suite) -> None:
    alice, bob, *_ = suite.meters
    # A second market on the same registry and token, with the same roles.
    second = deploy_market(
        suite.sender(ADMIN),
        suite.addresses["MeterRegistry"],
        suite.addresses["EnergyCredit"],
        operator=dev_account(1).address,
        grid=dev_account(3).address,
    )
    other_market = EnergyMarketClient(suite.sender(1), second)
    other = other_market
    registry = suite.registry(ADMIN)
    # Readings signed for the second market by Alice's key: it does not take her.
    signed = sign_reading(other.domain, ReadingMessage(alice.id, INTERVAL, 0, 0, KWH, 0), alice.key)
    receipt = other_market.settle_delivery(INTERVAL, [signed])
    assert other_market.events_in(receipt, "ReadingRejected")[0]["args"]["reason"] == (
        RejectReason.OTHER_MARKET
    )
    # Moved to the second market, she is refused by the first at once.
    registry.assign_market(alice.name, other.address)
    assert registry.market_of(alice.name) == other.address
    reverts(lambda: trade_one_kwh(suite, buyer=0, seller=1, price=60), "MeterNotInMarket")
    receipt = suite.market().settle_delivery(INTERVAL, [suite.reading(alice, KWH, 0)])
    assert suite.market().events_in(receipt, "ReadingRejected")[0]["args"]["reason"] == (
        RejectReason.OTHER_MARKET
    )
    assert bob  # Bob stays in the first market


# ---- 8. equivocation


def test_two_readings_for_one_interval_revoke_the_key(suite: Suite) -> None:
    bob = suite.meters[1]
    first = suite.reading(bob, 0, 800)
    second = suite.reading(bob, 0, 900)
    outsider = suite.market(OUTSIDER)
    receipt = outsider.prove_reading_equivocation(first, second)
    evidence = outsider.events_in(receipt, "Equivocation")[0]["args"]
    assert (evidence["meterId"], evidence["interval"]) == (bob.id, INTERVAL)
    assert suite.registry().meter(bob.name).revoked


def test_two_orders_with_one_nonce_revoke_the_key(suite: Suite) -> None:
    bob = suite.meters[1]
    first = suite.order(bob, OrderSide.SELL, 1000, 40, nonce=7)
    second = suite.order(bob, OrderSide.SELL, 2000, 40, nonce=7)
    suite.market(OUTSIDER).prove_order_equivocation(first, second)
    assert suite.registry().meter(bob.name).revoked


def test_the_same_reading_twice_or_a_forged_one_is_no_evidence(suite: Suite) -> None:
    bob = suite.meters[1]
    reading = suite.reading(bob, 0, 800)
    outsider = suite.market(OUTSIDER)
    reverts(lambda: outsider.prove_reading_equivocation(reading, reading), "NotEquivocation")
    forged = suite.reading(bob, 0, 900, signer=board_key(123))
    reverts(
        lambda: outsider.prove_reading_equivocation(reading, forged), "InvalidEvidenceSignature"
    )
    assert not suite.registry().meter(bob.name).revoked


# ---- 7. a delivery always fits


def test_a_delivery_of_the_most_entries_the_agent_allows_fits_its_gas(w3: Web3) -> None:
    """The market agent caps a batch so its delivery fits (max_delivery_entries): the worst
    delivery of that many meters, each with a position and a reading with a gap, stays
    within the gas it was sized for."""
    gas = 700_000
    count = max_delivery_entries(gas)
    suite = deploy_test_suite(w3, [f"meter-{i:02d}" for i in range(count)])
    pairs = count // 2 * 2
    orders, trades = [], []
    for buyer, seller in zip(suite.meters[:pairs:2], suite.meters[1:pairs:2], strict=True):
        buy = suite.order(buyer, OrderSide.BUY, 1500, 70, interval=NEXT_INTERVAL)
        sell = suite.order(seller, OrderSide.SELL, 1500, 40, interval=NEXT_INTERVAL)
        orders += [buy, sell]
        trades.append(trade(buy, sell, 1500, 55))
    market = suite.market()
    result = market.settle_batch(NEXT_INTERVAL, trades, orders)
    readings = [
        suite.reading(m, 1000 + i, 700 + i, interval=NEXT_INTERVAL, start=(300 + i, 200 + i))
        for i, m in enumerate(suite.meters)
    ]
    receipt = market.settle_delivery(NEXT_INTERVAL, readings, terms=result.terms)
    assert not market.events_in(receipt, "ReadingRejected")
    assert int(receipt["gasUsed"]) <= gas


def test_a_delivery_records_the_hash_of_its_settlements_and_positions(suite: Suite) -> None:
    """What contracts built on the market (certificates, prepaid) verify blobs against."""
    result = trade_one_kwh(suite, buyer=0, seller=1, price=60)
    market = suite.market()
    assert market.delivery_hash(INTERVAL) == bytes(32)
    receipt = market.settle_delivery(
        INTERVAL, [suite.reading(suite.meters[0], KWH, 0), suite.reading(suite.meters[1], 0, KWH)]
    )
    settlements = bytes(market.events_in(receipt, "DeliverySettled")[0]["args"]["settlements"])
    expected = keccak(settlements + pack_positions(result.positions))
    assert market.delivery_hash(INTERVAL) == expected
