"""The web interface in a real browser (Debian's chromium through Playwright) against the live
demo community: a prosumer steers their board, another cannot see it, the operator revokes a
meter, a stopped meter raises and clears an alarm, the language switches; screenshots of the
main pages are taken (into docs/screenshots/ with `make screenshots`) and axe-core finds no
serious accessibility problem."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from live_harness import HOUSE, PREPAID, PV_BATTERY, PV_ONLY, LiveWeb, orders_of

from meterchain.store.accounts import AuditRow
from meterchain.web.demo import OPERATOR, prosumer_login

ROOT = Path(__file__).resolve().parents[2]
# `make screenshots` sets MCHAIN_SCREENSHOTS=docs/screenshots to refresh the docs' pictures;
# otherwise they go to a temporary directory and the checkout stays as it was.
SCREENSHOTS = Path(
    os.environ.get("MCHAIN_SCREENSHOTS") or tempfile.mkdtemp(prefix="meterchain-screenshots-")
)
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
VIEWPORT = {"width": 1280, "height": 900}


def wait_until(check: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def page_for(browser: Any, live: LiveWeb) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []

    def open_page(user: tuple[str, str] | None = None, **options: Any) -> Any:
        context = browser.new_context(viewport=VIEWPORT, locale="pt-BR", **options)
        contexts.append(context)
        page = context.new_page()
        if user is not None:
            page.goto(f"{live.url}/login")
            page.fill("#username", user[0])
            page.fill("#password", user[1])
            with page.expect_navigation():
                page.click("form[action='/login'] button[type=submit]")
            assert "/login" not in page.url, page.content()[:2000]
        return page

    yield open_page
    for context in contexts:
        context.close()


def api(page: Any, path: str) -> tuple[int, Any]:
    """GET an API path with the page's session (as the page's own scripts do)."""
    result = page.evaluate(
        """async (path) => { const r = await fetch(path); return [r.status, await r.text()]; }""",
        path,
    )
    status, text = result
    return status, json.loads(text) if text.startswith(("{", "[")) else text


def chart_points(page: Any) -> int:
    """The points the meter chart drew, once it drew some (selectors need no eval under CSP)."""

    def points() -> int:
        return int(page.locator("#chart-meter").get_attribute("data-points") or 0)

    return int(wait_until(lambda: points() > 2 and points(), 15, "the meter chart"))


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def test_a_prosumer_reads_the_chart_and_the_board_obeys_the_new_limits(
    live: LiveWeb, page_for: Callable[..., Any]
) -> None:
    page = page_for(prosumer_login(PV_BATTERY))
    assert page.url.endswith(f"/meters/{PV_BATTERY}")
    chart_points(page)
    page.click("button.span[data-span='week']")
    page.wait_for_selector("#chart-meter[data-span='week']")
    assert page.locator("#chart-meter canvas").count() == 1

    page.fill("#min_sell_price", "0,40")
    page.fill("#battery_reserve_percent", "90")
    page.click("#config-submit")
    page.wait_for_selector(
        ".version[data-version='1'][data-status='accepted'], "
        ".version[data-version='1'][data-status='applied']",
        timeout=20_000,
    )
    status, state = api(page, f"/api/meters/{PV_BATTERY}/config")
    assert status == 200
    version = state["versions"][0]
    assert version["config"]["min_sell_price"] == 0.4
    assert version["config"]["battery_reserve_fraction"] == 0.9
    effective = int(datetime.fromisoformat(version["effective_from"]).timestamp())

    def planned_with_it() -> dict[int, dict[str, Any]]:
        orders = orders_of(live, PV_BATTERY)
        after = {k: v for k, v in orders.items() if k >= effective}
        return after if len(after) >= 3 else {}

    after = wait_until(planned_with_it, 30, "three intervals planned with the new settings")
    before = {k: v for k, v in orders_of(live, PV_BATTERY).items() if k < effective}
    assert any(o["side"] == "sell" and o["limit_price_units"] < 40
               for v in before.values() for o in v["orders"])  # fmt: skip
    sells = [o for v in after.values() for o in v["orders"] if o["side"] == "sell"]
    assert all(o["limit_price_units"] >= 40 for o in sells), sells
    # a reserve above the state of charge: the battery never discharges from then on
    assert all(v["battery_power_w"] >= -1e-6 for v in after.values()), after
    assert live.demo.prosumer(PV_BATTERY).planner.handler.version == 1  # type: ignore[attr-defined]
    page.wait_for_selector(".version[data-version='1'][data-status='applied']", timeout=20_000)
    page.goto(f"{live.url}/meters/{PV_BATTERY}")
    chart_points(page)
    shot(page, "prosumer-meter")


def test_a_prosumer_cannot_reach_another_households_page_or_api(
    page_for: Callable[..., Any], live: LiveWeb
) -> None:
    page = page_for(prosumer_login(HOUSE))
    response = page.goto(f"{live.url}/meters/{PV_BATTERY}")
    assert response is not None and response.status == 404
    for tail in ("", "/readings?span=month", "/config", "/trades", "/alarms"):
        path = f"/api/meters/{PV_BATTERY}{tail}"
        status, _ = api(page, path)
        assert status == 404, path
    status, _ = api(page, "/api/community")
    assert status == 403
    status, mine = api(page, "/api/meters")
    assert [m["meter_id"] for m in mine] == [HOUSE]


def _alarm_row(page: Any, kind: str, meter_id: str, state: str) -> Any:
    selector = f"tr.alarm.{state}[data-kind='{kind}'][data-meter='{meter_id}']"
    return page.wait_for_selector(selector, timeout=30_000)


def test_the_operator_revokes_a_meter_and_its_next_reading_is_refused_with_an_alarm(
    page_for: Callable[..., Any], live: LiveWeb
) -> None:
    page = page_for(OPERATOR)
    assert page.url.endswith("/community")
    page.goto(f"{live.url}/meters/{PV_ONLY}")
    with page.expect_navigation():
        page.click("#revoke")
    assert page.locator("h1 .badge.bad").count() == 1
    assert live.read(lambda: live.demo.market_client.registry.signer_of(PV_ONLY))[1] is True
    page.goto(f"{live.url}/alarms")
    row = _alarm_row(page, "reading-refused", PV_ONLY, "ended")  # instant: refused, kept
    assert PV_ONLY in row.inner_text()
    _, audit = api(page, "/api/audit")
    assert any(e["action"] == "meter.revoke" and e["target"] == f"meter:{PV_ONLY}" for e in audit)
    shot(page, "operator-alarms")


def test_a_stopped_meter_raises_an_alarm_that_clears_when_it_is_back(
    page_for: Callable[..., Any], live: LiveWeb
) -> None:
    page = page_for(OPERATOR)
    live.call(lambda: live.demo.stop_meter(HOUSE))
    try:
        page.goto(f"{live.url}/alarms")
        _alarm_row(page, "meter-not-answering", HOUSE, "active")  # live: htmx refreshes rows
    finally:
        live.call(lambda: live.demo.restart_meter(HOUSE))
    _alarm_row(page, "meter-not-answering", HOUSE, "ended")
    page.goto(f"{live.url}/meters/{HOUSE}")
    page.wait_for_selector("#board-status")


def test_the_language_switches_and_stays_with_the_user(
    page_for: Callable[..., Any], live: LiveWeb
) -> None:
    page = page_for()
    page.goto(f"{live.url}/login")
    assert page.locator("html").get_attribute("lang") == "pt-BR"
    assert page.locator("h1").inner_text() == "Entrar"
    with page.expect_navigation():
        page.click("#switch-language")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text() == "Log in"
    user = page_for(prosumer_login(HOUSE))
    assert user.locator(f"nav a[href='/meters/{HOUSE}']").inner_text() == "Meu medidor"
    with user.expect_navigation():
        user.click("#switch-language")
    assert user.locator(f"nav a[href='/meters/{HOUSE}']").inner_text() == "My meter"
    again = page_for(prosumer_login(HOUSE))  # a new browser: the choice is the user's
    assert again.locator("html").get_attribute("lang") == "en"
    with again.expect_navigation():
        again.click("#switch-language")  # back to Portuguese for the other tests


def test_the_community_page_updates_live(page_for: Callable[..., Any], live: LiveWeb) -> None:
    page = page_for(OPERATOR)
    page.wait_for_selector("body[data-live-connected='1']")
    first = page.locator("#card-settled").inner_text()
    page.wait_for_selector("body[data-last-update]", timeout=15_000)
    wait_until(lambda: page.locator("#card-settled").inner_text() != first, 15, "a newer interval")
    assert page.locator("#chart-power canvas").count() == 1
    shot(page, "operator-community")
    page.goto(f"{live.url}/intervals")
    shot(page, "operator-intervals")
    page.goto(f"{live.url}/meters")
    shot(page, "operator-meters")


def test_the_operator_registers_and_rotates_a_meter_and_sets_tariffs_on_chain(
    page_for: Callable[..., Any], live: LiveWeb
) -> None:
    from eth_account import Account

    page = page_for(OPERATOR)
    signer, new_signer = Account.create().address, Account.create().address
    owner = live.demo.market_client.sender.account.address
    page.goto(f"{live.url}/meters")
    page.fill("#reg-meter_id", "40000099")
    page.fill("#reg-signer", signer)
    page.fill("#reg-owner", owner)
    page.select_option("#reg-protocol", "nbr14522")
    with page.expect_navigation():
        page.click("form[action='/meters'] button[type=submit]")
    assert page.locator("a[href='/meters/40000099']").count() == 1
    registry = live.demo.market_client.registry
    assert live.read(lambda: registry.signer_of("40000099")) == (signer, False)

    page.goto(f"{live.url}/meters/40000099")
    page.fill("#signer", "not an address")
    with page.expect_navigation():
        page.click("form[action$='/rotate'] button[type=submit]")
    assert "0x and 40 hex digits" in page.locator("#form-error").inner_text()
    assert page.locator("#signer[aria-invalid='true']").count() == 1
    page.fill("#signer", new_signer)
    with page.expect_navigation():
        page.click("form[action$='/rotate'] button[type=submit]")
    assert live.read(lambda: registry.signer_of("40000099")) == (new_signer, False)

    page.goto(f"{live.url}/community")
    page.fill("#retail_price", "0,99")
    page.fill("#feed_in_price", "1,20")  # above retail: refused, and says why
    with page.expect_navigation():
        page.click("form[action='/tariffs'] button[type=submit]")
    assert "above retail_price" in page.locator("#form-error").inner_text()
    page.fill("#retail_price", "0,99")
    page.fill("#feed_in_price", "0,20")
    page.fill("#feeder_export_limit_w", "20000")
    with page.expect_navigation():
        page.click("form[action='/tariffs'] button[type=submit]")
    assert live.read(lambda: live.demo.market_client.tariffs()) == (99, 20)
    market, grid = live.demo.market, live.demo.grid
    assert market is not None and grid is not None
    wait_until(lambda: live.read(lambda: market.tariffs.retail_price) == 0.99, 10, "the market")
    assert live.read(lambda: grid.feeder_export_limit_w) == 20000
    _, audit = api(page, "/api/audit")
    actions = {e["action"] for e in audit}
    assert {"meter.register", "meter.rotate", "tariffs.set"} <= actions


def audited(live: LiveWeb, action: str) -> list[dict[str, Any]]:
    """The audit log's entries of `action` (read from the server's database)."""
    store = live.running.services.store if live.running is not None else None
    assert store is not None
    with store.session() as session:
        rows = session.query(AuditRow).filter_by(action=action).order_by(AuditRow.id).all()
        return [
            {"actor": r.actor, "target": r.target, "after": json.loads(r.after or "{}")}
            for r in rows
        ]


def test_a_household_retires_a_certificate_from_its_page(
    page_for: Callable[..., Any], live: LiveWeb
) -> None:
    page = page_for(prosumer_login(PV_BATTERY))
    path = f"{live.url}/meters/{PV_BATTERY}/certificates"

    def certificates_held() -> int:
        page.goto(path)
        return page.locator("#certificate_id option").count()

    wait_until(certificates_held, 30, "a certificate of the household's PV")
    page.wait_for_selector("#chart-device-hours[data-points]")
    assert page.locator("#chart-device-hours canvas").count() == 1
    chosen = page.locator("#certificate_id option").first.get_attribute("value")
    assert chosen is not None
    certificate = int(chosen)
    page.select_option("#certificate_id", chosen)
    page.fill("#beneficiary", "Escola Municipal Fortaleza")
    page.fill("#purpose", "24/7 supply of the school")
    with page.expect_navigation():
        page.click("#retire-submit")
    page.wait_for_selector("#form-done")
    row = page.locator(f"tr.retired[data-certificate='{certificate}']")
    assert "Escola Municipal Fortaleza" in row.first.inner_text()
    chain = live.demo.chain
    owner = live.read(lambda: chain.owner_of(PV_BATTERY))
    certificates = chain.ledger.certificates
    assert certificates is not None
    assert live.read(lambda: certificates.balance_of(owner, certificate)) == 0
    [entry] = [e for e in audited(live, "certificate.retire") if e["target"].endswith(chosen)]
    assert entry["actor"] == prosumer_login(PV_BATTERY)[0]
    shot(page, "prosumer-certificates")


def test_the_operator_issues_a_voucher_and_the_household_tops_up_with_it(
    page_for: Callable[..., Any], live: LiveWeb
) -> None:
    operator = page_for(OPERATOR)
    operator.goto(f"{live.url}/prepaid")
    assert operator.locator(f"tr[data-meter='{PREPAID}']").count() == 1
    operator.select_option("#voucher-meter", PREPAID)
    operator.fill("#voucher-amount", "25,00")
    with operator.expect_navigation():
        operator.click("#voucher-issue")
    code = operator.locator("#voucher-code").inner_text().strip()
    assert code.count("-") >= 4
    shot(operator, "operator-prepaid")

    household = page_for(prosumer_login(PREPAID))
    household.goto(f"{live.url}/meters/{PREPAID}/prepaid")
    before = float(household.locator("#prepaid-credit").get_attribute("data-credit") or 0)
    household.fill("#voucher-code", code)
    with household.expect_navigation():
        household.click("#voucher-submit")
    household.wait_for_selector("#form-done")
    after = float(household.locator("#prepaid-credit").get_attribute("data-credit") or 0)
    assert after > before + 24  # the intervals meanwhile use a few cents
    assert household.locator("#prepaid-state").get_attribute("data-state") == "supplied"
    [entry] = audited(live, "prepaid.voucher")
    assert entry["actor"] == prosumer_login(PREPAID)[0] and entry["after"]["amount"] == 25.0
    with household.expect_navigation():  # the same code again: refused, and it says why
        household.fill("#voucher-code", code)
        household.click("#voucher-submit")
    assert "VoucherAlreadyUsed" in household.locator("#form-error").inner_text()
    shot(household, "prosumer-prepaid")


def test_the_ledger_pages_show_the_community(page_for: Callable[..., Any], live: LiveWeb) -> None:
    operator = page_for(OPERATOR)
    operator.goto(f"{live.url}/certificates")
    operator.wait_for_selector("#chart-devices[data-points]")
    assert operator.locator("#chart-devices canvas").count() == 1
    shot(operator, "operator-certificates")
    operator.goto(f"{live.url}/fund")
    assert operator.locator("section.fund").count() == 1
    shot(operator, "operator-fund")
    household = page_for(prosumer_login(HOUSE))
    household.goto(f"{live.url}/meters/{HOUSE}/statements")
    household.wait_for_selector("#statement-lines")
    shot(household, "prosumer-statement")
    household.goto(f"{live.url}/meters/{HOUSE}/certificates")
    household.wait_for_selector("#chart-matching[data-points]")


MAIN_PAGES = [
    (None, "/login"),
    (OPERATOR, "/community"),
    (OPERATOR, "/meters"),
    (OPERATOR, f"/meters/{PV_BATTERY}"),
    (OPERATOR, "/intervals"),
    (OPERATOR, "/alarms"),
    (OPERATOR, "/audit"),
    (prosumer_login(HOUSE), f"/meters/{HOUSE}"),
    (prosumer_login(HOUSE), "/account"),
    (OPERATOR, "/certificates"),
    (OPERATOR, "/fund"),
    (OPERATOR, "/prepaid"),
    (OPERATOR, f"/meters/{PV_BATTERY}/statements"),
    (prosumer_login(HOUSE), f"/meters/{HOUSE}/certificates"),
    (prosumer_login(HOUSE), f"/meters/{HOUSE}/statements"),
    (prosumer_login(HOUSE), "/fund"),
    (prosumer_login(PREPAID), f"/meters/{PREPAID}/prepaid"),
]


def test_axe_finds_no_serious_or_critical_accessibility_violation(
    page_for: Callable[..., Any], live: LiveWeb
) -> None:
    axe = AXE.read_text()
    problems = []
    pages: dict[object, Any] = {}
    for user, path in MAIN_PAGES:
        if user not in pages:
            pages[user] = page_for(user, bypass_csp=True)  # axe-core is injected as a script
        page = pages[user]
        page.goto(f"{live.url}{path}")
        page.wait_for_load_state("load")
        page.evaluate(axe)
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        for violation in result["violations"]:
            if violation["impact"] in ("serious", "critical"):
                targets = [n["target"] for n in violation["nodes"]][:3]
                problems.append(f"{path}: {violation['id']} ({violation['impact']}) {targets}")
    assert not problems, "\n".join(problems)
