"""Prepaid supply's JSON API: a meter's credit and state, vouchers and top-ups, and the
operator's list and voucher issuing; the same role rules as the pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from meterchain.web import actions, prepaid_actions, queries
from meterchain.web.api import ERRORS, MeterId, _meter
from meterchain.web.deps import ApiCaller, Services, check_csrf, require_operator
from meterchain.web.ledger_api import WRITE_ERRORS, _error
from meterchain.web.ledger_pages import _read

router = APIRouter(prefix="/api", tags=["prepaid"])
Amount = Annotated[
    str, Field(pattern=r"^[0-9]{1,6}([.,][0-9]{1,2})?$", description="Currency units, e.g. 20.00")
]


def _chain(svc: Services) -> Any:
    if svc.chain is None or not svc.chain.has_prepaid:
        raise HTTPException(404, "no PrepaidMeter contract is deployed beside this market")
    return svc.chain


@router.get("/prepaid", responses=ERRORS)
def prepaid_meters(caller: ApiCaller, svc: Services) -> list[dict[str, Any]]:
    """Operator: every prepaid meter's credit, state and since when."""
    require_operator(caller)
    chain = _chain(svc)
    with svc.store.session() as session:
        ids = queries.meter_ids(session)
    found: list[dict[str, Any]] = _read("read the prepaid meters", chain.prepaid_statuses, ids)
    return found


class VoucherRequest(BaseModel):
    meter_id: str = Field(pattern=r"^[0-9A-Za-z_-]{1,32}$")
    amount: Amount
    expiry_days: int | None = Field(
        default=None, ge=1, le=prepaid_actions.MAX_EXPIRY_DAYS, description="Default: never"
    )


@router.post("/prepaid/vouchers", responses=WRITE_ERRORS)
async def issue_voucher(
    request: Request, caller: ApiCaller, svc: Services, body: VoucherRequest
) -> Any:
    """Operator: sign a voucher for a prepaid meter with the vending key; its code is in the
    answer only (it is not stored)."""
    await check_csrf(request, caller)
    require_operator(caller)
    try:
        return await prepaid_actions.issue_voucher(
            svc, caller.user, body.meter_id, body.amount, body.expiry_days
        )
    except actions.ActionError as exc:
        return _error(exc)


@router.get("/meters/{meter_id}/prepaid", responses=ERRORS)
def meter_prepaid(caller: ApiCaller, svc: Services, meter_id: MeterId) -> dict[str, Any]:
    """A meter's prepaid credit (currency units), state (supplied, grace, cut_off) and since
    when, its emergency credit and low-credit thresholds (enrolled false: not prepaid)."""
    _meter(svc, caller, meter_id)
    chain = _chain(svc)
    found: dict[str, Any] = _read("read the prepaid credit", chain.prepaid_status, meter_id)
    return found


class VoucherCode(BaseModel):
    code: str = Field(min_length=1, max_length=200, description="As printed, dashes allowed")


@router.post("/meters/{meter_id}/prepaid/voucher", responses=WRITE_ERRORS)
async def redeem_voucher(
    request: Request, caller: ApiCaller, svc: Services, meter_id: MeterId, body: VoucherCode
) -> Any:
    """Redeem a voucher on the meter: the credit after it, and whether it reconnected."""
    await check_csrf(request, caller)
    _meter(svc, caller, meter_id)
    try:
        return await prepaid_actions.redeem_voucher(svc, caller.user, meter_id, body.code)
    except actions.ActionError as exc:
        return _error(exc)


class TopUp(BaseModel):
    amount: Amount


@router.post("/meters/{meter_id}/prepaid/top-up", responses=WRITE_ERRORS)
async def top_up(
    request: Request, caller: ApiCaller, svc: Services, meter_id: MeterId, body: TopUp
) -> Any:
    """Top the meter up from the household's wallet (a permit of its credit)."""
    await check_csrf(request, caller)
    _meter(svc, caller, meter_id)
    try:
        return await prepaid_actions.top_up(svc, caller.user, meter_id, body.amount)
    except actions.ActionError as exc:
        return _error(exc)
