"""Attacks on prepaid credit, one per rule, each refused with its custom error."""

from __future__ import annotations

import random
from datetime import date

import pytest
from eth_account import Account
from prepaid_suite import (
    BUFFER,
    FLOAT,
    GRID,
    OUTSIDER,
    TUESDAY_10H,
    VENDING_KEY,
    PrepaidSuite,
)

from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account
from meterchain.prepaid.client import SupplyState
from meterchain.prepaid.rules import CutOffRules, day_number
from meterchain.prepaid.voucher import (
    SignedVoucher,
    Voucher,
    decode_code,
    encode_code,
    voucher_digest,
)


def reverted(call: object) -> TransactionReverted:
    with pytest.raises(TransactionReverted) as error:
        call()  # type: ignore[operator]
    return error.value


def test_a_voucher_tops_up_its_meter_from_the_float(suite: PrepaidSuite) -> None:
    signed = suite.voucher("home-1", 2_500)
    code = encode_code(signed)
    assert decode_code(code) == signed
    receipt = suite.prepaid(OUTSIDER).redeem_voucher("home-1", decode_code(code))
    assert suite.prepaid().events_in(receipt, "VoucherRedeemed")
    status = suite.prepaid().status("home-1")
    assert status.credit == 2_500 and status.state is SupplyState.SUPPLIED
    assert suite.prepaid().voucher_used(signed.voucher.serial)
    assert suite.prepaid().hash_voucher(signed) == voucher_digest(
        suite.prepaid().domain, signed.voucher
    )


def test_a_voucher_used_twice_is_refused(suite: PrepaidSuite) -> None:
    signed = suite.voucher("home-1", 1_000)
    suite.prepaid(OUTSIDER).redeem_voucher("home-1", signed)
    error = reverted(lambda: suite.prepaid(dev_account(8)).redeem_voucher("home-1", signed))
    assert error.error_name == "VoucherAlreadyUsed"
    assert error.named_args["serial"] == signed.voucher.serial
    assert suite.prepaid().status("home-1").credit == 1_000


def test_a_voucher_on_another_meter_is_refused(suite: PrepaidSuite) -> None:
    signed = suite.voucher("home-1", 1_000)
    error = reverted(lambda: suite.prepaid(OUTSIDER).redeem_voucher("home-2", signed))
    assert error.error_name == "VoucherForAnotherMeter"
    # Re-pointing the voucher at the other meter breaks its signature.
    v = signed.voucher
    moved = SignedVoucher(Voucher(suite.prepaid().status("home-2").meter_id, v.amount, v.serial),
                          signed.signature)  # fmt: skip
    error = reverted(lambda: suite.prepaid(OUTSIDER).redeem_voucher("home-2", moved))
    assert error.error_name == "InvalidVoucherSignature"


def test_a_forged_voucher_is_refused(suite: PrepaidSuite) -> None:
    forger = Account.from_key(b"\x0f" * 32)
    forged = suite.voucher("home-1", 50_000, key=forger)
    error = reverted(lambda: suite.prepaid(OUTSIDER).redeem_voucher("home-1", forged))
    assert error.error_name == "InvalidVoucherSignature"
    assert error.named_args["recovered"] == forger.address
    # A genuine voucher whose amount was raised.
    genuine = suite.voucher("home-1", 500)
    v = genuine.voucher
    inflated = SignedVoucher(Voucher(v.meter_id, 50_000, v.serial), genuine.signature)
    error = reverted(lambda: suite.prepaid(OUTSIDER).redeem_voucher("home-1", inflated))
    assert error.error_name == "InvalidVoucherSignature"
    assert suite.prepaid().float_balance() == FLOAT - 3 * BUFFER  # only the enrolments' loans


def test_a_voucher_for_another_prepaid_contract_is_refused(suite: PrepaidSuite) -> None:
    from meterchain.prepaid.voucher import PrepaidDomain, new_voucher, sign_voucher

    elsewhere = PrepaidDomain(suite.w3.eth.chain_id, "0x" + "12" * 20)
    signed = sign_voucher(elsewhere, new_voucher("home-1", 1_000, 77), VENDING_KEY)
    error = reverted(lambda: suite.prepaid(OUTSIDER).redeem_voucher("home-1", signed))
    assert error.error_name == "InvalidVoucherSignature"


def test_an_expired_voucher_is_refused(suite: PrepaidSuite) -> None:
    suite.set_time(TUESDAY_10H)
    signed = suite.voucher("home-1", 1_000, expiry=TUESDAY_10H - 1)
    error = reverted(lambda: suite.prepaid(OUTSIDER).redeem_voucher("home-1", signed))
    assert error.error_name == "VoucherExpired"


def test_a_voucher_from_a_replaced_vending_key_is_refused(suite: PrepaidSuite) -> None:
    signed = suite.voucher("home-1", 1_000)
    suite.prepaid(GRID).set_vending_key(dev_account(8).address)
    error = reverted(lambda: suite.prepaid(OUTSIDER).redeem_voucher("home-1", signed))
    assert error.error_name == "InvalidVoucherSignature"


def test_a_top_up_on_a_revoked_meter_is_refused(suite: PrepaidSuite) -> None:
    suite.registry().revoke_meter("home-1")
    holder = suite.holder("home-1")
    suite.credit().mint(holder.address, 1_000)
    error = reverted(lambda: suite.prepaid(holder).top_up("home-1", 1_000))
    assert error.error_name == "MeterRevoked"
    signed = suite.voucher("home-1", 1_000)
    error = reverted(lambda: suite.prepaid(OUTSIDER).redeem_voucher("home-1", signed))
    assert error.error_name == "MeterRevoked"
    assert suite.credit().balance_of(holder.address) == 1_000  # nothing left the wallet


def test_a_top_up_on_a_meter_that_is_not_prepaid_is_refused(suite: PrepaidSuite) -> None:
    holder = suite.holder("home-1")
    suite.credit().mint(holder.address, 1_000)
    error = reverted(lambda: suite.prepaid(holder).top_up("postpaid", 1_000))
    assert error.error_name == "NotEnrolled"


def test_a_cut_off_for_a_meter_on_the_never_cut_list_is_refused(suite: PrepaidSuite) -> None:
    suite.set_time(TUESDAY_10H)
    suite.consume_and_assess("clinic", 10_000)  # -800: exhausted, in business hours
    assert suite.prepaid().status("clinic").state is SupplyState.GRACE
    error = reverted(lambda: suite.prepaid(OUTSIDER).cut_off("clinic"))
    assert error.error_name == "MeterNeverCut"
    error = reverted(lambda: suite.prepaid(GRID).cut_off("clinic"))
    assert error.error_name == "MeterNeverCut"
    assert not suite.prepaid().events("CutOff")


def test_only_the_grid_sets_the_rules_the_list_and_the_vending_key(suite: PrepaidSuite) -> None:
    outsider = suite.prepaid(OUTSIDER)
    for call in (
        lambda: outsider.set_never_cut("home-1", True),
        lambda: outsider.set_vending_key(dev_account(OUTSIDER).address),
        lambda: outsider.set_rules(CutOffRules(cut_from_hour=0, cut_to_hour=24)),
        lambda: outsider.set_holidays([1], False),
        lambda: outsider.withdraw_float(1, dev_account(OUTSIDER).address),
        lambda: outsider.set_credit_settings(10**9, 0, []),
    ):
        assert reverted(call).error_name == "AccessControlUnauthorizedAccount"


def test_invalid_rules_and_thresholds_are_refused(suite: PrepaidSuite) -> None:
    grid = suite.prepaid(GRID)
    with pytest.raises(ValueError, match="not an interval"):
        CutOffRules(cut_from_hour=18, cut_to_hour=8)
    backwards = grid.contract.functions.setRules((-10800, 18, 8, 0x1E, True))
    assert reverted(lambda: grid.sender.transact(backwards)).error_name == "InvalidRules"
    assert reverted(lambda: grid.set_credit_settings(0, 0, [0, 100])).error_name == (
        "InvalidThresholds"
    )


def test_the_contract_and_the_board_apply_the_same_cut_off_rules(suite: PrepaidSuite) -> None:
    rules = CutOffRules()
    holidays = [day_number(date(2026, 12, d)) for d in (8, 25)]
    suite.prepaid(GRID).set_holidays(holidays, True)
    prepaid = suite.prepaid()
    rng = random.Random(10)
    start = TUESDAY_10H
    moments = [start + rng.randrange(0, 40 * 86_400) for _ in range(120)]
    moments += [start + h * 3600 for h in range(0, 24 * 9)]  # every hour of nine days
    for moment in moments:
        allowed, reason = prepaid.cut_off_allowed_at(moment)
        assert (allowed, reason) == rules.allowed_at(moment, holidays), moment
