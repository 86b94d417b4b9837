"""schemathesis fuzzes the OpenAPI schema, anonymous and with an operator's token: no
request makes the server fail (no 5xx), and no anonymous request changes anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from web_fixtures import OPERATOR, WebApp, make_web_app

from meterchain.store.accounts import AuditRow, UserRow
from meterchain.store.community import BoardConfigRow
from meterchain.web.security import issue_api_token, user_by_id

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebApp, str]]:
    app = make_web_app(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'web.db'}")
    with app.store.session() as session:
        row = session.query(UserRow).filter_by(username=OPERATOR[0]).one()
        user = user_by_id(session, row.id)
        assert user is not None
        token, _ = issue_api_token(session, user, "fuzzer")
    yield app, token
    app.store.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[WebApp, str]) -> Any:
    app, _ = fuzzed
    # the live stream never ends by itself: it has its own test
    return schemathesis.openapi.from_asgi("/openapi.json", app.app).exclude(path="/api/live")


# schemathesis's pytest plugin does not run under pytest 9 yet; its strategies are driven by
# hypothesis directly, one operation after another.
FUZZ = settings(
    max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def _writes(app: WebApp) -> tuple[int, int]:
    with app.store.session() as session:
        return session.query(AuditRow).count(), session.query(BoardConfigRow).count()


def _operations(schema: Any) -> list[Any]:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    return operations


def test_anonymous_requests_never_fail_the_server_and_never_write(
    api_schema: Any, fuzzed: tuple[WebApp, str]
) -> None:
    app, _ = fuzzed
    before = _writes(app)
    for operation in _operations(api_schema):

        @given(case=operation.as_strategy())
        @FUZZ
        def anonymous(case: Any) -> None:
            response = case.call()
            assert response.status_code < 500, case.as_curl_command()
            if case.method.upper() in WRITES:
                assert response.status_code in (401, 403, 404, 405, 422), case.as_curl_command()

        anonymous()
    assert _writes(app) == before


def test_authenticated_requests_never_fail_the_server(
    api_schema: Any, fuzzed: tuple[WebApp, str]
) -> None:
    _, token = fuzzed
    for operation in _operations(api_schema):

        @given(case=operation.as_strategy())
        @FUZZ
        def authenticated(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            assert response.status_code < 500, case.as_curl_command()

        authenticated()


def test_the_live_stream_needs_a_login(fuzzed: tuple[WebApp, str]) -> None:
    app, _ = fuzzed
    assert app.client.get("/api/live").status_code == 401


def test_the_openapi_document_is_served_with_its_docs_page(fuzzed: tuple[WebApp, str]) -> None:
    app, _ = fuzzed
    document = app.client.get("/openapi.json").json()
    assert "/api/meters/{meter_id}/config" in document["paths"]
    assert {"HTTPBearer", "APIKeyCookie"} <= set(document["components"]["securitySchemes"])
    page = app.client.get("/docs")
    assert page.status_code == 200
    assert "/static/vendor/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()


def test_the_ledger_and_prepaid_routes_never_fail_the_server_on_a_real_chain(
    ledger_web: Any,
) -> None:
    """The same fuzzing, with the operator's token, on the routes that reach the chain (the
    stepped demo's: certificates, fund, statements, prepaid)."""
    from web_fixtures import ChainWebApp

    app: ChainWebApp = ledger_web
    with app.store.session() as session:
        row = session.query(UserRow).filter_by(role="operator").first()
        assert row is not None
        user = user_by_id(session, row.id)
        assert user is not None
        token, _ = issue_api_token(session, user, "chain fuzzer")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app.app)
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if {"ledger", "prepaid"} & set(result.ok().tags or ())
    ]
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def on_chain(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            assert response.status_code < 500, case.as_curl_command()

        on_chain()
