"""Prepaid changes people make from the web, shared by pages and API: a household redeems a
voucher or tops up from its wallet; the utility issues vouchers. Each is validated, carried
out through `PrepaidService` (in `chain_actions`), and written to the audit log. A voucher's
code is shown once and never stored: the log keeps its serial and amount."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from meterchain.web.actions import ActionError, _on_chain, audit, chain_of
from meterchain.web.security import User
from meterchain.web.services import WebServices

MAX_AMOUNT = Decimal(100_000)  # currency units in one top-up or voucher
MAX_EXPIRY_DAYS = 3650


def amount_of(text: str | float | Decimal, name: str = "amount") -> Decimal:
    """A positive amount of currency (a comma or a point before the cents)."""
    raw = str(text).strip().replace(",", ".")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ActionError(f"{name}: '{text}' is not an amount", field=name, status=422) from None
    if not value.is_finite() or value <= 0 or value > MAX_AMOUNT:
        raise ActionError(
            f"{name}: an amount above 0 and at most {MAX_AMOUNT}", field=name, status=422
        )
    if value != value.quantize(Decimal("0.01")):
        raise ActionError(f"{name}: at most two decimals (cents)", field=name, status=422)
    return value


def _credit_after(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = result.as_json()
    return {
        "amount": data["amount"],
        "repaid": data["repaid"],
        "reconnected": data["reconnected"],
        "credit": data["after_credit"],
        "state": data["after_state"],
        "tx": data["tx_hash"],
    }


async def redeem_voucher(svc: WebServices, actor: User, meter_id: str, code: str) -> dict[str, Any]:
    """Redeem a printed voucher code on the household's meter."""
    chain = chain_of(svc)
    code = code.strip()
    if not code or len(code) > 200:
        raise ActionError("code: type the voucher's code as printed", field="code", status=422)
    before = await _on_chain("read the prepaid credit", lambda: chain.prepaid_status(meter_id))
    result = await _on_chain("redeem the voucher", lambda: chain.redeem_voucher(meter_id, code))
    after = _credit_after(result)
    audit(
        svc, actor, "prepaid.voucher", f"meter:{meter_id}",
        {"credit": before["credit"], "state": before["state"]}, after,
    )  # fmt: skip
    return {"meter_id": meter_id, **after}


async def top_up(
    svc: WebServices, actor: User, meter_id: str, amount: str | float | Decimal
) -> dict[str, Any]:
    """Top the household's meter up from its wallet (a permit of its credit)."""
    chain = chain_of(svc)
    value = amount_of(amount)
    before = await _on_chain("read the prepaid credit", lambda: chain.prepaid_status(meter_id))
    result = await _on_chain("top up", lambda: chain.top_up(meter_id, value))
    after = _credit_after(result)
    audit(
        svc, actor, "prepaid.top_up", f"meter:{meter_id}",
        {"credit": before["credit"], "state": before["state"]}, after,
    )  # fmt: skip
    return {"meter_id": meter_id, **after}


async def issue_voucher(
    svc: WebServices,
    actor: User,
    meter_id: str,
    amount: str | float | Decimal,
    expiry_days: int | None = None,
) -> dict[str, Any]:
    """The utility signs a voucher for a prepaid meter with its vending key (nothing is sent
    to the chain: the household redeems it)."""
    chain = chain_of(svc)
    value = amount_of(amount)
    expiry = 0
    if expiry_days is not None:
        if not 1 <= expiry_days <= MAX_EXPIRY_DAYS:
            raise ActionError(
                f"expiry_days: from 1 to {MAX_EXPIRY_DAYS} (empty: never)",
                field="expiry_days",
                status=422,
            )
        now = await _on_chain("read the chain's time", chain.chain_time)
        expiry = now + expiry_days * 86_400
    issued = await _on_chain(
        f"issue a voucher for meter {meter_id}",
        lambda: chain.issue_voucher(meter_id, value, expiry),
    )
    data: dict[str, Any] = issued.as_json()
    audit(
        svc, actor, "prepaid.voucher_issue", f"meter:{meter_id}", None,
        {"amount": data["amount"], "serial": str(data["serial"]), "expiry": data["expiry"]},
    )  # fmt: skip
    return data
