"""Logins, sessions, CSRF, the rate limit, API tokens and who may reach what."""

from __future__ import annotations

import re

from web_fixtures import ALICE, BOB, OPERATOR, WebApp, csrf_of

from meterchain.store.accounts import AuditRow, UserRow
from meterchain.web import (
    api,
    ledger_api,
    ledger_pages,
    live,
    pages,
    prepaid_api,
    prepaid_pages,
)

ROUTERS = (
    api.router, pages.router, live.router, ledger_api.router, ledger_pages.router,
    prepaid_api.router, prepaid_pages.router,
)  # fmt: skip


def test_passwords_are_stored_as_argon2_hashes(web: WebApp) -> None:
    with web.store.session() as session:
        row = session.query(UserRow).filter_by(username="alice").one()
    assert row.password_hash.startswith("$argon2id$")
    assert ALICE[1] not in row.password_hash


def test_the_session_cookie_is_httponly_samesite_and_expires(web: WebApp) -> None:
    client = web.client
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/login", data={"username": "alice", "password": ALICE[1], "csrf_token": token[1]}
    )
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "mc_session" in v
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert re.search(r"Max-Age=28800", cookie)


def test_a_wrong_password_is_refused_and_logins_are_rate_limited(web: WebApp) -> None:
    client = web.client
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    form = {"username": "alice", "password": "wrong", "csrf_token": token[1]}
    codes = [client.post("/login", data=form).status_code for _ in range(6)]
    assert codes[:5] == [401] * 5
    assert codes[5] == 429
    # even the right password waits out the window now
    right = {**form, "password": ALICE[1]}
    assert client.post("/login", data=right).status_code == 429


def test_a_login_without_the_form_token_is_refused(web: WebApp) -> None:
    response = web.client.post("/login", data={"username": "alice", "password": ALICE[1]})
    assert response.status_code == 403


def test_a_form_without_the_csrf_token_is_refused(web: WebApp) -> None:
    alice = web.login(ALICE[0], ALICE[1])
    response = alice.post("/meters/40000001/config", data={"strategy": "fixed"})
    assert response.status_code == 403
    response = alice.put("/api/meters/40000001/config", json={"strategy": "fixed"})
    assert response.status_code == 403
    with web.store.session() as session:
        assert session.query(AuditRow).count() == 0


def test_a_config_change_is_validated_stored_and_audited(web: WebApp) -> None:
    alice = web.login(ALICE[0], ALICE[1])
    token = csrf_of(alice)
    bad = alice.post(
        "/meters/40000001/config",
        data={"csrf_token": token, "strategy": "optimiser", "min_sell_price": "-3"},
    )
    assert bad.status_code == 303
    assert "field=min_sell_price" in bad.headers["location"]
    page = alice.get(bad.headers["location"].split("#")[0])
    assert 'id="min_sell_price"' in page.text and 'aria-invalid="true"' in page.text
    assert "greater than or equal to 0" in page.text
    good = alice.post(
        "/meters/40000001/config",
        data={"csrf_token": token, "strategy": "optimiser", "min_sell_price": "0,40",
              "battery_reserve_percent": "30", "relay": "on"},
    )  # fmt: skip
    assert good.status_code == 303
    state = alice.get("/api/meters/40000001/config").json()
    newest = state["versions"][0]
    assert newest["config"]["min_sell_price"] == 0.4
    assert newest["config"]["battery_reserve_fraction"] == 0.3
    assert newest["status"] == "not-sent"  # this app has no bus, and says so
    with web.store.session() as session:
        entry = session.query(AuditRow).filter_by(action="config.change").one()
    assert entry.actor == "alice" and entry.target == "meter:40000001"
    assert '"min_sell_price": 0.4' in (entry.after or "")


def test_api_tokens_work_like_their_user_and_can_be_revoked(web: WebApp) -> None:
    alice = web.login(ALICE[0], ALICE[1])
    page = alice.post(
        "/account/tokens", data={"csrf_token": csrf_of(alice), "name": "home-assistant"}
    )
    token = re.search(r'id="new-token">([^<]+)<', page.text)
    assert token is not None
    bearer = {"Authorization": f"Bearer {token[1]}"}
    assert web.client.get("/api/me", headers=bearer).json()["meter_id"] == "40000001"
    assert web.client.get("/api/meters/40000002", headers=bearer).status_code == 404
    with web.store.session() as session:
        from meterchain.store.accounts import ApiTokenRow

        token_id = session.query(ApiTokenRow).one().id
    alice.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_of(alice)})
    assert web.client.get("/api/me", headers=bearer).status_code == 401


def test_anonymous_requests_read_nothing_and_write_nothing(web: WebApp) -> None:
    client = web.client
    assert client.get("/api/community").status_code == 401
    assert client.get("/api/meters/40000001").status_code == 401
    assert client.put("/api/meters/40000001/config", json={}).status_code == 401
    assert client.post("/api/meters/40000001/revoke").status_code == 401
    assert client.get("/meters/40000001").headers["location"] == "/login"


def test_prosumers_cannot_use_operator_powers(web: WebApp) -> None:
    alice = web.login(ALICE[0], ALICE[1])
    headers = {"X-CSRF-Token": csrf_of(alice)}
    assert alice.get("/api/community").status_code == 403
    assert alice.get("/api/audit").status_code == 403
    assert alice.post("/api/meters/40000001/revoke", headers=headers).status_code == 403
    assert (
        alice.put(
            "/api/tariffs", headers=headers, json={"retail_price": 9, "feed_in_price": 0}
        ).status_code
        == 403
    )
    assert alice.get("/community").status_code == 403


def _routes_with_meter_id(web: WebApp) -> list[tuple[str, str]]:
    routes = []
    for route in [r for router in ROUTERS for r in router.routes]:
        path = getattr(route, "path", "")
        if "{meter_id}" in path:
            routes += [(method, path) for method in sorted(route.methods - {"HEAD"})]
    return routes


def test_a_prosumer_reaches_no_other_meter_on_any_route(web: WebApp) -> None:
    routes = _routes_with_meter_id(web)
    assert len(routes) >= 34  # pages and API alike, the ledger's and prepaid's too
    for user, other in ((ALICE, BOB[2]), (BOB, ALICE[2])):
        client = web.login(user[0], user[1])
        token = csrf_of(client)
        for method, path in routes:
            url = path.replace("{meter_id}", other)
            response = client.request(
                method, url, headers={"X-CSRF-Token": token},
                json={} if "/api/" in path and method != "GET" else None,
                data={"csrf_token": token} if "/api/" not in path and method != "GET" else None,
            )  # fmt: skip
            assert response.status_code in (403, 404, 422), (
                user[0],
                method,
                url,
                response.status_code,
            )
            assert f"secret alarm of {other}" not in response.text
        own = client.get(f"/api/meters/{user[2]}/alarms").json()
        assert [a["meter_id"] for a in own] == [user[2]]
        everything = client.get("/api/alarms").json()
        assert {a["meter_id"] for a in everything} == {user[2]}
        assert [m["meter_id"] for m in client.get("/api/meters").json()] == [user[2]]


def test_the_operator_reaches_every_meter(web: WebApp) -> None:
    operator = web.login(OPERATOR[0], OPERATOR[1])
    for meter_id in (ALICE[2], BOB[2]):
        assert operator.get(f"/api/meters/{meter_id}").status_code == 200
        assert operator.get(f"/meters/{meter_id}").status_code == 200
    assert len(operator.get("/api/alarms").json()) == 2


def test_chain_actions_without_a_chain_say_so(web: WebApp) -> None:
    operator = web.login(OPERATOR[0], OPERATOR[1])
    headers = {"X-CSRF-Token": csrf_of(operator)}
    response = operator.post("/api/meters/40000001/revoke", headers=headers)
    assert response.status_code == 400
    assert "no chain connection" in response.json()["detail"]


def test_an_alarm_is_acknowledged_once_by_whoever_may_see_it(web: WebApp) -> None:
    with web.store.session() as session:
        from meterchain.store.community import AlarmRow

        ids = {row.meter_id: row.id for row in session.query(AlarmRow)}
    alice = web.login(ALICE[0], ALICE[1])
    headers = {"X-CSRF-Token": csrf_of(alice)}
    assert alice.post(f"/api/alarms/{ids[BOB[2]]}/ack", headers=headers).status_code == 404
    done = alice.post(f"/api/alarms/{ids[ALICE[2]]}/ack", headers=headers)
    assert done.status_code == 200 and done.json()["acknowledged_by"] == "alice"
    operator = web.login(OPERATOR[0], OPERATOR[1])
    again = operator.post(
        f"/api/alarms/{ids[ALICE[2]]}/ack", headers={"X-CSRF-Token": csrf_of(operator)}
    )
    assert again.json()["acknowledged_by"] == "alice"  # the first acknowledgement stands
    [mine] = alice.get("/api/alarms").json()
    assert mine["acknowledged_at"] is not None
