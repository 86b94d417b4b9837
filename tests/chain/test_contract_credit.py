"""EnergyCredit on a real anvil node: top-up, permit, redemption."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from contract_suite import TREASURY, Suite, deploy_test_suite
from web3 import Web3

from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    return deploy_test_suite(w3, fund=False)


@pytest.fixture
def suite(deployed: Suite, chain_snapshot: str) -> Suite:
    return deployed


def test_one_token_is_one_currency_unit_and_the_smallest_unit_a_cent(suite: Suite) -> None:
    credit = suite.credit()
    assert credit.decimals == 2
    holder = dev_account(8).address
    receipt = credit.top_up(holder, "12.345")  # rounded half up to the cent
    assert credit.balance_of(holder) == 1235
    assert credit.to_currency(1235) == Decimal("12.35")
    assert credit.events_in(receipt, "ToppedUp")[0]["args"]["amount"] == 1235


def test_treasury_redeems_what_the_holder_approved(suite: Suite) -> None:
    treasury = suite.credit(TREASURY)
    holder = dev_account(8)
    treasury.mint(holder.address, 1000)
    suite.credit(holder).approve(dev_account(TREASURY).address, 400)
    receipt = treasury.redeem_from(holder.address, 400)
    assert treasury.balance_of(holder.address) == 600
    assert treasury.total_supply() == 600
    assert treasury.events_in(receipt, "Redeemed")[0]["args"]["amount"] == 400


def test_redeeming_more_than_approved_is_refused(suite: Suite) -> None:
    treasury = suite.credit(TREASURY)
    holder = dev_account(8)
    treasury.mint(holder.address, 1000)
    with pytest.raises(TransactionReverted) as caught:
        treasury.redeem_from(holder.address, 1)
    assert caught.value.error_name == "ERC20InsufficientAllowance"


def test_treasury_burns_credit_sent_back_to_it(suite: Suite) -> None:
    treasury = suite.credit(TREASURY)
    holder = dev_account(8)
    treasury.mint(holder.address, 300)
    suite.credit(holder).transfer(dev_account(TREASURY).address, 300)
    treasury.redeem(300)
    assert treasury.total_supply() == 0


def test_permit_sets_an_allowance_from_a_signature(suite: Suite) -> None:
    credit = suite.credit(TREASURY)
    holder = dev_account(8)
    spender = dev_account(7).address
    fn = credit.contract.functions.permit
    assert credit.allowance(holder.address, spender) == 0
    deadline = int(time.time()) + 600
    v, r, s = credit.sign_permit(holder, spender, 250, deadline)
    credit._transact(fn(holder.address, spender, 250, deadline, v, r, s))
    assert credit.allowance(holder.address, spender) == 250


def test_zero_amounts_are_refused(suite: Suite) -> None:
    with pytest.raises(TransactionReverted) as caught:
        suite.credit(TREASURY).mint(dev_account(8).address, 0)
    assert caught.value.error_name == "ZeroAmount"
