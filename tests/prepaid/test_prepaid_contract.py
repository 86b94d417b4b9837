"""PrepaidMeter on a real anvil node: credit, top-ups, advances, cut-off rules, reconnection."""

from __future__ import annotations

from datetime import date

import pytest
from prepaid_suite import (
    BUFFER,
    EMERGENCY,
    FLOAT,
    GRID,
    OUTSIDER,
    TUESDAY_10H,
    PrepaidSuite,
    local,
)

from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account
from meterchain.chain.signing import bytes32_to_meter_id
from meterchain.prepaid.client import SupplyState
from meterchain.prepaid.rules import Reason, day_number


def events(suite: PrepaidSuite, receipt: object, name: str) -> list[dict[str, object]]:
    return [dict(e["args"]) for e in suite.prepaid().events_in(receipt, name)]  # type: ignore[arg-type]


def test_an_enrolled_meter_starts_on_its_emergency_credit_with_the_buffer_lent(
    suite: PrepaidSuite,
) -> None:
    status = suite.prepaid().status("home-1")
    assert status.state is SupplyState.GRACE and status.reason is Reason.EMERGENCY_CREDIT
    assert (status.credit, status.debt) == (0, BUFFER)
    assert suite.market().balance_of("home-1") == BUFFER
    assert suite.prepaid().float_balance() == FLOAT - 3 * BUFFER


def test_a_meter_not_owned_by_the_prepaid_contract_cannot_be_enrolled(suite: PrepaidSuite) -> None:
    with pytest.raises(TransactionReverted) as error:
        suite.prepaid(GRID).enrol("postpaid", dev_account(7).address)
    assert error.value.error_name == "NotOwnedByPrepaid"
    with pytest.raises(TransactionReverted) as error:
        suite.prepaid(OUTSIDER).enrol("home-1", dev_account(7).address)
    assert error.value.error_name == "AccessControlUnauthorizedAccount"


def test_a_top_up_repays_the_debt_first_and_the_rest_becomes_credit(suite: PrepaidSuite) -> None:
    receipt = suite.top_up("home-1", 2_000)
    [topped] = events(suite, receipt, "ToppedUp")
    assert (topped["amount"], topped["repaid"]) == (2_000, BUFFER)
    status = suite.prepaid().status("home-1")
    assert (status.credit, status.debt, status.state) == (2_000, 0, SupplyState.SUPPLIED)
    assert suite.market().balance_of("home-1") == 2_000  # 500 lent + 1,500 deposited
    assert suite.prepaid().float_balance() == FLOAT - 2 * BUFFER  # its loan came back


def test_a_permit_top_up_needs_no_approval(suite: PrepaidSuite) -> None:
    holder = suite.holder("home-2")
    suite.credit().mint(holder.address, 700)
    suite.prepaid(holder).top_up_with_permit("home-2", 700, holder, TUESDAY_10H + 86_400 * 365)
    assert suite.prepaid().status("home-2").credit == 700
    assert suite.credit().balance_of(holder.address) == 0


def test_consumption_is_debited_from_the_signed_readings_at_the_tariff(suite: PrepaidSuite) -> None:
    suite.set_time(TUESDAY_10H)
    suite.top_up("home-1", 1_000)
    suite.consume("home-1", 2_500)  # 2.5 kWh at 80 cents
    assert suite.prepaid().status("home-1").credit == 1_000 - 200
    suite.prepaid(OUTSIDER).assess("home-1")
    status = suite.prepaid().status("home-1")
    assert status.credit == 800  # an advance moves money, not credit
    assert suite.market().balance_of("home-1") >= BUFFER


def test_exhausted_credit_is_cut_off_in_business_hours_and_a_top_up_reconnects(
    suite: PrepaidSuite,
) -> None:
    suite.set_time(TUESDAY_10H)
    suite.top_up("home-1", 400)
    suite.consume("home-1", 5_000)  # 400 cents: credit 0, within the emergency credit
    receipt = suite.prepaid(OUTSIDER).assess("home-1")
    [changed] = events(suite, receipt, "StateChanged")
    assert (changed["state"], changed["reason"]) == (SupplyState.GRACE, Reason.EMERGENCY_CREDIT)
    suite.consume("home-1", 2_500)  # 200 more: credit -200, the emergency credit is used up
    receipt = suite.prepaid(OUTSIDER).assess("home-1")
    [cut] = events(suite, receipt, "CutOff")
    assert bytes32_to_meter_id(cut["meterId"]) == "home-1"  # type: ignore[arg-type]
    assert cut["credit"] == -EMERGENCY
    assert suite.prepaid().status("home-1").state is SupplyState.CUT_OFF
    # A top-up that leaves the credit at or below zero does not reconnect: the debt comes first.
    receipt = suite.top_up("home-1", 150)
    assert not events(suite, receipt, "Reconnect")
    receipt = suite.top_up("home-1", 100)
    [reconnect] = events(suite, receipt, "Reconnect")
    assert reconnect["credit"] == 50
    assert suite.prepaid().status("home-1").state is SupplyState.SUPPLIED


@pytest.mark.parametrize(
    ("moment", "reason"),
    [
        (local(2026, 11, 24, 7, 59), Reason.NIGHT),  # Tuesday before 08:00
        (local(2026, 11, 24, 18, 0), Reason.NIGHT),  # Tuesday from 18:00
        (local(2026, 11, 27, 10), Reason.DAY),  # Friday
        (local(2026, 11, 28, 10), Reason.DAY),  # Saturday
        (local(2026, 11, 29, 10), Reason.DAY),  # Sunday
        (local(2026, 12, 24, 10), Reason.HOLIDAY_EVE),  # Thursday before Christmas
        (local(2026, 12, 25, 10), Reason.DAY),  # Christmas is a Friday
        (local(2026, 11, 2, 10), Reason.HOLIDAY),  # All Souls' Day, a Monday
    ],
)
def test_no_cut_off_at_night_on_excluded_days_or_holidays(
    suite: PrepaidSuite, moment: int, reason: Reason
) -> None:
    suite.prepaid(GRID).set_holidays(
        [day_number(date(2026, 11, 2)), day_number(date(2026, 12, 25))], True
    )
    suite.set_time(moment)
    suite.consume("home-1", 2_500)  # -200: the emergency credit is used up
    receipt = suite.prepaid(OUTSIDER).assess("home-1")
    assert not events(suite, receipt, "CutOff")
    status = suite.prepaid().status("home-1")
    assert (status.state, status.reason) == (SupplyState.GRACE, reason)
    with pytest.raises(TransactionReverted) as error:
        suite.prepaid(OUTSIDER).cut_off("home-1")
    assert error.value.error_name == "CutOffNotAllowedNow"
    assert error.value.named_args["reason"] == reason


def test_a_grace_period_ends_at_the_first_allowed_hour(suite: PrepaidSuite) -> None:
    suite.set_time(local(2026, 11, 23, 22))  # Monday night
    suite.consume_and_assess("home-1", 3_000)
    assert suite.prepaid().status("home-1").reason is Reason.NIGHT
    shortfalls = suite.consume_and_assess("home-1", 14_000)  # consumption is still billed
    suite.set_time(local(2026, 11, 24, 8, 0))
    receipt = suite.prepaid(OUTSIDER).assess("home-1")
    [cut] = events(suite, receipt, "CutOff")
    assert cut["credit"] == -(17_000 * 80 // 1000)
    assert shortfalls == 0


def test_low_credit_warnings_come_once_per_threshold(suite: PrepaidSuite) -> None:
    suite.set_time(TUESDAY_10H)
    suite.top_up("home-2", 1_500)

    def step(import_wh: int) -> list[tuple[object, object]]:
        suite.consume("home-2", import_wh)
        receipt = suite.prepaid(OUTSIDER).assess("home-2")
        return [(w["threshold"], w["credit"]) for w in events(suite, receipt, "LowCredit")]

    assert step(5_000) == []  # 1,100 left
    assert step(2_500) == [(1000, 900)]
    assert step(1_250) == []  # 800: still below 1,000, warned already
    assert step(5_000) == []  # 400
    assert step(1_250) == []  # 300: not below 300
    assert step(1_250) == [(300, 200)]
    suite.top_up("home-2", 2_000)  # 2,200: above every threshold, which re-arms them
    warned = [step(5_000) for _ in range(6)]
    assert warned == [[], [], [], [(1000, 600)], [(300, 200)], [(0, -200)]]


def test_the_never_cut_list_keeps_a_meter_supplied_and_refuses_a_cut_off(
    suite: PrepaidSuite,
) -> None:
    suite.set_time(TUESDAY_10H)
    shortfalls = suite.consume_and_assess("clinic", 20_000)  # credit -1,600
    cut = suite.prepaid().events("CutOff")
    assert not cut
    status = suite.prepaid().status("clinic")
    assert (status.state, status.reason) == (SupplyState.GRACE, Reason.NEVER_CUT)
    assert status.credit == -1_600
    with pytest.raises(TransactionReverted) as error:
        suite.prepaid(OUTSIDER).cut_off("clinic")
    assert error.value.error_name == "MeterNeverCut"
    # The utility keeps lending, so the consumption is billed, not written off.
    assert shortfalls == 0
    assert suite.market().balance_of("clinic") == BUFFER
    assert status.debt == 1_600 + BUFFER


def test_putting_a_cut_off_meter_on_the_never_cut_list_reconnects_it(suite: PrepaidSuite) -> None:
    suite.set_time(TUESDAY_10H)
    suite.consume("home-1", 2_500)
    suite.prepaid(OUTSIDER).assess("home-1")
    assert suite.prepaid().status("home-1").state is SupplyState.CUT_OFF
    receipt = suite.prepaid(GRID).set_never_cut("home-1", True)
    assert events(suite, receipt, "Reconnect")
    assert suite.prepaid().status("home-1").reason is Reason.NEVER_CUT


def test_cut_off_on_request_names_why_not(suite: PrepaidSuite) -> None:
    suite.set_time(TUESDAY_10H)
    suite.top_up("home-1", 1_000)
    with pytest.raises(TransactionReverted) as error:
        suite.prepaid(OUTSIDER).cut_off("home-1")
    assert error.value.error_name == "CreditNotExhausted"
    assert error.value.named_args["credit"] == 1_000
    suite.consume_and_assess("home-1", 12_500)  # 0: on the emergency credit
    suite.consume("home-1", 2_500)  # -200, not assessed yet
    receipt = suite.prepaid(OUTSIDER).cut_off("home-1")
    assert events(suite, receipt, "CutOff")
    with pytest.raises(TransactionReverted) as error:
        suite.prepaid(OUTSIDER).cut_off("home-1")
    assert error.value.error_name == "AlreadyCutOff"


def test_assess_many_skips_revoked_and_unknown_meters(suite: PrepaidSuite) -> None:
    suite.set_time(TUESDAY_10H)
    suite.consume("home-1", 2_500)
    suite.consume("home-2", 2_500)
    suite.registry().revoke_meter("home-2")
    receipt = suite.prepaid(OUTSIDER).assess_many(["home-1", "home-2", "postpaid", "nobody"])
    cut = [bytes32_to_meter_id(e["meterId"]) for e in events(suite, receipt, "CutOff")]  # type: ignore[arg-type]
    assert cut == ["home-1"]


def test_nothing_is_written_off_across_a_cut_and_the_float_gets_its_loans_back(
    suite: PrepaidSuite,
) -> None:
    """The household pays exactly the retail cost of all it imported, grace night included;
    the float ends where it started and the grid account absorbs no shortfall."""
    suite.set_time(local(2026, 11, 23, 20))  # Monday evening
    suite.top_up("home-1", 1_000)
    imported = 0
    shortfalls = 0
    for import_wh in (4_000, 5_000, 3_000, 5_000, 5_000, 2_000):  # runs out in the night
        shortfalls += suite.consume_and_assess("home-1", import_wh)
        imported += import_wh
    assert suite.prepaid().status("home-1").state is SupplyState.GRACE
    suite.set_time(local(2026, 11, 24, 8, 15))
    suite.prepaid(OUTSIDER).assess("home-1")
    assert suite.prepaid().status("home-1").state is SupplyState.CUT_OFF
    receipt = suite.consume("home-1", 0)  # cut off: nothing flows
    shortfalls += len(suite.market().events_in(receipt, "Shortfall"))
    suite.top_up("home-1", 2_000)
    status = suite.prepaid().status("home-1")
    cost = imported * 80 // 1000
    assert status.state is SupplyState.SUPPLIED
    assert status.credit == 1_000 + 2_000 - cost
    assert status.debt == 0
    assert shortfalls == 0
    assert suite.prepaid().float_balance() == FLOAT - 2 * BUFFER  # home-1's loans came back


def test_the_holder_withdraws_credit_but_never_the_utility_s_loan(suite: PrepaidSuite) -> None:
    suite.set_time(TUESDAY_10H)
    suite.top_up("home-1", 300)
    suite.prepaid(OUTSIDER).assess("home-1")  # balance 300 < buffer: 200 lent
    holder = suite.holder("home-1")
    with pytest.raises(TransactionReverted) as error:
        suite.prepaid(holder).request_refund("home-1", 400)
    assert error.value.error_name == "RefundExceedsCredit"
    with pytest.raises(TransactionReverted) as error:
        suite.prepaid(OUTSIDER).request_refund("home-1", 100)
    assert error.value.error_name == "NotHolder"
    suite.prepaid(holder).request_refund("home-1", 300)
    suite.set_time(TUESDAY_10H + suite.market().withdrawal_delay + 60)
    suite.prepaid(holder).refund("home-1", holder.address)
    assert suite.credit().balance_of(holder.address) == 300
    status = suite.prepaid().status("home-1")
    assert status.credit == 0 and status.debt == BUFFER
