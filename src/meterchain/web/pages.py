"""The HTML pages: Jinja2 templates, forms with CSRF tokens, htmx partials for live parts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from meterchain.web import actions, queries
from meterchain.web.deps import (
    CSRF_FIELD,
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    Caller,
    PageCaller,
    Services,
    check_csrf,
    check_meter_access,
    formatter,
    optional_caller,
    require_operator,
)
from meterchain.web.i18n import LANGUAGES
from meterchain.web.security import (
    authenticate,
    clear_failed_logins,
    close_session,
    login_blocked,
    new_token,
    open_session,
    record_failed_login,
    same,
)

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def _to_datetime(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _unix_datetime(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


TEMPLATES.env.filters["todt"] = _to_datetime
TEMPLATES.env.filters["todt_unix"] = _unix_datetime
router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "mc_login_csrf"


def render(
    request: Request,
    caller: Caller | None,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    f = formatter(request, caller)
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "f": f,
            "t": f.t,
            "caller": caller,
            "user": None if caller is None else caller.user,
            "csrf": None if caller is None else caller.csrf_token,
            "languages": LANGUAGES,
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )


def _form_float(form: dict[str, str], name: str, *, percent: bool = False) -> float | None:
    raw = form.get(name, "").strip().replace(",", ".")
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise actions.ActionError(
            f"{name}: '{raw}' is not a number", field=name, status=422
        ) from None
    return value / 100 if percent else value


# ---- login ----------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, error: str | None = None) -> HTMLResponse:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
    response = render(request, None, "login.html", login_csrf=token, error=error)
    _set_login_csrf(request, response, token)
    return response


def _set_login_csrf(request: Request, response: Response, token: str) -> None:
    svc = request.app.state.services
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
        secure=svc.settings.cookies_secure, max_age=3600,
    )  # fmt: skip


@router.post("/login")
def login(
    request: Request,
    svc: Services,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=200)],
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not same(cookie, csrf_token):
        raise HTTPException(403, "the login form is stale (CSRF); reload the page and retry")
    client = request.client.host if request.client else "unknown"
    keys = [f"user:{username.lower()}", f"ip:{client}"]
    limit = svc.settings.login_limit
    with svc.store.session() as session:
        if login_blocked(session, keys, limit):
            f = formatter(request, None)
            minutes = int(limit.window.total_seconds() // 60)
            return render(
                request, None, "login.html", status_code=429, login_csrf=cookie,
                error=f.t("login.too_many", minutes=minutes),
            )  # fmt: skip
        user = authenticate(session, username, password)
        if user is None:
            record_failed_login(session, keys)
        else:
            clear_failed_logins(session, keys[:1])
            token, _ = open_session(session, user, svc.settings.session_ttl)
    if user is None:
        f = formatter(request, None)
        return render(
            request, None, "login.html", status_code=401, login_csrf=cookie,
            error=f.t("login.failed"),
        )  # fmt: skip
    home = "/community" if user.is_operator else f"/meters/{user.meter_id}"
    response = RedirectResponse(home, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="lax", secure=svc.settings.cookies_secure,
        max_age=int(svc.settings.session_ttl.total_seconds()),
    )  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, caller: PageCaller, svc: Services) -> Response:
    await check_csrf(request, caller)
    with svc.store.session() as session:
        close_session(session, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/")
def home(request: Request, svc: Services) -> Response:
    caller = optional_caller(request, svc, None, request.cookies.get(SESSION_COOKIE))
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    home_page = "/community" if caller.user.is_operator else f"/meters/{caller.user.meter_id}"
    return RedirectResponse(home_page, status_code=303)


@router.post("/language")
async def language(request: Request, svc: Services) -> Response:
    """Switch the language: the user's setting when logged in, a cookie otherwise."""
    form = await request.form()
    wanted = str(form.get("language", ""))
    back = str(form.get("next", "/"))
    if not back.startswith("/") or back.startswith("//"):
        back = "/"
    caller = optional_caller(request, svc, None, request.cookies.get(SESSION_COOKIE))
    if caller is not None:
        await check_csrf(request, caller)
        try:
            actions.set_language(svc, caller.user, wanted)
        except actions.ActionError as exc:
            raise HTTPException(exc.status, exc.message) from None
    elif wanted not in LANGUAGES:
        raise HTTPException(422, f"language must be one of {', '.join(LANGUAGES)}")
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(LANGUAGE_COOKIE, wanted, samesite="lax", max_age=365 * 86400)
    return response


# ---- operator pages -------------------------------------------------------------------------


@router.get("/community", response_class=HTMLResponse)
def community_page(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    require_operator(caller)
    with svc.store.session() as session:
        data = queries.community(session)
    tariffs = None if svc.monitor is None else svc.monitor.tariffs
    return render(
        request, caller, "community.html", data=data, data_json=json.dumps(data), tariffs=tariffs,
        error=request.query_params.get("error"), field=request.query_params.get("field"),
    )  # fmt: skip


@router.get("/partials/community-cards", response_class=HTMLResponse)
def community_cards(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    require_operator(caller)
    with svc.store.session() as session:
        data = queries.community(session)
    return render(request, caller, "_community_cards.html", data=data)


@router.post("/tariffs")
async def tariffs_form(request: Request, caller: PageCaller, svc: Services) -> Response:
    await check_csrf(request, caller)
    require_operator(caller)
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        retail = _form_float(form, "retail_price")
        feed_in = _form_float(form, "feed_in_price")
        if retail is None or feed_in is None:
            raise actions.ActionError(
                "retail_price and feed_in_price are both needed", field="retail_price", status=422
            )
        await actions.set_tariffs(
            svc, caller.user, retail, feed_in, _form_float(form, "feeder_export_limit_w")
        )
    except actions.ActionError as exc:
        return RedirectResponse(
            f"/community?error={_q(exc.message)}&field={exc.field or ''}", status_code=303
        )
    return RedirectResponse("/community", status_code=303)


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text)


@router.get("/meters", response_class=HTMLResponse)
def meters_page(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    require_operator(caller)
    with svc.store.session() as session:
        rows = queries.meters(session)
    return render(
        request, caller, "meters.html", meters=rows, error=request.query_params.get("error"),
        field=request.query_params.get("field"), can_chain=svc.chain is not None,
    )  # fmt: skip


@router.post("/meters")
async def register_form(request: Request, caller: PageCaller, svc: Services) -> Response:
    await check_csrf(request, caller)
    require_operator(caller)
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        await actions.register_meter(
            svc, caller.user, meter_id=form.get("meter_id", "").strip(),
            signer=form.get("signer", "").strip(), owner=form.get("owner", "").strip(),
            kind=form.get("kind", "prosumer"), protocol=form.get("protocol", "modbus"),
            pv_kwp=_form_float(form, "pv_kwp") or 0.0,
            battery_kwh=_form_float(form, "battery_kwh") or 0.0,
        )  # fmt: skip
    except actions.ActionError as exc:
        return RedirectResponse(
            f"/meters?error={_q(exc.message)}&field={exc.field or ''}", status_code=303
        )
    return RedirectResponse("/meters", status_code=303)


@router.get("/intervals", response_class=HTMLResponse)
def intervals_page(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    require_operator(caller)
    with svc.store.session() as session:
        rows = list(reversed(queries.intervals(session, 200)))
    return render(request, caller, "intervals.html", intervals=rows)


@router.get("/intervals/{interval}", response_class=HTMLResponse)
def interval_page(
    request: Request, caller: PageCaller, svc: Services, interval: int
) -> HTMLResponse:
    require_operator(caller)
    with svc.store.session() as session:
        found = queries.interval_detail(session, interval)
    if found is None:
        raise HTTPException(404, f"no interval {interval}")
    return render(request, caller, "interval.html", interval=found)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    require_operator(caller)
    with svc.store.session() as session:
        rows = queries.audit(session)
    return render(request, caller, "audit.html", entries=rows)


# ---- a meter --------------------------------------------------------------------------------


def _meter_or_404(svc: Services, caller: Caller, meter_id: str) -> dict[str, Any]:
    check_meter_access(caller, meter_id)
    with svc.store.session() as session:
        found = queries.meter(session, meter_id)
    if found is None:
        raise HTTPException(404, f"no meter {meter_id}")
    return found


@router.get("/meters/{meter_id}", response_class=HTMLResponse)
def meter_page(request: Request, caller: PageCaller, svc: Services, meter_id: str) -> HTMLResponse:
    meter = _meter_or_404(svc, caller, meter_id)
    with svc.store.session() as session:
        totals = queries.meter_totals(session, meter_id)
        trades = queries.meter_trades(session, meter_id, 20)
        quality = queries.voltage_quality(session, meter_id, meter["nominal_voltage_v"])
        in_force = queries.config_in_force(session, meter_id)
        versions = queries.configs(session, meter_id, 5)
        meter_alarms = queries.alarms(session, meter_id=meter_id, only_meter=True, limit=20)
    balance = None
    if meter["balance_units"] is not None and svc.chain is not None:
        balance = svc.chain.to_currency(meter["balance_units"])
    elif meter["balance_units"] is not None:
        balance = meter["balance_units"] / 100
    shown = versions[0]["config"] if versions else (in_force or {}).get("config") or {}
    return render(
        request, caller, "meter.html", meter=meter, totals=totals, trades=trades, quality=quality,
        in_force=in_force, versions=versions, alarms=meter_alarms, balance=balance, form=shown,
        errors={}, can_chain=svc.chain is not None,
        error=request.query_params.get("error"), field=request.query_params.get("field"),
    )  # fmt: skip


@router.get("/meters/{meter_id}/config-status", response_class=HTMLResponse)
def config_status(
    request: Request, caller: PageCaller, svc: Services, meter_id: str
) -> HTMLResponse:
    _meter_or_404(svc, caller, meter_id)
    with svc.store.session() as session:
        versions = queries.configs(session, meter_id, 5)
    return render(request, caller, "_config_status.html", versions=versions, meter_id=meter_id)


def config_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The form's fields as a TradingConfig's data (percent fields to fractions)."""
    loads = []
    for index in range(2):
        fields = {
            name: form.get(f"load{index}_{name}", "").strip()
            for name in ("name", "energy_kwh", "max_kw", "from", "to")
        }
        if not any(fields.values()):
            continue
        if not all(fields.values()):
            raise actions.ActionError(
                f"deferrable load {index + 1}: fill in all its fields, or none",
                field=f"load{index}_name",
                status=422,
            )
        energy = _form_float(form, f"load{index}_energy_kwh")
        power = _form_float(form, f"load{index}_max_kw")
        loads.append(
            {
                "name": fields["name"],
                "energy_wh": None if energy is None else energy * 1000,
                "max_power_w": None if power is None else power * 1000,
                "window_start": fields["from"],
                "window_end": fields["to"],
            }
        )
    return {
        "strategy": form.get("strategy", "optimiser"),
        "max_buy_price": _form_float(form, "max_buy_price"),
        "min_sell_price": _form_float(form, "min_sell_price"),
        "battery_reserve_fraction": _form_float(form, "battery_reserve_percent", percent=True),
        "target_soc_fraction": _form_float(form, "target_soc_percent", percent=True),
        "deferrable_loads": loads,
        "relay": form.get("relay", "on"),
    }


FORM_FIELDS = {
    "battery_reserve_fraction": "battery_reserve_percent",
    "target_soc_fraction": "target_soc_percent",
}


@router.post("/meters/{meter_id}/config")
async def config_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str
) -> Response:
    await check_csrf(request, caller)
    _meter_or_404(svc, caller, meter_id)
    form = {k: str(v) for k, v in (await request.form()).items() if k != CSRF_FIELD}
    try:
        config = actions.validate_config(config_from_form(form))
        await actions.change_config(svc, caller.user, meter_id, config)
    except actions.ActionError as exc:
        field = exc.field or ""
        field = FORM_FIELDS.get(field, field)
        if field.startswith("deferrable_loads."):
            parts = field.split(".")
            field = f"load{parts[1]}_name"
        return RedirectResponse(
            f"/meters/{meter_id}?error={_q(exc.message)}&field={_q(field)}#config", status_code=303
        )
    return RedirectResponse(f"/meters/{meter_id}#config", status_code=303)


@router.post("/meters/{meter_id}/rotate")
async def rotate_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str
) -> Response:
    await check_csrf(request, caller)
    require_operator(caller)
    form = await request.form()
    try:
        await actions.rotate_signer(svc, caller.user, meter_id, str(form.get("signer", "")).strip())
    except actions.ActionError as exc:
        return RedirectResponse(
            f"/meters/{meter_id}?error={_q(exc.message)}&field=signer", status_code=303
        )
    return RedirectResponse(f"/meters/{meter_id}", status_code=303)


@router.post("/meters/{meter_id}/revoke")
async def revoke_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str
) -> Response:
    await check_csrf(request, caller)
    require_operator(caller)
    try:
        await actions.revoke_meter(svc, caller.user, meter_id)
    except actions.ActionError as exc:
        return RedirectResponse(f"/meters/{meter_id}?error={_q(exc.message)}", status_code=303)
    return RedirectResponse(f"/meters/{meter_id}", status_code=303)


# ---- alarms and account ---------------------------------------------------------------------


@router.get("/alarms", response_class=HTMLResponse)
def alarms_page(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    with svc.store.session() as session:
        if caller.user.is_operator:
            rows = queries.alarms(session, limit=200)
        else:
            rows = queries.alarms(
                session, meter_id=caller.user.meter_id, only_meter=True, limit=200
            )
    return render(request, caller, "alarms.html", alarms=rows)


@router.get("/partials/alarms", response_class=HTMLResponse)
def alarms_partial(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    with svc.store.session() as session:
        if caller.user.is_operator:
            rows = queries.alarms(session, limit=200)
        else:
            rows = queries.alarms(
                session, meter_id=caller.user.meter_id, only_meter=True, limit=200
            )
    return render(request, caller, "_alarm_rows.html", alarms=rows)


@router.post("/alarms/{alarm_id}/ack")
async def ack_form(request: Request, caller: PageCaller, svc: Services, alarm_id: int) -> Response:
    await check_csrf(request, caller)
    try:
        actions.acknowledge_alarm(svc, caller.user, alarm_id)
    except actions.ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return RedirectResponse("/alarms", status_code=303)


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    return render(
        request, caller, "account.html", tokens=actions.tokens(svc, caller.user), new_token=None
    )


@router.post("/account/tokens", response_class=HTMLResponse)
async def create_token_form(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    await check_csrf(request, caller)
    form = await request.form()
    try:
        token, _ = actions.create_token(svc, caller.user, str(form.get("name", "")))
    except actions.ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return render(
        request, caller, "account.html", tokens=actions.tokens(svc, caller.user), new_token=token
    )


@router.post("/account/tokens/{token_id}/revoke")
async def revoke_token_form(
    request: Request, caller: PageCaller, svc: Services, token_id: int
) -> Response:
    await check_csrf(request, caller)
    try:
        actions.revoke_token(svc, caller.user, token_id)
    except actions.ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return RedirectResponse("/account", status_code=303)
