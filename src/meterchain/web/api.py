"""The JSON API (OpenAPI at /docs): the same data and the same role rules as the pages.

Machine clients authenticate with `Authorization: Bearer TOKEN` (tokens from /account);
browsers' scripts use the session cookie plus the X-CSRF-Token header for writes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from meterchain.agents.messages import TradingConfig
from meterchain.web import actions, queries
from meterchain.web.deps import (
    ApiCaller,
    Services,
    check_csrf,
    check_meter_access,
    require_operator,
)

router = APIRouter(prefix="/api", tags=["api"])

MeterId = Annotated[str, Path(pattern=r"^[0-9A-Za-z_-]{1,32}$", description="The meter's id")]


class Problem(BaseModel):
    detail: str
    field: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "not logged in / bad token"},
    403: {"model": Problem, "description": "not allowed (role or CSRF)"},
    404: {"model": Problem, "description": "no such thing for you"},
}


def _error(exc: actions.ActionError) -> JSONResponse:
    return JSONResponse(exc.as_json(), status_code=exc.status)


@router.get("/me", responses=ERRORS)
def me(caller: ApiCaller) -> dict[str, Any]:
    """Who the token or session belongs to."""
    user = caller.user
    return {
        "username": user.username,
        "role": user.role,
        "meter_id": user.meter_id,
        "language": user.language,
    }


@router.get("/community", responses=ERRORS)
def community(caller: ApiCaller, svc: Services) -> dict[str, Any]:
    """Operator: every meter's power now, the last day's intervals, totals."""
    require_operator(caller)
    with svc.store.session() as session:
        return queries.community(session)


@router.get("/intervals", responses=ERRORS)
def intervals(
    caller: ApiCaller,
    svc: Services,
    limit: Annotated[int, Query(ge=1, le=2880)] = 96,
    before: Annotated[int | None, Query(ge=0, le=2**40)] = None,
) -> list[dict[str, Any]]:
    """Operator: the latest intervals' clearing and settlement, oldest first."""
    require_operator(caller)
    with svc.store.session() as session:
        return queries.intervals(session, limit, before)


@router.get("/intervals/{interval}", responses=ERRORS)
def interval(
    caller: ApiCaller, svc: Services, interval: Annotated[int, Path(ge=0, le=2**40)]
) -> dict[str, Any]:
    """Operator: one interval with its trades and chain transactions."""
    require_operator(caller)
    with svc.store.session() as session:
        found = queries.interval_detail(session, interval)
    if found is None:
        raise _not_found(f"no interval {interval}")
    return found


@router.get("/meters", responses=ERRORS)
def meters(caller: ApiCaller, svc: Services) -> list[dict[str, Any]]:
    """Every meter for the operator; a prosumer's own for a prosumer."""
    with svc.store.session() as session:
        if caller.user.is_operator:
            return queries.meters(session)
        return queries.meters(session, caller.user.meter_id or "")


def _meter(svc: Services, caller: ApiCaller, meter_id: str) -> dict[str, Any]:
    check_meter_access(caller, meter_id)
    with svc.store.session() as session:
        found = queries.meter(session, meter_id)
    if found is None:
        raise _not_found(f"no meter {meter_id}")
    return found


def _not_found(message: str) -> Exception:
    from fastapi import HTTPException

    return HTTPException(404, message)


@router.get("/meters/{meter_id}", responses=ERRORS)
def meter(caller: ApiCaller, svc: Services, meter_id: MeterId) -> dict[str, Any]:
    """A meter: protocol, board status, last reading, last settled interval, balance."""
    found = _meter(svc, caller, meter_id)
    with svc.store.session() as session:
        found["totals"] = queries.meter_totals(session, meter_id)
        found["voltage_quality"] = queries.voltage_quality(
            session, meter_id, found["nominal_voltage_v"]
        )
    return found


@router.get("/meters/{meter_id}/readings", responses=ERRORS)
def readings(
    caller: ApiCaller,
    svc: Services,
    meter_id: MeterId,
    span: Literal["day", "week", "month"] = "day",
) -> dict[str, Any]:
    """A meter's intervals over a day, a week or a month (columns for charts)."""
    _meter(svc, caller, meter_id)
    with svc.store.session() as session:
        return queries.meter_series(session, meter_id, span)


@router.get("/meters/{meter_id}/trades", responses=ERRORS)
def trades(
    caller: ApiCaller,
    svc: Services,
    meter_id: MeterId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """A meter's trades, newest first, with their prices."""
    _meter(svc, caller, meter_id)
    with svc.store.session() as session:
        return queries.meter_trades(session, meter_id, limit)


@router.get("/meters/{meter_id}/config", responses=ERRORS)
def config(caller: ApiCaller, svc: Services, meter_id: MeterId) -> dict[str, Any]:
    """The trading-device configuration in force and the latest versions with their status."""
    _meter(svc, caller, meter_id)
    with svc.store.session() as session:
        return {
            "in_force": queries.config_in_force(session, meter_id),
            "versions": queries.configs(session, meter_id),
        }


@router.put(
    "/meters/{meter_id}/config",
    responses={**ERRORS, 422: {"model": Problem, "description": "invalid configuration"}},
)
async def put_config(
    request: Request, caller: ApiCaller, svc: Services, meter_id: MeterId, body: TradingConfig
) -> Any:
    """Set a new configuration: stored, sent to the board, acknowledged (see GET)."""
    await check_csrf(request, caller)
    _meter(svc, caller, meter_id)
    try:
        return await actions.change_config(svc, caller.user, meter_id, body)
    except actions.ActionError as exc:
        return _error(exc)


@router.get("/meters/{meter_id}/alarms", responses=ERRORS)
def meter_alarms(caller: ApiCaller, svc: Services, meter_id: MeterId) -> list[dict[str, Any]]:
    """A meter's alarms, newest first."""
    _meter(svc, caller, meter_id)
    with svc.store.session() as session:
        return queries.alarms(session, meter_id=meter_id, only_meter=True)


class MeterRegistration(BaseModel):
    meter_id: str = Field(pattern=r"^[0-9A-Za-z_-]{1,32}$")
    signer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    owner: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    kind: Literal["consumer", "prosumer", "generator", "ev-charger"] = "prosumer"
    protocol: Literal["modbus", "dlms", "iec62056-21", "nbr14522"] = "modbus"
    pv_kwp: float = Field(default=0.0, ge=0, le=10_000)
    battery_kwh: float = Field(default=0.0, ge=0, le=10_000)
    max_power_w: int = Field(default=15_000, gt=0, le=2**32 - 1)
    import_wh: int = Field(default=0, ge=0, le=2**63, description="register at installation")
    export_wh: int = Field(default=0, ge=0, le=2**63, description="register at installation")


@router.post("/meters", responses=ERRORS)
async def register(
    request: Request, caller: ApiCaller, svc: Services, body: MeterRegistration
) -> Any:
    """Operator: register a meter and its board's key on chain."""
    await check_csrf(request, caller)
    require_operator(caller)
    try:
        return await actions.register_meter(svc, caller.user, **body.model_dump())
    except actions.ActionError as exc:
        return _error(exc)


class Rotation(BaseModel):
    signer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")


@router.post("/meters/{meter_id}/rotate", responses=ERRORS)
async def rotate(
    request: Request, caller: ApiCaller, svc: Services, meter_id: MeterId, body: Rotation
) -> Any:
    """Operator: replace a meter's board key."""
    await check_csrf(request, caller)
    require_operator(caller)
    try:
        return await actions.rotate_signer(svc, caller.user, meter_id, body.signer)
    except actions.ActionError as exc:
        return _error(exc)


@router.post("/meters/{meter_id}/revoke", responses=ERRORS)
async def revoke(request: Request, caller: ApiCaller, svc: Services, meter_id: MeterId) -> Any:
    """Operator: revoke a meter for good; its readings are refused from then on."""
    await check_csrf(request, caller)
    require_operator(caller)
    try:
        return await actions.revoke_meter(svc, caller.user, meter_id)
    except actions.ActionError as exc:
        return _error(exc)


class TariffChange(BaseModel):
    retail_price: float = Field(gt=0, le=100)
    feed_in_price: float = Field(ge=0, le=100)
    feeder_export_limit_w: float | None = Field(default=None, gt=0, le=1e9)


@router.put("/tariffs", responses=ERRORS)
async def tariffs(request: Request, caller: ApiCaller, svc: Services, body: TariffChange) -> Any:
    """Operator: set retail and feed-in tariffs (per kWh) and the feeder's export limit."""
    await check_csrf(request, caller)
    require_operator(caller)
    try:
        return await actions.set_tariffs(
            svc, caller.user, body.retail_price, body.feed_in_price, body.feeder_export_limit_w
        )
    except actions.ActionError as exc:
        return _error(exc)


@router.get("/alarms", responses=ERRORS)
def alarms(caller: ApiCaller, svc: Services) -> list[dict[str, Any]]:
    """Alarms, newest first: all for the operator, their meter's for a prosumer."""
    with svc.store.session() as session:
        if caller.user.is_operator:
            return queries.alarms(session)
        return queries.alarms(session, meter_id=caller.user.meter_id, only_meter=True)


@router.post("/alarms/{alarm_id}/ack", responses=ERRORS)
async def acknowledge(
    request: Request,
    caller: ApiCaller,
    svc: Services,
    alarm_id: Annotated[int, Path(ge=1, le=2**62)],
) -> Any:
    """Acknowledge an alarm (the operator any, a prosumer their meter's)."""
    await check_csrf(request, caller)
    try:
        return actions.acknowledge_alarm(svc, caller.user, alarm_id)
    except actions.ActionError as exc:
        return _error(exc)


@router.get("/audit", responses=ERRORS)
def audit(caller: ApiCaller, svc: Services) -> list[dict[str, Any]]:
    """Operator: the audit log, newest first."""
    require_operator(caller)
    with svc.store.session() as session:
        return queries.audit(session)
