"""The ledger's pages and API (issue 11) against a real chain: a household's certificates,
their hourly chart and 24/7 score, a retirement from the page (once, audited), the operator's
overview and exports, the community fund (buy, collect, claim), and statements recorded and
printed in both languages. Who may reach what is in test_ledger_isolation.py."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from live_harness import HOUSE, PLANT, PV_BATTERY, PV_ONLY
from web_fixtures import ChainWebApp, audit_entries, csrf_of

from meterchain.ledger.exports import IREC_COLUMNS
from meterchain.ledger.period import Month
from meterchain.web.demo import OPERATOR, prosumer_login

NOVEMBER = "2026-11"


def held_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["retired_for"] is None]


def test_a_household_sees_its_certificates_hourly_issuance_and_24_7_score(
    ledger_web: ChainWebApp,
) -> None:
    chain = ledger_web.chain
    seller = ledger_web.login(*prosumer_login(PV_BATTERY))
    page = seller.get(f"/meters/{PV_BATTERY}/certificates")
    assert page.status_code == 200
    assert 'id="chart-device-hours"' in page.text and 'id="retire-form"' in page.text
    found = seller.get(f"/api/meters/{PV_BATTERY}/certificates").json()
    owner = chain.owner_of(PV_BATTERY)
    assert found["owner"] == owner
    held = held_rows(found["rows"])
    assert held, "the PV household holds the certificates of its morning's export"
    certificates = chain.ledger.certificates
    assert certificates is not None
    for row in held:  # what the page lists is what the chain says the owner holds
        assert row["owner"] == owner and row["meter_id"] == PV_BATTERY
        assert certificates.balance_of(owner, row["id"]) == row["wh"]
    book = chain.certificate_book()
    issued = sum(book.issued_for_meter(PV_BATTERY).values())
    assert issued > 0 and sum(h["wh"] for h in found["device_hours"]) == issued

    buyer = ledger_web.login(*prosumer_login(HOUSE))
    bought = buyer.get(f"/api/meters/{HOUSE}/certificates").json()
    assert bought["rows"] and all(r["at_issuance"] for r in bought["rows"])
    matching = bought["matching"]
    assert 0 < matching["matched_wh"] <= matching["consumption_wh"]
    assert matching["matched_wh"] == sum(h["matched_wh"] for h in matching["hours"])
    for hour in matching["hours"]:  # never more than either side, hour by hour
        assert hour["matched_wh"] == min(hour["consumption_wh"], hour["certificates_wh"])
    assert matching["hourly_matched_fraction"] == round(
        matching["matched_wh"] / matching["consumption_wh"], 4
    )
    page = buyer.get(f"/meters/{HOUSE}/certificates")
    assert 'id="chart-matching"' in page.text and 'id="matched-fraction"' in page.text


def test_a_household_retires_a_certificate_once_from_its_page_and_it_is_audited(
    ledger_web: ChainWebApp,
) -> None:
    chain = ledger_web.chain
    certificates = chain.ledger.certificates
    assert certificates is not None
    client = ledger_web.login(*prosumer_login(PV_BATTERY))
    token = csrf_of(client)
    held = held_rows(client.get(f"/api/meters/{PV_BATTERY}/certificates").json()["rows"])
    target = held[-1]
    owner = chain.owner_of(PV_BATTERY)
    form = {
        "csrf_token": token,
        "certificate_id": str(target["id"]),
        "beneficiary": "Escola Municipal Fortaleza",
        "purpose": "24/7 supply of the school",
        "wh": "",
    }
    done = client.post(f"/meters/{PV_BATTERY}/certificates/retire", data=form)
    assert done.status_code == 303 and "done=retired" in done.headers["location"]
    assert certificates.balance_of(owner, target["id"]) == 0
    rows = client.get(f"/api/meters/{PV_BATTERY}/certificates").json()["rows"]
    [retired] = [r for r in rows if r["id"] == target["id"] and r["retired_for"] is not None]
    assert retired["retired_for"] == "Escola Municipal Fortaleza"
    assert retired["purpose"] == "24/7 supply of the school"
    assert retired["wh"] == target["wh"] and not retired["at_issuance"]
    assert retired["period_start"] == target["interval_start"]  # default: its own interval
    [entry] = [
        e
        for e in audit_entries(ledger_web, "certificate.retire")
        if e.target == f"certificate:{target['id']}"
    ]
    assert entry.actor == prosumer_login(PV_BATTERY)[0]
    assert json.loads(entry.before or "{}") == {"held_wh": target["wh"]}
    after = json.loads(entry.after or "{}")
    assert after["beneficiary"] == "Escola Municipal Fortaleza" and after["tx"].startswith("0x")
    page = client.get(f"/meters/{PV_BATTERY}/certificates?done=retired")
    assert 'id="form-done"' in page.text

    again = client.post(f"/meters/{PV_BATTERY}/certificates/retire", data=form)
    assert again.status_code == 303 and "error=" in again.headers["location"]
    shown = client.get(again.headers["location"].split("#")[0])
    assert f"holds 0 Wh of certificate {target['id']}" in shown.text
    targets = [e.target for e in audit_entries(ledger_web, "certificate.retire")]
    assert targets.count(f"certificate:{target['id']}") == 1  # a refusal changes nothing


def test_a_retirement_names_what_is_wrong_with_its_input(ledger_web: ChainWebApp) -> None:
    client = ledger_web.login(*prosumer_login(PV_ONLY))
    headers = {"X-CSRF-Token": csrf_of(client)}
    held = held_rows(client.get(f"/api/meters/{PV_ONLY}/certificates").json()["rows"])
    certificate = held[0]["id"]
    cases = [
        ({"beneficiary": " ", "purpose": "x"}, "beneficiary"),
        ({"beneficiary": "b", "purpose": "p", "period_start": "yesterday"}, "period_start"),
        ({"beneficiary": "b", "purpose": "p", "period_start": "2026-11-24T12:00:00Z",
          "period_end": "2026-11-24T11:00:00Z"}, "period_end"),
        ({"beneficiary": "b", "purpose": "p", "wh": held[0]["wh"] + 1}, None),
    ]  # fmt: skip
    for body, field in cases:
        response = client.post(
            f"/api/meters/{PV_ONLY}/certificates/retire",
            headers=headers,
            json={"certificate_id": certificate, **body},
        )
        assert 400 <= response.status_code < 500, (body, response.text)
        assert response.json()["field"] == field, response.json()
    assert client.get(f"/api/meters/{PV_ONLY}/certificates").json()["rows"][0]["id"] == certificate


def test_the_operator_sees_every_certificate_and_exports_a_month_for_registries(
    ledger_web: ChainWebApp,
) -> None:
    operator = ledger_web.login(*OPERATOR)
    page = operator.get("/certificates")
    assert page.status_code == 200 and 'id="chart-devices"' in page.text
    for meter_id in (PV_BATTERY, PV_ONLY, PLANT):
        assert f'href="/meters/{meter_id}/certificates"' in page.text
    rows = operator.get("/api/certificates").json()
    assert {r["meter_id"] for r in rows} == {PV_BATTERY, PV_ONLY, PLANT}
    only = operator.get(f"/api/certificates?meter_id={PV_ONLY}").json()
    assert only and {r["meter_id"] for r in only} == {PV_ONLY}
    later = operator.get("/api/certificates?from=2026-11-24T12:30:00Z").json()
    assert later and len(later) < len(rows)
    assert all(r["interval_start"] >= "2026-11-24T12:30:00" for r in later)

    book = ledger_web.chain.certificate_book()
    month = Month.parse(NOVEMBER)
    in_month = [
        c for c in book.certificates.values() if month.start <= c.interval_start < month.end
    ]
    download = operator.get(f"/certificates/export?period={NOVEMBER}&format=energytag")
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    bundles = download.json()
    assert bundles["certificates"] == len(in_month) > 0
    assert bundles["issued_wh"] == sum(c.issued_wh for c in in_month)
    # held (Active) and retired (Cancelled) bundles account for every certified Wh
    assert sum(b["bundle_quantity"] for b in bundles["bundles"]) == bundles["issued_wh"]
    irec = operator.get(f"/api/certificates/export?period={NOVEMBER}&format=irec-csv")
    assert irec.status_code == 200 and irec.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(irec.text)))
    assert tuple(csv.reader(io.StringIO(irec.text)).__next__()) == IREC_COLUMNS
    issues = [r for r in table if r["record_type"] == "issue"]
    assert len(issues) == len({c.meter_id for c in in_month})
    december = operator.get("/api/certificates/export?period=2026-12&format=energytag").json()
    assert december["certificates"] == 0
    assert operator.get("/certificates/export?period=2026-13").status_code == 422


def test_a_backer_buys_shares_and_claims_the_plants_revenue_once_it_is_collected(
    ledger_web: ChainWebApp,
) -> None:
    chain = ledger_web.chain
    [fund] = chain.funds
    wallet = chain.wallet_address(HOUSE)
    assert wallet is not None
    backer = ledger_web.login(*prosumer_login(HOUSE))
    token = csrf_of(backer)
    page = backer.get("/fund")
    assert page.status_code == 200 and f'data-fund="{fund.address}"' in page.text
    shares = fund.shares_of(wallet)
    credit_before = fund.credit.balance_of(wallet)
    bought = backer.post(
        f"/meters/{HOUSE}/fund/{fund.address}/buy", data={"csrf_token": token, "shares": "2"}
    )
    assert bought.status_code == 303 and "done=bought" in bought.headers["location"]
    assert fund.shares_of(wallet) == shares + 2
    assert fund.credit.balance_of(wallet) == credit_before - 2 * fund.price_per_share
    [entry] = audit_entries(ledger_web, "fund.buy")
    assert (
        entry.actor == prosumer_login(HOUSE)[0] and json.loads(entry.after or "{}")["shares"] == 2
    )
    refused = backer.post(
        f"/meters/{HOUSE}/fund/{fund.address}/buy", data={"csrf_token": token, "shares": "0"}
    )
    assert "field=shares" in refused.headers["location"]
    closed = backer.post(  # the two shares reached the cap: the campaign is closed
        f"/api/meters/{HOUSE}/funds/{fund.address}/buy",
        headers={"X-CSRF-Token": token},
        json={"shares": 1},
    )
    assert closed.status_code == 409 and "CapExceeded" in closed.json()["detail"]
    assert fund.shares_of(wallet) == shares + 2

    # The plant's revenue: asked from the market, paid into the fund after the delay.
    operator = ledger_web.login(*OPERATOR)
    op_token = csrf_of(operator)
    first = operator.post(f"/fund/{fund.address}/collect", data={"csrf_token": op_token})
    assert "done=collected" in first.headers["location"]
    w3 = chain.market.w3
    w3.provider.make_request("evm_increaseTime", [2 * 900 + 1])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    second = operator.post(f"/api/funds/{fund.address}/collect", headers={"X-CSRF-Token": op_token})
    assert second.status_code == 200 and second.json()["collected"] is True
    due = fund.claimable(wallet)
    assert due > 0, "the plant sold its morning's energy: its backers earned something"
    before = fund.credit.balance_of(wallet)
    claimed = backer.post(f"/meters/{HOUSE}/fund/{fund.address}/claim", data={"csrf_token": token})
    assert "done=claimed" in claimed.headers["location"]
    assert fund.credit.balance_of(wallet) == before + due and fund.claimable(wallet) == 0
    [entry] = audit_entries(ledger_web, "fund.claim")
    assert json.loads(entry.after or "{}")["claimed_units"] == due
    nothing = backer.post(f"/meters/{HOUSE}/fund/{fund.address}/claim", data={"csrf_token": token})
    assert "done=nothing_to_claim" in nothing.headers["location"]
    mine = backer.get("/api/funds").json()[0]
    assert mine["account"] == wallet and mine["account_claimed_units"] >= due


def test_the_operator_records_a_statement_and_the_household_prints_it_in_both_languages(
    ledger_web: ChainWebApp,
) -> None:
    chain = ledger_web.chain
    household = ledger_web.login(*prosumer_login(PV_ONLY))
    page = household.get(f"/meters/{PV_ONLY}/statements?period={NOVEMBER}")
    assert page.status_code == 200 and 'id="statement-lines"' in page.text
    document = household.get(f"/api/meters/{PV_ONLY}/statements/{NOVEMBER}").json()
    assert document["meter_id"] == PV_ONLY and document["period"] == NOVEMBER
    # the lines add up to what the chain moved (credits positive), the charges' opposite
    assert (
        sum(line["amount_units"] for line in document["lines"])
        == -document["totals"]["charges_units"]
    )
    assert document["statement_hash"] in page.text
    token = csrf_of(household)
    refused = household.post(
        f"/meters/{PV_ONLY}/statements/{NOVEMBER}/record", data={"csrf_token": token}
    )
    assert refused.status_code == 403  # the utility records statements

    operator = ledger_web.login(*OPERATOR)
    recorded = operator.post(
        f"/meters/{PV_ONLY}/statements/{NOVEMBER}/record", data={"csrf_token": csrf_of(operator)}
    )
    assert "done=recorded" in recorded.headers["location"]
    billing = chain.ledger.billing
    assert billing is not None
    digest, owed, paid = billing.statement(PV_ONLY, 202611)
    assert "0x" + digest.hex() == document["statement_hash"]
    assert owed == document["totals"]["owed_units"] and paid == 0
    [entry] = audit_entries(ledger_web, "statement.record")
    assert entry.target == f"statement:{PV_ONLY}:{NOVEMBER}"
    again = operator.post(
        f"/api/meters/{PV_ONLY}/statements/{NOVEMBER}/record",
        headers={"X-CSRF-Token": csrf_of(operator)},
    )
    assert again.status_code == 409 and "StatementAlreadyRecorded" in again.json()["detail"]
    shown = household.get(f"/api/meters/{PV_ONLY}/statements/{NOVEMBER}").json()
    assert shown["payment"]["recorded_hash"] == document["statement_hash"]

    pay = household.post(f"/api/meters/{PV_ONLY}/statements/{NOVEMBER}/pay",
                         headers={"X-CSRF-Token": token})  # fmt: skip
    assert pay.status_code == 400 and "nothing is owed" in pay.json()["detail"]
    portuguese = household.get(f"/meters/{PV_ONLY}/statements/{NOVEMBER}/print?lang=pt-BR")
    english = household.get(f"/meters/{PV_ONLY}/statements/{NOVEMBER}/print?lang=en")
    assert "Extrato de energia" in portuguese.text and "Energy statement" in english.text
    for printed in (portuguese, english):
        assert document["statement_hash"] in printed.text
        assert "<script" not in printed.text
    assert re.search(r"\d,\d{2}", portuguese.text)  # pt-BR decimals
    assert household.get(f"/meters/{PV_ONLY}/statements?period=2026-13").status_code == 200
