"""The ledger's changes people make from the web, shared by pages and API: retiring a
certificate, buying and claiming fund shares, collecting the plant's revenue, recording and
paying a statement. Each is validated, carried out on chain, and written to the audit log
with who made it, what was there before and what the chain did."""

from __future__ import annotations

from typing import Any

from meterchain.chain.ledger_clients import MAX_TEXT_BYTES
from meterchain.ledger.period import Month, PeriodError, parse_time
from meterchain.web.actions import ActionError, _on_chain, audit, chain_of
from meterchain.web.security import User
from meterchain.web.services import WebServices

MAX_SHARES = 1_000_000


def month_of(svc: WebServices, period: str) -> Month:
    """A YYYY-MM period in the community's time zone, or a 422 naming the field."""
    try:
        return Month.parse(period, svc.settings.timezone)
    except PeriodError as exc:
        raise ActionError(str(exc), field="period", status=422) from None


def _text(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise ActionError(f"{name}: fill it in", field=name, status=422)
    if len(value.encode("utf-8")) > MAX_TEXT_BYTES:
        raise ActionError(
            f"{name}: at most {MAX_TEXT_BYTES} bytes; shorten it", field=name, status=422
        )
    return value


def _time(svc: WebServices, name: str, value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return parse_time(value, svc.settings.timezone)
    except PeriodError as exc:
        raise ActionError(f"{name}: {exc}", field=name, status=422) from None


async def retire_certificate(
    svc: WebServices,
    actor: User,
    meter_id: str,
    certificate_id: int,
    *,
    beneficiary: str,
    purpose: str,
    wh: int | None = None,
    period_start: str | None = None,
    period_end: str | None = None,
) -> dict[str, Any]:
    """Retire (all, or `wh` of) a certificate the household's wallet holds, for a
    beneficiary's consumption in a period (default: the certificate's own interval)."""
    chain = chain_of(svc)
    beneficiary, purpose = _text("beneficiary", beneficiary), _text("purpose", purpose)
    if certificate_id <= 0 or certificate_id >= 2**96:
        raise ActionError("certificate_id: not a certificate id", field="certificate_id")
    if wh is not None and wh <= 0:
        raise ActionError("wh: a positive number of Wh (empty: all)", field="wh", status=422)
    start = _time(svc, "period_start", period_start)
    end = _time(svc, "period_end", period_end)
    interval = certificate_id & (2**64 - 1)
    start = interval if start is None else start
    end = start + chain.interval_seconds() if end is None else end
    if end <= start:
        raise ActionError("period_end: must come after period_start", field="period_end")
    result, held, amount = await _on_chain(
        f"retire certificate {certificate_id}",
        lambda: chain.retire_certificate(
            meter_id, certificate_id, wh, beneficiary=beneficiary, purpose=purpose,
            period_start=start, period_end=end,
        ),
    )  # fmt: skip
    after = {
        "meter_id": meter_id,
        "wh": amount,
        "beneficiary": beneficiary,
        "purpose": purpose,
        "period_start": start,
        "period_end": end,
        "tx": result.tx_hash,
    }
    audit(
        svc, actor, "certificate.retire", f"certificate:{certificate_id}", {"held_wh": held}, after
    )
    return {"certificate_id": certificate_id, **after}


async def fund_buy(
    svc: WebServices, actor: User, meter_id: str, fund: str, shares: int
) -> dict[str, Any]:
    """Buy shares of a fund's campaign from the household's wallet."""
    chain = chain_of(svc)
    if not 1 <= shares <= MAX_SHARES:
        raise ActionError(f"shares: a whole number from 1 to {MAX_SHARES}", field="shares")
    result = await _on_chain(f"buy {shares} shares", lambda: chain.fund_buy(fund, meter_id, shares))
    after = {"meter_id": meter_id, "shares": shares, "tx": result.tx_hash}
    audit(svc, actor, "fund.buy", f"fund:{fund}", None, after)
    return {"fund": fund, **after}


async def fund_claim(svc: WebServices, actor: User, meter_id: str, fund: str) -> dict[str, Any]:
    """Claim what the household's shares earned (nothing due: nothing sent)."""
    chain = chain_of(svc)
    units, result = await _on_chain("claim the revenue", lambda: chain.fund_claim(fund, meter_id))
    after = {
        "meter_id": meter_id,
        "claimed": str(chain.to_currency(units)),
        "claimed_units": units,
        "tx": None if result is None else result.tx_hash,
    }
    if result is not None:
        audit(svc, actor, "fund.claim", f"fund:{fund}", None, after)
    return {"fund": fund, **after}


async def fund_collect(svc: WebServices, actor: User, fund: str) -> dict[str, Any]:
    """One collection step of the plant's revenue into the fund."""
    chain = chain_of(svc)
    done = await _on_chain("collect the plant's revenue", lambda: chain.fund_collect(fund))
    after = {"collected": bool(done)}
    if done:
        audit(svc, actor, "fund.collect", f"fund:{fund}", None, after)
    return {"fund": fund, **after}


async def record_statement(
    svc: WebServices, actor: User, meter_id: str, period: str
) -> dict[str, Any]:
    """The utility records a statement's hash and what it says is owed."""
    chain = chain_of(svc)
    month = month_of(svc, period)
    result, document = await _on_chain(
        f"record the statement of {meter_id} for {month.label}",
        lambda: chain.record_statement(meter_id, month),
    )
    after = {
        "statement_hash": document["statement_hash"],
        "owed_units": document["totals"]["owed_units"],
        "tx": result.tx_hash,
    }
    audit(svc, actor, "statement.record", f"statement:{meter_id}:{month.label}", None, after)
    return {"meter_id": meter_id, "period": month.label, **after}


async def pay_statement(
    svc: WebServices, actor: User, meter_id: str, period: str
) -> dict[str, Any]:
    """Pay what a recorded statement says is outstanding, from the household's wallet."""
    chain = chain_of(svc)
    month = month_of(svc, period)
    units, result = await _on_chain(
        f"pay the statement of {meter_id} for {month.label}",
        lambda: chain.pay_statement(meter_id, month),
    )
    after = {"paid_units": units, "paid": str(chain.to_currency(units)), "tx": result.tx_hash}
    audit(svc, actor, "statement.pay", f"statement:{meter_id}:{month.label}", None, after)
    return {"meter_id": meter_id, "period": month.label, **after}
