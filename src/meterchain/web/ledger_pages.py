"""The ledger's pages (issue 11): certificates with their hourly chart and 24/7 matching, the
community plant's fund, monthly statements with their printable page; forms with CSRF tokens.

A household's pages live under /meters/{meter_id}/… (a prosumer reaches only its own meter);
the operator's overviews are /certificates and /fund. Chain reads block, so the handlers are
plain functions FastAPI runs in its thread pool; a part the deployment lacks is shown as not
deployed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meterchain.ledger.matching import HourlyMatch, total
from meterchain.ledger.statement_html import render_statement_html
from meterchain.web import actions, ledger_actions, ledger_views, queries
from meterchain.web.chain_actions import ChainActions
from meterchain.web.deps import (
    PageCaller,
    Services,
    check_csrf,
    check_meter_access,
    formatter,
    require_operator,
)
from meterchain.web.pages import _meter_or_404, _q, render

router = APIRouter(include_in_schema=False)
PERIOD = r"^\d{4}-(0[1-9]|1[0-2])$"
EXPORT_FORMATS = {"energytag": ("application/json", "json"), "irec-csv": ("text/csv", "csv")}


def _read(what: str, call: Any, *args: Any) -> Any:
    """A chain read for a page: its failure as the page's error (not deployed: 404)."""
    try:
        return actions.on_chain_now(what, call, *args)
    except actions.ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None


def _flash(request: Request) -> dict[str, Any]:
    """The error, the field at fault and the notice a form's redirect carried."""
    return {
        "error": request.query_params.get("error"),
        "field": request.query_params.get("field"),
        "done": request.query_params.get("done"),
    }


def _back(path: str, exc: actions.ActionError, anchor: str = "") -> RedirectResponse:
    return RedirectResponse(
        f"{path}?error={_q(exc.message)}&field={_q(exc.field or '')}{anchor}", status_code=303
    )


async def _form(request: Request) -> dict[str, str]:
    return {k: str(v) for k, v in (await request.form()).items()}


def _int(form: dict[str, str], name: str) -> int | None:
    raw = form.get(name, "").strip().replace(".", "").replace(",", "")
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 40:
        raise actions.ActionError(f"{name}: '{raw}' is not a whole number", field=name, status=422)
    return int(raw)


def _certificates_chain(svc: Services) -> ChainActions | None:
    chain = svc.chain
    return chain if chain is not None and chain.has_certificates else None


# ---- certificates ---------------------------------------------------------------------------


@router.get("/certificates", response_class=HTMLResponse)
def certificates_all(
    request: Request,
    caller: PageCaller,
    svc: Services,
    meter: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """The operator's view of every certificate; a prosumer goes to their own."""
    if not caller.user.is_operator:
        return RedirectResponse(f"/meters/{caller.user.meter_id}/certificates", status_code=303)
    chain = _certificates_chain(svc)
    if chain is None:
        return render(request, caller, "certificates_all.html", deployed=False, **_flash(request))
    book = _read("read the certificates", chain.certificate_book)
    rows = ledger_views.all_rows(book, meter or None)
    with svc.store.session() as session:
        consumed = {m: queries.imported_by_interval(session, m) for m in queries.meter_ids(session)}
    matches = [ledger_views.matching(book, m, c) for m, c in consumed.items()]
    community = total(HourlyMatch(m["consumption_wh"], m["matched_wh"]) for m in matches)
    data = {"devices": ledger_views.community_hours(book)}
    return render(
        request, caller, "certificates_all.html", deployed=True, rows=rows[: ledger_views.MAX_ROWS],
        row_count=len(rows), totals=ledger_views.totals(rows), devices=ledger_views.devices(book),
        community=community, meter_filter=meter or "", data_json=json.dumps(data),
        this_month=_this_month(svc), **_flash(request),
    )  # fmt: skip


def _this_month(svc: Services) -> str:
    now = datetime.now(UTC).astimezone(ZoneInfo(svc.settings.timezone))
    return f"{now.year:04d}-{now.month:02d}"


@router.get("/certificates/export")
def certificates_export(
    caller: PageCaller,
    svc: Services,
    period: Annotated[str, Query(pattern=PERIOD)],
    format: Annotated[str, Query(pattern=r"^(energytag|irec-csv)$")] = "energytag",
) -> Response:
    """The month's certificates as EnergyTag bundles (JSON) or I-REC style CSV: a download."""
    require_operator(caller)
    return export_response(svc, period, format)


def export_response(svc: Services, period: str, export_format: str) -> Response:
    chain = svc.chain
    if chain is None or not chain.has_certificates:
        raise HTTPException(404, "no EnergyCertificates contract is deployed beside this market")
    try:
        month = ledger_actions.month_of(svc, period)
    except actions.ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    text = _read("export the certificates", chain.export_certificates, month, export_format)
    media, suffix = EXPORT_FORMATS[export_format]
    return Response(
        text,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="certificates-{month.label}-'
            f'{export_format}.{suffix}"'
        },
    )


@router.get("/meters/{meter_id}/certificates", response_class=HTMLResponse)
def household_certificates(
    request: Request, caller: PageCaller, svc: Services, meter_id: str
) -> HTMLResponse:
    """A household's certificates, its device's hourly issuance and its 24/7 matching."""
    meter = _meter_or_404(svc, caller, meter_id)
    chain = _certificates_chain(svc)
    if chain is None:
        return render(
            request, caller, "certificates.html", meter=meter, deployed=False, **_flash(request)
        )
    found = household_data(svc, chain, meter_id)
    wallet = (chain.wallet_address(meter_id) or "").lower()
    held = [r for r in found["rows"] if r["retired_for"] is None and r["owner"].lower() == wallet]
    data = {"device_hours": found["device_hours"], "matching": found["matching"]["hours"]}
    return render(
        request, caller, "certificates.html", meter=meter, deployed=True, found=found,
        rows=found["rows"][: ledger_views.MAX_ROWS], held=held[:200], data_json=json.dumps(data),
        can_sign=chain.has_wallet(meter_id), **_flash(request),
    )  # fmt: skip


def household_data(svc: Services, chain: ChainActions, meter_id: str) -> dict[str, Any]:
    """A household's certificates, totals, hourly issuance and matching (pages and API)."""
    book = _read("read the certificates", chain.certificate_book)
    owner = _read(f"look meter {meter_id} up", chain.owner_of, meter_id)
    rows = ledger_views.household_rows(book, meter_id, owner)
    with svc.store.session() as session:
        consumed = queries.imported_by_interval(session, meter_id)
    return {
        "meter_id": meter_id,
        "owner": owner,
        "totals": ledger_views.totals(rows),
        "rows": rows,
        "device_hours": ledger_views.device_hours(book, meter_id),
        "matching": ledger_views.matching(book, meter_id, consumed),
    }


@router.post("/meters/{meter_id}/certificates/retire")
async def retire_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str
) -> Response:
    await check_csrf(request, caller)
    _meter_or_404(svc, caller, meter_id)
    form = await _form(request)
    back = f"/meters/{meter_id}/certificates"
    try:
        certificate = _int(form, "certificate_id")
        if certificate is None:
            raise actions.ActionError(
                "certificate_id: choose a certificate", field="certificate_id", status=422
            )
        await ledger_actions.retire_certificate(
            svc, caller.user, meter_id, certificate, beneficiary=form.get("beneficiary", ""),
            purpose=form.get("purpose", ""), wh=_int(form, "wh"),
            period_start=form.get("period_start"), period_end=form.get("period_end"),
        )  # fmt: skip
    except actions.ActionError as exc:
        return _back(back, exc, "#retire")
    return RedirectResponse(f"{back}?done=retired", status_code=303)


# ---- the community plant's fund -------------------------------------------------------------


@router.get("/fund", response_class=HTMLResponse)
def fund_page(request: Request, caller: PageCaller, svc: Services) -> HTMLResponse:
    """Each fund's campaign and revenue; a household's shares, earnings and forms."""
    chain = svc.chain
    if chain is None or not chain.funds:
        return render(request, caller, "fund.html", deployed=False, funds=[], **_flash(request))
    meter_id = None if caller.user.is_operator else caller.user.meter_id
    account = wallet_credit = None
    if meter_id is not None:
        account = household_account(chain, meter_id)
        wallet_credit = _read("read the wallet", chain.wallet_credit, meter_id)
    funds = _read("read the community funds", chain.fund_statuses, account)
    return render(
        request, caller, "fund.html", deployed=True, funds=funds, meter_id=meter_id,
        to_currency=chain.to_currency, wallet_credit=wallet_credit,
        can_sign=meter_id is not None and chain.has_wallet(meter_id), **_flash(request),
    )  # fmt: skip


def household_account(chain: ChainActions, meter_id: str) -> str:
    """The account whose shares and certificates are the household's: the wallet this server
    keeps for it, else the meter's owner in the registry."""
    return chain.wallet_address(meter_id) or _read(
        f"look meter {meter_id} up", chain.owner_of, meter_id
    )


@router.post("/meters/{meter_id}/fund/{fund}/buy")
async def fund_buy_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str, fund: str
) -> Response:
    await check_csrf(request, caller)
    _meter_or_404(svc, caller, meter_id)
    form = await _form(request)
    try:
        shares = _int(form, "shares")
        if shares is None:
            raise actions.ActionError("shares: how many?", field="shares", status=422)
        await ledger_actions.fund_buy(svc, caller.user, meter_id, fund, shares)
    except actions.ActionError as exc:
        return _back("/fund", exc)
    return RedirectResponse("/fund?done=bought", status_code=303)


@router.post("/meters/{meter_id}/fund/{fund}/claim")
async def fund_claim_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str, fund: str
) -> Response:
    await check_csrf(request, caller)
    _meter_or_404(svc, caller, meter_id)
    try:
        result = await ledger_actions.fund_claim(svc, caller.user, meter_id, fund)
    except actions.ActionError as exc:
        return _back("/fund", exc)
    done = "claimed" if result["tx"] else "nothing_to_claim"
    return RedirectResponse(f"/fund?done={done}", status_code=303)


@router.post("/fund/{fund}/collect")
async def fund_collect_form(
    request: Request, caller: PageCaller, svc: Services, fund: str
) -> Response:
    await check_csrf(request, caller)
    try:
        result = await ledger_actions.fund_collect(svc, caller.user, fund)
    except actions.ActionError as exc:
        return _back("/fund", exc)
    done = "collected" if result["collected"] else "nothing_to_collect"
    return RedirectResponse(f"/fund?done={done}", status_code=303)


# ---- statements -----------------------------------------------------------------------------


def _default_period(svc: Services, meter_id: str) -> str:
    """The month of the meter's latest recorded interval (else this month)."""
    with svc.store.session() as session:
        series = queries.meter_series(session, meter_id, "day")
    end = series["end"]
    moment = datetime.now(UTC) if end is None else datetime.fromisoformat(end)
    local = moment.astimezone(ZoneInfo(svc.settings.timezone))
    return f"{local.year:04d}-{local.month:02d}"


@router.get("/meters/{meter_id}/statements", response_class=HTMLResponse)
def statements_page(
    request: Request,
    caller: PageCaller,
    svc: Services,
    meter_id: str,
    period: Annotated[str | None, Query(max_length=7)] = None,
) -> HTMLResponse:
    """A household's statement for a month: energy, lines, totals, certificates, payment."""
    meter = _meter_or_404(svc, caller, meter_id)
    chain = svc.chain
    chosen = period or _default_period(svc, meter_id)
    if chain is None or not chain.has_billing:
        return render(
            request, caller, "statements.html", meter=meter, deployed=False, period=chosen,
            **_flash(request),
        )  # fmt: skip
    try:
        month = ledger_actions.month_of(svc, chosen)
    except actions.ActionError as exc:
        return render(
            request, caller, "statements.html", meter=meter, deployed=True, period=chosen,
            document=None, **{**_flash(request), "error": exc.message, "field": "period"},
        )  # fmt: skip
    document = _read("build the statement", chain.statement, meter_id, month)
    return render(
        request, caller, "statements.html", meter=meter, deployed=True, period=month.label,
        document=document, can_sign=chain.has_wallet(meter_id), **_flash(request),
    )  # fmt: skip


@router.get("/meters/{meter_id}/statements/{period}/print", response_class=HTMLResponse)
def statement_print(
    request: Request,
    caller: PageCaller,
    svc: Services,
    meter_id: str,
    period: str,
    lang: Annotated[str | None, Query(pattern=r"^(pt-BR|en)$")] = None,
) -> HTMLResponse:
    """The statement as its own printable page (pt-BR or English)."""
    _meter_or_404(svc, caller, meter_id)
    chain = svc.chain
    if chain is None or not chain.has_billing:
        raise HTTPException(404, "no Billing contract is deployed beside this market")
    try:
        month = ledger_actions.month_of(svc, period)
    except actions.ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    document = _read("build the statement", chain.statement, meter_id, month)
    language = lang or formatter(request, caller).language
    page = render_statement_html(document, "pt-BR" if language == "pt-BR" else "en")
    return HTMLResponse(page)


@router.post("/meters/{meter_id}/statements/{period}/record")
async def statement_record_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str, period: str
) -> Response:
    await check_csrf(request, caller)
    _meter_or_404(svc, caller, meter_id)
    require_operator(caller)
    back = f"/meters/{meter_id}/statements"
    try:
        await ledger_actions.record_statement(svc, caller.user, meter_id, period)
    except actions.ActionError as exc:
        return RedirectResponse(
            f"{back}?period={_q(period)}&error={_q(exc.message)}", status_code=303
        )
    return RedirectResponse(f"{back}?period={_q(period)}&done=recorded", status_code=303)


@router.post("/meters/{meter_id}/statements/{period}/pay")
async def statement_pay_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str, period: str
) -> Response:
    await check_csrf(request, caller)
    check_meter_access(caller, meter_id)
    _meter_or_404(svc, caller, meter_id)
    back = f"/meters/{meter_id}/statements"
    try:
        await ledger_actions.pay_statement(svc, caller.user, meter_id, period)
    except actions.ActionError as exc:
        return RedirectResponse(
            f"{back}?period={_q(period)}&error={_q(exc.message)}", status_code=303
        )
    return RedirectResponse(f"{back}?period={_q(period)}&done=paid", status_code=303)
