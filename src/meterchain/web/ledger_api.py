"""The ledger's JSON API: certificates, the community plant's funds, monthly statements; the
same data and the same role rules as the pages (a prosumer reaches only its own meter)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from meterchain.ledger.period import PeriodError, parse_time
from meterchain.web import actions, ledger_actions, ledger_views
from meterchain.web.api import ERRORS, MeterId, Problem, _meter
from meterchain.web.deps import ApiCaller, Services, check_csrf, require_operator
from meterchain.web.ledger_pages import (
    PERIOD,
    _read,
    export_response,
    household_account,
    household_data,
)

router = APIRouter(prefix="/api", tags=["ledger"])

Period = Annotated[str, Path(pattern=PERIOD, description="A calendar month, YYYY-MM")]
FundAddress = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$", description="The fund")]
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"model": Problem, "description": "the chain refused it, or no wallet here"},
    422: {"model": Problem, "description": "invalid input"},
}


def _error(exc: actions.ActionError) -> JSONResponse:
    return JSONResponse(exc.as_json(), status_code=exc.status)


def _chain(svc: Services) -> Any:
    if svc.chain is None:
        raise HTTPException(404, "this web server has no chain connection")
    return svc.chain


def _time(name: str, value: str | None, timezone: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value, timezone)
    except PeriodError as exc:
        raise HTTPException(422, f"{name}: {exc}") from None


# ---- certificates ---------------------------------------------------------------------------


@router.get("/certificates", responses=ERRORS)
def certificates(
    caller: ApiCaller,
    svc: Services,
    meter_id: Annotated[str | None, Query(pattern=r"^[0-9A-Za-z_-]{1,32}$")] = None,
    start: Annotated[
        str | None, Query(alias="from", max_length=40, description="ISO 8601 or Unix seconds")
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", max_length=40, description="ISO 8601 or Unix seconds")
    ] = None,
) -> list[dict[str, Any]]:
    """Certificate holdings (retired_for null) and retirements, newest first: every one for
    the operator (optionally one meter's), a household's own for a prosumer."""
    if not caller.user.is_operator:
        own = caller.user.meter_id or ""
        if meter_id not in (None, own):
            raise HTTPException(404, f"no meter {meter_id} for you")
        meter_id = own
    chain = _chain(svc)
    since = _time("from", start, svc.settings.timezone)
    until = _time("to", end, svc.settings.timezone)
    if caller.user.is_operator:
        book = _read("read the certificates", chain.certificate_book)
        rows = ledger_views.all_rows(book, meter_id)
    else:
        _meter(svc, caller, meter_id or "")
        rows = household_data(svc, chain, meter_id or "")["rows"]
    return [
        row
        for row in rows
        if (since is None or _unix(row["interval_start"]) >= since)
        and (until is None or _unix(row["interval_start"]) < until)
    ]


def _unix(iso_time: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso_time).timestamp())


@router.get("/certificates/export", responses=ERRORS)
def certificates_export(
    caller: ApiCaller,
    svc: Services,
    period: Annotated[str, Query(pattern=PERIOD)],
    format: Literal["energytag", "irec-csv"] = "energytag",
) -> Response:
    """Operator: the month's certificates as EnergyTag hourly bundles (JSON) or I-REC CSV."""
    require_operator(caller)
    return export_response(svc, period, format)


@router.get("/meters/{meter_id}/certificates", responses=ERRORS)
def meter_certificates(caller: ApiCaller, svc: Services, meter_id: MeterId) -> dict[str, Any]:
    """A household's certificates (held, retired, retired in its name at issuance), its
    device's issuance by hour, and its consumption matched hour by hour (24/7 score)."""
    _meter(svc, caller, meter_id)
    chain = _chain(svc)
    if not chain.has_certificates:
        raise HTTPException(404, "no EnergyCertificates contract is deployed beside this market")
    return household_data(svc, chain, meter_id)


class Retirement(BaseModel):
    certificate_id: int = Field(ge=1, lt=2**96, description="From the list's `id`")
    beneficiary: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=200)
    wh: int | None = Field(default=None, ge=1, le=2**63, description="Default: all held")
    period_start: str | None = Field(
        default=None, max_length=40, description="Default: the certificate's interval"
    )
    period_end: str | None = Field(default=None, max_length=40)


@router.post("/meters/{meter_id}/certificates/retire", responses=WRITE_ERRORS)
async def retire(
    request: Request, caller: ApiCaller, svc: Services, meter_id: MeterId, body: Retirement
) -> Any:
    """Retire a certificate the household's wallet holds, for a beneficiary and purpose."""
    await check_csrf(request, caller)
    _meter(svc, caller, meter_id)
    try:
        return await ledger_actions.retire_certificate(
            svc, caller.user, meter_id, body.certificate_id, beneficiary=body.beneficiary,
            purpose=body.purpose, wh=body.wh, period_start=body.period_start,
            period_end=body.period_end,
        )  # fmt: skip
    except actions.ActionError as exc:
        return _error(exc)


# ---- funds ----------------------------------------------------------------------------------


@router.get("/funds", responses=ERRORS)
def funds(caller: ApiCaller, svc: Services) -> list[dict[str, Any]]:
    """Each community fund's campaign and revenue (smallest units); for a prosumer, its own
    shares, earnings and what it can claim."""
    chain = svc.chain
    if chain is None or not chain.funds:
        return []
    account = None
    if not caller.user.is_operator:
        meter_id = caller.user.meter_id or ""
        _meter(svc, caller, meter_id)
        account = household_account(chain, meter_id)
    found: list[dict[str, Any]] = _read("read the community funds", chain.fund_statuses, account)
    return found


class SharePurchase(BaseModel):
    shares: int = Field(ge=1, le=ledger_actions.MAX_SHARES)


@router.post("/meters/{meter_id}/funds/{fund}/buy", responses=WRITE_ERRORS)
async def fund_buy(
    request: Request,
    caller: ApiCaller,
    svc: Services,
    meter_id: MeterId,
    fund: FundAddress,
    body: SharePurchase,
) -> Any:
    """Buy shares of the campaign from the household's wallet (a permit of its credit)."""
    await check_csrf(request, caller)
    _meter(svc, caller, meter_id)
    try:
        return await ledger_actions.fund_buy(svc, caller.user, meter_id, fund, body.shares)
    except actions.ActionError as exc:
        return _error(exc)


@router.post("/meters/{meter_id}/funds/{fund}/claim", responses=WRITE_ERRORS)
async def fund_claim(
    request: Request, caller: ApiCaller, svc: Services, meter_id: MeterId, fund: FundAddress
) -> Any:
    """Claim the revenue the household's shares earned."""
    await check_csrf(request, caller)
    _meter(svc, caller, meter_id)
    try:
        return await ledger_actions.fund_claim(svc, caller.user, meter_id, fund)
    except actions.ActionError as exc:
        return _error(exc)


@router.post("/funds/{fund}/collect", responses=WRITE_ERRORS)
async def fund_collect(
    request: Request, caller: ApiCaller, svc: Services, fund: FundAddress
) -> Any:
    """Move the plant's market revenue into the fund (one step; anyone may)."""
    await check_csrf(request, caller)
    try:
        return await ledger_actions.fund_collect(svc, caller.user, fund)
    except actions.ActionError as exc:
        return _error(exc)


# ---- statements -----------------------------------------------------------------------------


@router.get("/meters/{meter_id}/statements/{period}", responses=ERRORS)
def statement(
    caller: ApiCaller, svc: Services, meter_id: MeterId, period: Period
) -> dict[str, Any]:
    """The meter's statement for the month (the `meterchain statement --json` document)."""
    _meter(svc, caller, meter_id)
    chain = _chain(svc)
    try:
        month = ledger_actions.month_of(svc, period)
    except actions.ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    document: dict[str, Any] = _read("build the statement", chain.statement, meter_id, month)
    return document


@router.post("/meters/{meter_id}/statements/{period}/record", responses=WRITE_ERRORS)
async def statement_record(
    request: Request, caller: ApiCaller, svc: Services, meter_id: MeterId, period: Period
) -> Any:
    """Operator (the biller): record the statement's hash and what it says is owed."""
    await check_csrf(request, caller)
    _meter(svc, caller, meter_id)
    require_operator(caller)
    try:
        return await ledger_actions.record_statement(svc, caller.user, meter_id, period)
    except actions.ActionError as exc:
        return _error(exc)


@router.post("/meters/{meter_id}/statements/{period}/pay", responses=WRITE_ERRORS)
async def statement_pay(
    request: Request, caller: ApiCaller, svc: Services, meter_id: MeterId, period: Period
) -> Any:
    """Pay what the recorded statement says is outstanding, from the household's wallet."""
    await check_csrf(request, caller)
    _meter(svc, caller, meter_id)
    try:
        return await ledger_actions.pay_statement(svc, caller.user, meter_id, period)
    except actions.ActionError as exc:
        return _error(exc)
