"""CommunityFund: an all-or-nothing campaign for a community PV plant, whose meter sells in
the market like any other and whose revenue its shareholders claim pro rata.

Attacks of issue 11, each with its custom error: claims by non-holders, a claim front-run by
a share transfer, a refund after success; and the campaign's own rules (cap, deadline, goal,
one draw by the plant's owner only).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from contract_suite import ADMIN, INTERVAL, OUTSIDER, TREASURY
from ledger_suite import (
    BACKERS,
    CAP_SHARES,
    CAROL,
    DAY,
    GOAL_SHARES,
    MANAGER,
    PLANT,
    PRICE,
    Plant,
    Sale,
    certificates,
    deploy_plant,
    later,
    now,
    reverts,
    settle,
)
from web3 import Web3

from meterchain.chain.node import dev_account
from meterchain.ledger.period import Month
from meterchain.ledger.statements import fund_revenue_claimed


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Plant:
    return deploy_plant(w3)


@pytest.fixture
def plant(deployed: Plant, chain_snapshot: str) -> Plant:
    deployed.suite.nonces.clear()
    return deployed


def fill_the_cap(plant: Plant) -> None:
    """Backers buy 1, 3 and 6 shares: the cap is reached, the campaign succeeds at once."""
    for backer, shares in zip(BACKERS, (1, 3, 6), strict=True):
        plant.client(backer).buy(shares)


def credit_of(plant: Plant, account: int) -> int:
    return plant.suite.credit().balance_of(dev_account(account).address)


# ---- the campaign


def test_backers_buy_shares_and_the_plants_owner_draws_at_the_goal(plant: Plant) -> None:
    for backer, shares in zip(BACKERS, (2, 2, 1), strict=True):
        plant.client(backer).buy(shares)
    manager = plant.client(MANAGER)
    assert manager.raised() == GOAL_SHARES * PRICE
    assert manager.shares_of(dev_account(4).address) == 2
    reverts(lambda: manager.draw(dev_account(MANAGER).address), "CampaignOpen")
    later(plant.suite, 7 * DAY)
    reverts(
        lambda: plant.client(OUTSIDER).draw(dev_account(OUTSIDER).address),
        ("AccessControlUnauthorizedAccount"),
    )
    before = credit_of(plant, MANAGER)
    manager.draw(dev_account(MANAGER).address)
    assert credit_of(plant, MANAGER) - before == GOAL_SHARES * PRICE
    reverts(lambda: manager.draw(dev_account(MANAGER).address), "AlreadyDrawn")


def test_shares_cannot_be_bought_beyond_the_cap_or_after_the_deadline(plant: Plant) -> None:
    plant.client(4).buy(8)
    error = reverts(lambda: plant.client(5).buy(3), "CapExceeded")
    assert error.args == (3 * PRICE, 2 * PRICE)
    later(plant.suite, 7 * DAY)
    reverts(lambda: plant.client(5).buy(1), "CampaignClosed")


def test_buying_with_a_permit_needs_no_approval(plant: Plant) -> None:
    backer = dev_account(5)
    plant.client(backer).buy_with_permit(2, backer, now(plant.suite) + 3600)
    assert plant.client(ADMIN).shares_of(backer.address) == 2


def test_below_the_goal_every_backer_takes_its_money_back(plant: Plant) -> None:
    plant.client(4).buy(2)
    plant.client(5).buy(1)
    reverts(lambda: plant.client(4).refund(), "CampaignOpen")
    later(plant.suite, 7 * DAY)
    error = reverts(
        lambda: plant.client(MANAGER).draw(dev_account(MANAGER).address), ("GoalNotReached")
    )
    assert error.args == (3 * PRICE, GOAL_SHARES * PRICE)
    for backer in (4, 5):
        before = credit_of(plant, backer)
        shares = plant.client(backer).shares_of(dev_account(backer).address)
        plant.client(backer).refund()
        assert credit_of(plant, backer) - before == shares * PRICE
    assert plant.client(ADMIN).raised() == 0
    reverts(lambda: plant.client(4).refund(), "NothingToRefund")


def test_a_refund_after_success_reverts(plant: Plant) -> None:
    fill_the_cap(plant)
    later(plant.suite, 7 * DAY)
    error = reverts(lambda: plant.client(4).refund(), "CampaignSucceeded")
    assert error.args == (CAP_SHARES * PRICE, GOAL_SHARES * PRICE)


def test_a_share_bought_from_a_backer_is_refunded_to_its_new_holder(plant: Plant) -> None:
    plant.client(4).buy(2)
    plant.client(4).transfer_shares(dev_account(OUTSIDER).address, 1)
    later(plant.suite, 7 * DAY)
    before = credit_of(plant, OUTSIDER)
    plant.client(OUTSIDER).refund()
    assert credit_of(plant, OUTSIDER) - before == PRICE


# ---- revenue


def sell_plant_energy(plant: Plant, wh: int = 2_000, price: int = 50) -> None:
    """The plant sells carol `wh` at `price` cents/kWh and delivers it."""
    settle(
        plant.suite,
        [Sale(buyer=CAROL, seller=PLANT, wh=wh, price=price)],
        {
            PLANT: (0, wh),
            CAROL: (wh, 0),
        },
    )


def collect_revenue(plant: Plant) -> int:
    """Anyone collects: a withdrawal request, then (after the delay) the withdrawal."""
    outsider = plant.client(OUTSIDER)
    outsider.collect()
    later(plant.suite, plant.suite.market().withdrawal_delay)
    before = outsider.total_distributed()
    outsider.collect()
    return outsider.total_distributed() - before


def test_the_plants_market_revenue_reaches_its_shareholders_pro_rata(plant: Plant) -> None:
    fill_the_cap(plant)
    sell_plant_energy(plant, wh=2_000, price=50)  # 100 cents of revenue
    revenue = collect_revenue(plant)
    assert revenue == 100
    assert plant.suite.market().balance_of("plant") == 10_000  # the reserve stays
    claims = {}
    for backer in BACKERS:
        before = credit_of(plant, backer)
        plant.client(backer).claim()
        claims[backer] = credit_of(plant, backer) - before
    assert claims == {4: 10, 5: 30, 6: 60}


def test_a_backers_statement_counts_the_revenue_it_claimed_in_the_month(plant: Plant) -> None:
    """The statement's "fund revenue" line: what the owner claimed, within the month only."""
    fill_the_cap(plant)
    sell_plant_energy(plant, wh=2_000, price=50)
    collect_revenue(plant)
    backer = plant.client(6)
    backer.claim()
    moment = datetime.fromtimestamp(now(plant.suite), ZoneInfo("America/Fortaleza"))
    month = Month(moment.year, moment.month, "America/Fortaleza")
    previous = Month(moment.year - (moment.month == 1), (moment.month - 2) % 12 + 1, month.timezone)
    address = dev_account(6).address
    assert fund_revenue_claimed([backer], address, month) == 60
    assert fund_revenue_claimed([backer], address, previous) == 0
    assert fund_revenue_claimed([backer], dev_account(4).address, month) == 0  # not claimed


def test_the_plants_certificates_go_to_the_fund_which_cannot_block_issuance(plant: Plant) -> None:
    """The fund owns the plant's meter and does not implement ERC-1155 receiving: issuance
    still mints to it (no acceptance call), and its manager can send them on."""
    fill_the_cap(plant)
    sell_plant_energy(plant, wh=2_000)
    certificates(plant.suite, OUTSIDER).issue_interval(plant.suite.market(), INTERVAL)
    client = certificates(plant.suite)
    certificate = client.certificate_id("plant", INTERVAL)
    assert client.balance_of(plant.fund, certificate) == 2_000


def test_a_non_holder_has_nothing_to_claim(plant: Plant) -> None:
    fill_the_cap(plant)
    sell_plant_energy(plant)
    collect_revenue(plant)
    error = reverts(lambda: plant.client(OUTSIDER).claim(), "NothingToClaim")
    assert error.args == (dev_account(OUTSIDER).address,)


def test_a_claim_front_run_by_a_share_transfer_pays_no_one_twice(plant: Plant) -> None:
    """Backer 6 (6 shares) moves its shares to an accomplice before claiming: revenue
    distributed before the transfer stays with the sender, the accomplice gets nothing of it,
    and a claim followed by a transfer and a second claim pays nothing more."""
    fill_the_cap(plant)
    sell_plant_energy(plant, wh=2_000, price=50)
    collect_revenue(plant)
    sender = plant.client(6)
    sender.transfer_shares(dev_account(OUTSIDER).address, 6)
    reverts(lambda: plant.client(OUTSIDER).claim(), "NothingToClaim")
    before = credit_of(plant, 6)
    sender.claim()
    assert credit_of(plant, 6) - before == 60
    reverts(lambda: sender.claim(), "NothingToClaim")
    plant.client(OUTSIDER).transfer_shares(dev_account(6).address, 6)
    reverts(lambda: sender.claim(), "NothingToClaim")


def test_revenue_is_not_distributed_before_the_campaign_succeeds(plant: Plant) -> None:
    plant.client(4).buy(1)
    error = reverts(lambda: plant.client(OUTSIDER).collect(), "GoalNotReached")
    assert error.args == (PRICE, GOAL_SHARES * PRICE)


def test_collect_with_nothing_due_says_so(plant: Plant) -> None:
    fill_the_cap(plant)
    reverts(lambda: plant.client(OUTSIDER).collect(), "NothingToCollect")


def test_revenue_sent_straight_to_the_fund_is_distributed_exactly(plant: Plant) -> None:
    """1 + 3 + 6 shares; 7 units, then 3 units arrive: every holder's claim is its exact
    pro-rata share rounded down once, over both distributions (the remainder carries)."""
    fill_the_cap(plant)
    treasury = plant.suite.credit(TREASURY)
    for amount in (7, 3):
        treasury.mint(plant.fund, amount)
        plant.client(OUTSIDER).distribute()
    holders = {4: 1, 5: 3, 6: 6}
    for backer, shares in holders.items():
        assert plant.client(ADMIN).earned(dev_account(backer).address) == 10 * shares // 10
    reverts(lambda: plant.client(OUTSIDER).distribute(), "NothingToDistribute")
