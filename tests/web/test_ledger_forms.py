"""The ledger and prepaid forms: without the session's CSRF token nothing is written (on a
real chain, where the form would otherwise act); and on a server without those contracts
every page says the feature is not deployed and every API route says so."""

from __future__ import annotations

from decimal import Decimal

from live_harness import HOUSE, PREPAID, PV_BATTERY
from web_fixtures import ALICE, OPERATOR, ChainWebApp, WebApp, csrf_of

from meterchain.store.accounts import AuditRow
from meterchain.web.demo import OPERATOR as DEMO_OPERATOR
from meterchain.web.demo import prosumer_login


def _audited(app: WebApp) -> int:
    with app.store.session() as session:
        return session.query(AuditRow).count()


def test_the_new_forms_write_nothing_without_the_csrf_token(ledger_web: ChainWebApp) -> None:
    chain = ledger_web.chain
    owner = chain.owner_of(PV_BATTERY)
    book = chain.certificate_book()
    certificate = next(c for (c, a), wh in book.holdings.items() if a == owner and wh > 0)
    code = chain.issue_voucher(PREPAID, Decimal("2.00")).code
    [fund] = chain.funds
    credit = chain.prepaid_status(PREPAID)["credit"]
    before = _audited(ledger_web)
    forms = [
        (prosumer_login(PV_BATTERY), f"/meters/{PV_BATTERY}/certificates/retire",
         {"certificate_id": str(certificate), "beneficiary": "b", "purpose": "p"}),
        (prosumer_login(PREPAID), f"/meters/{PREPAID}/prepaid/voucher", {"code": code}),
        (prosumer_login(PREPAID), f"/meters/{PREPAID}/prepaid/top-up", {"amount": "1.00"}),
        (prosumer_login(HOUSE), f"/meters/{HOUSE}/fund/{fund.address}/buy", {"shares": "1"}),
        (prosumer_login(HOUSE), f"/meters/{HOUSE}/fund/{fund.address}/claim", {}),
        (prosumer_login(HOUSE), f"/fund/{fund.address}/collect", {}),
        (prosumer_login(HOUSE), f"/meters/{HOUSE}/statements/2026-11/pay", {}),
        (DEMO_OPERATOR, f"/meters/{HOUSE}/statements/2026-11/record", {}),
        (DEMO_OPERATOR, "/prepaid/vouchers", {"meter_id": PREPAID, "amount": "9"}),
    ]  # fmt: skip
    for user, path, form in forms:
        client = ledger_web.login(*user)
        assert client.post(path, data=form).status_code == 403, path
        wrong = client.post(path, data={**form, "csrf_token": "forged"})
        assert wrong.status_code == 403, path
    apis = [
        (prosumer_login(PV_BATTERY), f"/api/meters/{PV_BATTERY}/certificates/retire",
         {"certificate_id": certificate, "beneficiary": "b", "purpose": "p"}),
        (prosumer_login(PREPAID), f"/api/meters/{PREPAID}/prepaid/voucher", {"code": code}),
        (prosumer_login(PREPAID), f"/api/meters/{PREPAID}/prepaid/top-up", {"amount": "1.00"}),
        (DEMO_OPERATOR, "/api/prepaid/vouchers", {"meter_id": PREPAID, "amount": "9.00"}),
    ]  # fmt: skip
    for user, path, body in apis:  # a session cookie without the X-CSRF-Token header
        assert ledger_web.login(*user).post(path, json=body).status_code == 403, path
    assert _audited(ledger_web) == before
    certificates = chain.ledger.certificates
    assert certificates is not None and certificates.balance_of(owner, certificate) > 0
    assert chain.prepaid_status(PREPAID)["credit"] == credit


def test_without_the_contracts_every_page_says_not_deployed(web: WebApp) -> None:
    alice = web.login(ALICE[0], ALICE[1])
    meter = ALICE[2]
    for path in (f"/meters/{meter}/certificates", f"/meters/{meter}/statements",
                 f"/meters/{meter}/prepaid", "/fund"):  # fmt: skip
        page = alice.get(path)
        assert page.status_code == 200 and 'id="not-deployed"' in page.text, path
    operator = web.login(OPERATOR[0], OPERATOR[1])
    for path in ("/certificates", "/prepaid", "/fund", f"/meters/{meter}/certificates"):
        page = operator.get(path)
        assert page.status_code == 200 and 'id="not-deployed"' in page.text, path
    assert operator.get("/certificates/export?period=2026-11").status_code == 404
    api_paths = (
        f"/api/meters/{meter}/certificates",
        f"/api/meters/{meter}/prepaid",
        "/api/certificates",
        f"/api/meters/{meter}/statements/2026-11",
        "/api/prepaid",
    )
    for path in api_paths:
        response = operator.get(path)
        assert response.status_code == 404, path
        assert "deployed" in response.json()["detail"] or "no chain" in response.json()["detail"]
    assert operator.get("/api/funds").json() == []
    token = csrf_of(alice)
    refused = alice.post(f"/meters/{meter}/prepaid/voucher", data={"csrf_token": token,
                                                                  "code": "AAAAA"})  # fmt: skip
    assert "no%20chain%20connection" in refused.headers["location"]
    api = alice.post(f"/api/meters/{meter}/prepaid/top-up", headers={"X-CSRF-Token": token},
                     json={"amount": "1.00"})  # fmt: skip
    assert api.status_code == 404 and "no chain connection" in api.json()["detail"]
