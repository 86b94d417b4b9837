"""Prepaid supply's pages (issue 10): a household's credit and supply state (supplied, grace,
cut off, and since when) with its voucher and top-up forms and its low-credit alarms; the
operator's list of prepaid meters and the voucher form (the code is shown once)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meterchain.web import actions, prepaid_actions, queries
from meterchain.web.deps import PageCaller, Services, check_csrf, require_operator
from meterchain.web.ledger_pages import _back, _flash, _form, _read
from meterchain.web.pages import _meter_or_404, render

router = APIRouter(include_in_schema=False)


def _deployed(svc: Services) -> bool:
    return svc.chain is not None and svc.chain.has_prepaid


@router.get("/prepaid", response_class=HTMLResponse)
def prepaid_all(request: Request, caller: PageCaller, svc: Services) -> Response:
    """The operator's prepaid meters; a prosumer goes to their own."""
    if not caller.user.is_operator:
        return RedirectResponse(f"/meters/{caller.user.meter_id}/prepaid", status_code=303)
    return _operator_page(request, caller, svc, None)


def _operator_page(
    request: Request, caller: PageCaller, svc: Services, voucher: dict[str, Any] | None
) -> HTMLResponse:
    chain = svc.chain
    if chain is None or not chain.has_prepaid:
        return render(request, caller, "prepaid_all.html", deployed=False, **_flash(request))
    with svc.store.session() as session:
        ids = queries.meter_ids(session)
    statuses = _read("read the prepaid meters", chain.prepaid_statuses, ids)
    return render(
        request, caller, "prepaid_all.html", deployed=True, statuses=statuses, voucher=voucher,
        can_issue=chain.can_issue_vouchers, **_flash(request),
    )  # fmt: skip


@router.post("/prepaid/vouchers", response_class=HTMLResponse)
async def voucher_issue_form(request: Request, caller: PageCaller, svc: Services) -> Response:
    """Issue a voucher: the page shows its code once (it is not stored)."""
    await check_csrf(request, caller)
    require_operator(caller)
    form = await _form(request)
    meter_id = form.get("meter_id", "").strip()
    days = form.get("expiry_days", "").strip()
    try:
        if not meter_id:
            raise actions.ActionError("meter_id: choose a meter", field="meter_id", status=422)
        if days and not days.isdigit():
            raise actions.ActionError(
                "expiry_days: a whole number of days (empty: never)", field="expiry_days"
            )
        voucher = await prepaid_actions.issue_voucher(
            svc, caller.user, meter_id, form.get("amount", ""), int(days) if days else None
        )
    except actions.ActionError as exc:
        return _back("/prepaid", exc, "#voucher")
    return _operator_page(request, caller, svc, voucher)


@router.get("/meters/{meter_id}/prepaid", response_class=HTMLResponse)
def household_prepaid(
    request: Request, caller: PageCaller, svc: Services, meter_id: str
) -> HTMLResponse:
    """A household's prepaid credit, state and since when; vouchers, top-ups, warnings."""
    meter = _meter_or_404(svc, caller, meter_id)
    with svc.store.session() as session:
        warnings = queries.alarms_of_kinds(session, meter_id, "prepaid-")
    chain = svc.chain
    if chain is None or not chain.has_prepaid:
        return render(
            request, caller, "prepaid.html", meter=meter, deployed=False, alarms=warnings,
            **_flash(request),
        )  # fmt: skip
    status = _read("read the prepaid credit", chain.prepaid_status, meter_id)
    return render(
        request, caller, "prepaid.html", meter=meter, deployed=True, status=status,
        alarms=warnings, can_sign=chain.has_wallet(meter_id),
        wallet_credit=_read("read the wallet", chain.wallet_credit, meter_id), **_flash(request),
    )  # fmt: skip


async def _household_form(
    request: Request,
    caller: PageCaller,
    svc: Services,
    meter_id: str,
    act: Callable[[dict[str, str]], Awaitable[object]],
    *,
    anchor: str,
    done: str,
) -> Response:
    """A household's prepaid form: checked, carried out by `act(form)`, back to its page."""
    await check_csrf(request, caller)
    _meter_or_404(svc, caller, meter_id)
    form = await _form(request)
    back = f"/meters/{meter_id}/prepaid"
    try:
        await act(form)
    except actions.ActionError as exc:
        return _back(back, exc, anchor)
    return RedirectResponse(f"{back}?done={done}", status_code=303)


@router.post("/meters/{meter_id}/prepaid/voucher")
async def voucher_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str
) -> Response:
    async def redeem(form: dict[str, str]) -> None:
        await prepaid_actions.redeem_voucher(svc, caller.user, meter_id, form.get("code", ""))

    return await _household_form(
        request, caller, svc, meter_id, redeem, anchor="#voucher", done="voucher"
    )


@router.post("/meters/{meter_id}/prepaid/top-up")
async def top_up_form(
    request: Request, caller: PageCaller, svc: Services, meter_id: str
) -> Response:
    async def top_up(form: dict[str, str]) -> None:
        await prepaid_actions.top_up(svc, caller.user, meter_id, form.get("amount", ""))

    return await _household_form(
        request, caller, svc, meter_id, top_up, anchor="#top-up", done="topped_up"
    )
