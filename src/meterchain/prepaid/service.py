"""What the command line and the web page call for prepaid supply: status, top-ups, vouchers.

Money crosses this boundary in currency units (e.g. "20.00" BRL) and becomes smallest credit
units once, here. Every function answers with plain data (`as_json()`), so a web handler can
return it as is:

    service = PrepaidService(PrepaidMeterClient(sender, address))
    service.status("30010006").as_json()
    # {"meter_id": "30010006", "credit": 12.5, "state": "supplied", "since": "2026-…Z"}
    service.top_up("30010006", "20.00", payer=household_account)
    service.redeem_voucher("30010006", "AEAJ4-…")   # any account may relay a voucher
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from eth_account.signers.local import LocalAccount

from meterchain.chain.signing import bytes32_to_meter_id
from meterchain.chain.units import from_units, to_units
from meterchain.prepaid.client import PrepaidMeterClient, PrepaidStatus, SupplyState
from meterchain.prepaid.voucher import (
    SignedVoucher,
    VoucherError,
    decode_code,
    encode_code,
    new_voucher,
    sign_voucher,
)

PERMIT_LIFETIME_S = 3600
SERIAL_BITS = 63


class PrepaidError(ValueError):
    """A prepaid request that cannot be carried out as given (one line: what, and what to do)."""


@dataclass(frozen=True)
class CreditView:
    """A meter's prepaid credit as people read it: currency units, a state name, a time."""

    meter_id: str
    credit: Decimal
    state: str  # "supplied" | "grace" | "cut_off"
    since: datetime

    def as_json(self) -> dict[str, Any]:
        """The object `meterchain prepaid status --json` prints."""
        return {
            "meter_id": self.meter_id,
            "credit": float(self.credit),
            "state": self.state,
            "since": self.since.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class TopUpResult:
    """A top-up on chain and the meter's credit after it."""

    tx_hash: str
    amount: Decimal
    repaid: Decimal  # of the amount, what paid back emergency credit and grace
    reconnected: bool
    after: CreditView

    def as_json(self) -> dict[str, Any]:
        return {
            "tx_hash": self.tx_hash,
            "amount": float(self.amount),
            "repaid": float(self.repaid),
            "reconnected": self.reconnected,
            **{f"after_{k}" if k != "meter_id" else k: v for k, v in self.after.as_json().items()},
        }


@dataclass(frozen=True)
class IssuedVoucher:
    """A voucher the vending key signed, and its printed code."""

    code: str
    signed: SignedVoucher
    amount: Decimal

    def as_json(self) -> dict[str, Any]:
        v = self.signed.voucher
        return {
            "meter_id": v.meter,
            "amount": float(self.amount),
            "serial": v.serial,
            "expiry": v.expiry,
            "code": self.code,
        }


class PrepaidService:
    """Prepaid supply for people: the CLI's and the web page's entry point."""

    def __init__(self, prepaid: PrepaidMeterClient) -> None:
        self.prepaid = prepaid

    @property
    def decimals(self) -> int:
        return self.prepaid.credit.decimals

    def view(self, status: PrepaidStatus) -> CreditView:
        if status.state is SupplyState.NOT_ENROLLED:
            raise PrepaidError(
                f"meter {status.meter} is not prepaid: the utility enrols it with "
                "`meterchain prepaid enrol`"
            )
        return CreditView(
            meter_id=status.meter,
            credit=from_units(status.credit, self.decimals),
            state=status.state.label,
            since=datetime.fromtimestamp(status.since, UTC),
        )

    def status(self, meter_id: str) -> CreditView:
        """The meter's credit, state and since when."""
        return self.view(self.prepaid.status(meter_id))

    def top_up(
        self, meter_id: str, amount: Decimal | str | float, payer: LocalAccount
    ) -> TopUpResult:
        """Top up from `payer`'s wallet with an EIP-2612 permit (no separate approval);
        `amount` in currency units. The prepaid client must send as `payer`."""
        units = self._units(amount)
        self.status(meter_id)  # not enrolled: say so before anything is signed
        if self.prepaid.sender.address != payer.address:
            raise PrepaidError(
                f"the top-up must be sent by the payer {payer.address}, not "
                f"{self.prepaid.sender.address}: a permit only lets the contract take the "
                "sender's own credit"
            )
        held = self.prepaid.credit.balance_of(payer.address)
        if held < units:
            raise PrepaidError(
                f"wallet {payer.address} holds {from_units(held, self.decimals)}, less than "
                f"the {from_units(units, self.decimals)} to top up: buy credit first"
            )
        deadline = int(time.time()) + PERMIT_LIFETIME_S
        receipt = self.prepaid.top_up_with_permit(meter_id, units, payer, deadline)
        return self._result(meter_id, receipt)

    def redeem_voucher(self, meter_id: str, code: str) -> TopUpResult:
        """Redeem a printed voucher code for `meter_id` (any account may send it)."""
        try:
            signed = decode_code(code)
        except VoucherError as exc:
            raise PrepaidError(str(exc)) from None
        if signed.voucher.meter != meter_id:
            raise PrepaidError(
                f"this voucher is for meter {signed.voucher.meter}, not {meter_id}: redeem it "
                "on the meter it was sold for"
            )
        receipt = self.prepaid.redeem_voucher(meter_id, signed)
        return self._result(meter_id, receipt)

    def issue_voucher(
        self,
        meter_id: str,
        amount: Decimal | str | float,
        vending_key: LocalAccount,
        *,
        serial: int | None = None,
        expiry: int = 0,
    ) -> IssuedVoucher:
        """Sign a voucher with the utility's vending key (offline: nothing is sent). Without
        `serial` a random 63-bit one is drawn, so two vending points never collide."""
        key = self.prepaid.vending_key()
        if key.lower() != vending_key.address.lower():
            raise PrepaidError(
                f"{vending_key.address} is not the vending key of PrepaidMeter "
                f"{self.prepaid.address} ({key}): its vouchers would be refused"
            )
        chosen = secrets.randbits(SERIAL_BITS) if serial is None else serial
        try:
            voucher = new_voucher(meter_id, self._units(amount), chosen, expiry)
        except VoucherError as exc:
            raise PrepaidError(str(exc)) from None
        signed = sign_voucher(self.prepaid.domain, voucher, vending_key)
        return IssuedVoucher(encode_code(signed), signed, Decimal(str(amount)))

    def _units(self, amount: Decimal | str | float) -> int:
        try:
            units = to_units(amount, self.decimals)
        except ValueError as exc:
            raise PrepaidError(f"amount {amount!r}: {exc}") from None
        if units <= 0:
            raise PrepaidError(f"amount {amount!r} is not a positive amount of credit")
        return units

    def _result(self, meter_id: str, receipt: Any) -> TopUpResult:
        topped = self.prepaid.events_in(receipt, "ToppedUp")
        args = topped[0]["args"] if topped else {"amount": 0, "repaid": 0}
        reconnected = any(
            bytes32_to_meter_id(bytes(e["args"]["meterId"])) == meter_id
            for e in self.prepaid.events_in(receipt, "Reconnect")
        )
        return TopUpResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            amount=from_units(int(args["amount"]), self.decimals),
            repaid=from_units(int(args["repaid"]), self.decimals),
            reconnected=reconnected,
            after=self.status(meter_id),
        )
