"""Prepaid supply on the web (issue 10) against a real chain: a household's credit and state,
a voucher the operator issues and the household redeems once, a top-up from the household's
wallet, each audited; low-credit warnings reach the page as alarms through the monitor."""

from __future__ import annotations

import asyncio
import json
import re

from live_harness import HOUSE, PREPAID
from web_fixtures import ChainWebApp, audit_entries, csrf_of

from meterchain.chain.units import to_units
from meterchain.prepaid.agent import PrepaidAgent
from meterchain.store.community import AlarmRow
from meterchain.web.demo import OPERATOR, prosumer_login


def credit_of(app: ChainWebApp) -> float:
    return float(app.chain.prepaid_status(PREPAID)["credit"])


def test_a_prepaid_household_sees_its_credit_state_and_since_when(ledger_web: ChainWebApp) -> None:
    household = ledger_web.login(*prosumer_login(PREPAID))
    status = household.get(f"/api/meters/{PREPAID}/prepaid").json()
    assert status["meter_id"] == PREPAID and status["enrolled"] is True
    assert status["state"] == "supplied" and status["credit"] == credit_of(ledger_web)
    assert status["since"].startswith("2026-11-24T")
    page = household.get(f"/meters/{PREPAID}/prepaid")
    assert 'data-state="supplied"' in page.text and 'id="voucher-code"' in page.text
    assert "fornecido" in page.text  # the household's language: Portuguese
    other = ledger_web.login(*prosumer_login(HOUSE))
    assert other.get(f"/api/meters/{HOUSE}/prepaid").json()["enrolled"] is False
    assert 'id="not-prepaid"' in other.get(f"/meters/{HOUSE}/prepaid").text
    operator = ledger_web.login(*OPERATOR)
    listed = operator.get("/api/prepaid").json()
    assert [s["meter_id"] for s in listed] == [PREPAID]
    assert f'data-meter="{PREPAID}"' in operator.get("/prepaid").text


def test_the_operator_issues_a_voucher_and_the_household_redeems_it_once(
    ledger_web: ChainWebApp,
) -> None:
    operator = ledger_web.login(*OPERATOR)
    page = operator.post(
        "/prepaid/vouchers",
        data={"csrf_token": csrf_of(operator), "meter_id": PREPAID, "amount": "25,00"},
    )
    assert page.status_code == 200
    found = re.search(r'id="voucher-code">([^<]+)<', page.text)
    assert found is not None
    code = found[1]
    [issued] = audit_entries(ledger_web, "prepaid.voucher_issue")
    assert issued.actor == OPERATOR[0] and code not in (issued.after or "")  # shown once only
    assert json.loads(issued.after or "{}")["amount"] == 25.0

    household = ledger_web.login(*prosumer_login(PREPAID))
    token = csrf_of(household)
    before = credit_of(ledger_web)
    done = household.post(
        f"/meters/{PREPAID}/prepaid/voucher", data={"csrf_token": token, "code": code}
    )
    assert done.status_code == 303 and "done=voucher" in done.headers["location"]
    assert credit_of(ledger_web) == before + 25
    [redeemed] = audit_entries(ledger_web, "prepaid.voucher")
    assert redeemed.actor == prosumer_login(PREPAID)[0] and redeemed.target == f"meter:{PREPAID}"
    assert json.loads(redeemed.before or "{}")["credit"] == before
    assert json.loads(redeemed.after or "{}")["credit"] == before + 25

    again = household.post(
        f"/meters/{PREPAID}/prepaid/voucher", data={"csrf_token": token, "code": code}
    )
    assert "VoucherAlreadyUsed" in household.get(again.headers["location"].split("#")[0]).text
    typo = household.post(
        f"/api/meters/{PREPAID}/prepaid/voucher",
        headers={"X-CSRF-Token": token},
        json={"code": code[:-3] + ("AAA" if not code.endswith("AAA") else "BBB")},
    )
    assert typo.status_code == 400 and "check" in typo.json()["detail"]
    assert credit_of(ledger_web) == before + 25
    assert len(audit_entries(ledger_web, "prepaid.voucher")) == 1


def test_a_voucher_for_one_meter_is_refused_on_another(ledger_web: ChainWebApp) -> None:
    operator = ledger_web.login(*OPERATOR)
    issued = operator.post(
        "/api/prepaid/vouchers",
        headers={"X-CSRF-Token": csrf_of(operator)},
        json={"meter_id": PREPAID, "amount": "10.00", "expiry_days": 30},
    )
    assert issued.status_code == 200, issued.text
    assert issued.json()["meter_id"] == PREPAID and issued.json()["expiry"] > 0
    neighbour = ledger_web.login(*prosumer_login(HOUSE))
    refused = neighbour.post(
        f"/api/meters/{HOUSE}/prepaid/voucher",
        headers={"X-CSRF-Token": csrf_of(neighbour)},
        json={"code": issued.json()["code"]},
    )
    assert refused.status_code == 400
    assert f"this voucher is for meter {PREPAID}" in refused.json()["detail"]
    not_prepaid = operator.post(
        "/api/prepaid/vouchers",
        headers={"X-CSRF-Token": csrf_of(operator)},
        json={"meter_id": HOUSE, "amount": "10.00"},
    )
    assert not_prepaid.status_code == 400 and "not prepaid" in not_prepaid.json()["detail"]


def test_a_household_tops_up_from_its_wallet_and_it_is_audited(ledger_web: ChainWebApp) -> None:
    chain = ledger_web.chain
    wallet = chain.wallet_address(PREPAID)
    assert wallet is not None
    credit_token = chain.market.credit
    household = ledger_web.login(*prosumer_login(PREPAID))
    token = csrf_of(household)
    before, held = credit_of(ledger_web), credit_token.balance_of(wallet)
    done = household.post(
        f"/meters/{PREPAID}/prepaid/top-up", data={"csrf_token": token, "amount": "5,50"}
    )
    assert done.status_code == 303 and "done=topped_up" in done.headers["location"]
    assert credit_of(ledger_web) == before + 5.5
    assert credit_token.balance_of(wallet) == held - to_units("5.50", chain.decimals)
    [entry] = audit_entries(ledger_web, "prepaid.top_up")
    assert entry.actor == prosumer_login(PREPAID)[0]
    assert json.loads(entry.after or "{}")["amount"] == 5.5
    for amount, field in (("cinco", "amount"), ("0", "amount"), ("1.005", "amount")):
        refused = household.post(
            f"/meters/{PREPAID}/prepaid/top-up", data={"csrf_token": token, "amount": amount}
        )
        assert f"field={field}" in refused.headers["location"], amount
    too_much = household.post(
        f"/api/meters/{PREPAID}/prepaid/top-up",
        headers={"X-CSRF-Token": token},
        json={"amount": "99999.00"},
    )
    assert too_much.status_code == 400 and "buy credit first" in too_much.json()["detail"]
    assert len(audit_entries(ledger_web, "prepaid.top_up")) == 1


def test_low_credit_warnings_reach_the_households_page_through_the_monitor(
    ledger_web: ChainWebApp,
) -> None:
    """The utility raises its warning levels above the meter's credit: the contract warns at
    the next assessment, the operator's prepaid agent forwards it, the monitor raises the
    alarm, and the household's page shows it (and the enrolment's grace, which ended)."""
    chain = ledger_web.chain
    prepaid = chain.ledger.prepaid
    assert prepaid is not None
    decimals = chain.decimals
    settings = (prepaid.emergency_credit(), prepaid.advance_buffer(), prepaid.thresholds())
    credit = to_units(str(credit_of(ledger_web)), decimals)
    try:
        prepaid.set_credit_settings(settings[0], settings[1], [credit + 500, credit + 100])
        prepaid.assess(PREPAID)
        demo = ledger_web.stepped.demo
        agent = next(a for a in demo.agents if isinstance(a, PrepaidAgent))
        ledger_web.stepped.call(lambda: agent.round(0, assess=False, what=None))

        async def alarms() -> list[AlarmRow]:
            for _ in range(100):
                with ledger_web.store.session() as session:
                    rows = list(
                        session.query(AlarmRow).filter_by(
                            meter_id=PREPAID, kind="prepaid-low-credit"
                        )
                    )
                if len(rows) >= 2:
                    return rows
                await asyncio.sleep(0.05)
            return rows

        rows = ledger_web.stepped.call(alarms)
        assert len(rows) == 2 and all("below the warning level" in r.message for r in rows)
    finally:
        prepaid.set_credit_settings(*settings)
    page = ledger_web.login(*prosumer_login(PREPAID)).get(f"/meters/{PREPAID}/prepaid")
    assert page.text.count('data-kind="prepaid-low-credit"') == 2
    assert 'data-kind="prepaid-grace"' in page.text  # enrolment passes through grace
