"""A household reaches no other household's certificates, statements, prepaid credit or fund
shares, on any page or API route of the ledger and prepaid features, against a real chain
where each of those routes would otherwise act (valid forms and bodies, a held certificate,
a genuine voucher); and the operator's own routes refuse it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from live_harness import HOUSE, PREPAID, PV_BATTERY
from web_fixtures import ChainWebApp, csrf_of

from meterchain.store.accounts import AuditRow
from meterchain.web import ledger_api, ledger_pages, prepaid_api, prepaid_pages
from meterchain.web.demo import prosumer_login

ROUTERS = (ledger_pages.router, prepaid_pages.router, ledger_api.router, prepaid_api.router)


def meter_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the ledger and prepaid routers that takes a meter id."""
    found = []
    for router in ROUTERS:
        for route in router.routes:
            path = getattr(route, "path", "")
            if "{meter_id}" in path:
                found += [(method, path) for method in sorted(route.methods - {"HEAD"})]
    return found


def _victims_assets(app: ChainWebApp) -> dict[str, Any]:
    chain = app.chain
    owner = chain.owner_of(PV_BATTERY)
    book = chain.certificate_book()
    held = next(c for (c, a), wh in book.holdings.items() if a == owner and wh > 0)
    voucher = chain.issue_voucher(PREPAID, Decimal("3.00"))
    return {"certificate": held, "owner": owner, "voucher": voucher.code}


def test_a_household_reaches_no_other_households_ledger_or_prepaid_route(
    ledger_web: ChainWebApp,
) -> None:
    routes = meter_routes()
    assert len(routes) >= 20  # pages and API alike
    chain = ledger_web.chain
    assets = _victims_assets(ledger_web)
    [fund] = chain.funds
    intruder = ledger_web.login(*prosumer_login(HOUSE))
    token = csrf_of(intruder)
    fields = {
        "certificate_id": str(assets["certificate"]), "beneficiary": "me", "purpose": "theft",
        "shares": "1", "code": assets["voucher"], "amount": "1.00",
    }  # fmt: skip
    body = {**fields, "certificate_id": assets["certificate"], "shares": 1}
    with ledger_web.store.session() as session:
        audited = session.query(AuditRow).count()
    credit = chain.prepaid_status(PREPAID)["credit"]
    for victim in (PV_BATTERY, PREPAID):
        for method, path in routes:
            url = (
                path.replace("{meter_id}", victim)
                .replace("{fund}", fund.address)
                .replace("{period}", "2026-11")
            )
            if "/api/" in path:
                response = intruder.request(
                    method, url, headers={"X-CSRF-Token": token},
                    json=body if method != "GET" else None,
                )  # fmt: skip
            else:
                response = intruder.request(
                    method, url, data={"csrf_token": token, **fields} if method != "GET" else None
                )
            assert response.status_code == 404, (method, url, response.status_code)
            assert assets["owner"] not in response.text
    # nothing moved, nothing was logged
    certificates = chain.ledger.certificates
    assert certificates is not None
    assert certificates.balance_of(assets["owner"], assets["certificate"]) > 0
    assert chain.prepaid_status(PREPAID)["credit"] == credit
    with ledger_web.store.session() as session:
        assert session.query(AuditRow).count() == audited


def test_a_household_lists_only_its_own_certificates_and_shares(ledger_web: ChainWebApp) -> None:
    chain = ledger_web.chain
    household = ledger_web.login(*prosumer_login(HOUSE))
    assert household.get(f"/api/certificates?meter_id={PV_BATTERY}").status_code == 404
    mine = household.get("/api/certificates").json()
    owner = chain.owner_of(HOUSE)
    assert mine and all(r["owner"] == owner or r["at_issuance"] for r in mine)
    assert all(r["meter_id"] != HOUSE for r in mine)  # HOUSE has no PV: bought energy only
    [fund] = household.get("/api/funds").json()
    assert fund["account"] == chain.wallet_address(HOUSE)


def test_the_operators_ledger_and_prepaid_routes_refuse_a_household(
    ledger_web: ChainWebApp,
) -> None:
    household = ledger_web.login(*prosumer_login(PREPAID))
    headers = {"X-CSRF-Token": csrf_of(household)}
    assert household.get("/api/prepaid").status_code == 403
    assert household.get("/certificates/export?period=2026-11").status_code == 403
    assert household.get("/api/certificates/export?period=2026-11").status_code == 403
    issue = household.post(
        "/api/prepaid/vouchers", headers=headers, json={"meter_id": PREPAID, "amount": "50.00"}
    )
    assert issue.status_code == 403  # a household cannot print itself money
    form = household.post(
        "/prepaid/vouchers", data={"csrf_token": headers["X-CSRF-Token"], "meter_id": PREPAID,
                                   "amount": "50"},
    )  # fmt: skip
    assert form.status_code == 403
    # the overviews send a household to its own pages
    assert household.get("/certificates").headers["location"] == f"/meters/{PREPAID}/certificates"
    assert household.get("/prepaid").headers["location"] == f"/meters/{PREPAID}/prepaid"
