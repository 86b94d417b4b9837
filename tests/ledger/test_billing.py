"""Billing: a statement's hash is recorded once per meter and month by the biller only, and
what it says is owed is paid (never more) from a wallet, with an approval or a permit, into
the market's grid account that absorbed the shortfall."""

from __future__ import annotations

import pytest
from contract_suite import ADMIN, OUTSIDER, TREASURY, Suite, deploy_test_suite
from eth_hash.auto import keccak
from ledger_suite import billing, now, reverts
from web3 import Web3

from meterchain.chain.node import dev_account

PERIOD = 202611
HASH = keccak(b"statement of alice for 2026-11")


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    return deploy_test_suite(w3)


@pytest.fixture
def suite(deployed: Suite, chain_snapshot: str) -> Suite:
    return deployed


def test_a_statement_is_recorded_once_and_never_rewritten(suite: Suite) -> None:
    alice = suite.meters[0]
    billing(suite).record(alice.name, PERIOD, HASH, 1_234)
    assert billing(suite).statement(alice.name, PERIOD) == (HASH, 1_234, 0)
    error = reverts(
        lambda: billing(suite).record(alice.name, PERIOD, keccak(b"another"), 0),
        "StatementAlreadyRecorded",
    )
    assert error.args == (alice.id, PERIOD, HASH)


def test_only_the_biller_records_statements(suite: Suite) -> None:
    reverts(
        lambda: billing(suite, OUTSIDER).record(suite.meters[0].name, PERIOD, HASH, 0),
        "AccessControlUnauthorizedAccount",
    )


def test_a_period_is_a_calendar_month(suite: Suite) -> None:
    error = reverts(
        lambda: billing(suite).record(suite.meters[0].name, 202613, HASH, 0), "InvalidPeriod"
    )
    assert error.args == (202613,)


def test_what_is_owed_is_paid_into_the_grid_account(suite: Suite) -> None:
    alice = suite.meters[0]
    billing(suite).record(alice.name, PERIOD, HASH, 1_000)
    suite.credit(TREASURY).mint(alice.owner.address, 1_000)
    grid_before = suite.market().grid_balance()
    receipt = billing(suite, alice.owner).pay(alice.name, PERIOD, 600)
    (paid,) = billing(suite).events_in(receipt, "StatementPaid")
    assert (paid["args"]["amount"], paid["args"]["outstanding"]) == (600, 400)
    assert suite.market().grid_balance() - grid_before == 600
    error = reverts(lambda: billing(suite, alice.owner).pay(alice.name, PERIOD, 401), "Overpayment")
    assert error.args == (alice.id, PERIOD, 401, 400)


def test_anyone_may_pay_with_a_permit(suite: Suite) -> None:
    alice = suite.meters[0]
    billing(suite).record(alice.name, PERIOD, HASH, 500)
    friend = dev_account(8)
    suite.credit(TREASURY).mint(friend.address, 500)
    billing(suite, friend).pay_with_permit(alice.name, PERIOD, 500, friend, now(suite) + 600)
    assert billing(suite).statement(alice.name, PERIOD) == (HASH, 500, 500)
    assert suite.credit(ADMIN).balance_of(friend.address) == 0


def test_an_unknown_statement_cannot_be_paid(suite: Suite) -> None:
    alice = suite.meters[0]
    error = reverts(
        lambda: billing(suite, alice.owner).pay(alice.name, PERIOD, 1), ("UnknownStatement")
    )
    assert error.args == (alice.id, PERIOD)
