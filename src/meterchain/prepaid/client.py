"""PrepaidMeterClient: the typed wrapper over PrepaidMeter, and its deployment.

Units as everywhere on chain: money in integer smallest credit units, time in Unix seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property

from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3.types import TxReceipt

from meterchain.chain.artifacts import load_artifact
from meterchain.chain.client import EnergyCreditClient, EnergyMarketClient, _ContractClient
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import bytes32_to_meter_id, meter_id_to_bytes32
from meterchain.prepaid.rules import CutOffRules, Reason
from meterchain.prepaid.voucher import PrepaidDomain, SignedVoucher


class SupplyState(IntEnum):
    """PrepaidMeter's supply states (0: not enrolled)."""

    NOT_ENROLLED = 0
    SUPPLIED = 1
    GRACE = 2
    CUT_OFF = 3

    @property
    def label(self) -> str:
        """The name `meterchain prepaid status --json` prints."""
        return {0: "not_enrolled", 1: "supplied", 2: "grace", 3: "cut_off"}[int(self)]


@dataclass(frozen=True)
class PrepaidStatus:
    """A meter's prepaid account: credit (market balance less debt), state and why."""

    meter_id: bytes
    credit: int  # smallest units; negative while using emergency credit or in grace
    state: SupplyState
    since: int  # Unix seconds the state began
    reason: Reason
    debt: int  # lent by the float, repaid by the next top-ups
    never_cut: bool

    @property
    def meter(self) -> str:
        return bytes32_to_meter_id(self.meter_id)


@dataclass(frozen=True)
class PrepaidSettings:
    """What a PrepaidMeter is deployed with (amounts in smallest units)."""

    emergency_credit: int = 2_000  # R$ 20.00: ANEEL's initial 20 kWh at about R$ 1/kWh
    advance_buffer: int = 1_000  # R$ 10.00 kept ahead of the next deliveries
    thresholds: tuple[int, ...] = (1_000, 500, 0)  # R$ 10, R$ 5, zero
    rules: CutOffRules = field(default_factory=CutOffRules)
    vending_key: str | None = None


def _meter_bytes(meter_id: str | bytes) -> bytes:
    return meter_id if isinstance(meter_id, bytes) else meter_id_to_bytes32(meter_id)


def _signed_word(data: bytes) -> int:
    return int.from_bytes(data[:32], "big", signed=True)


class PrepaidMeterClient(_ContractClient):
    """PrepaidMeter: enrolment, top-ups, vouchers, assessment, the grid's settings."""

    NAME = "PrepaidMeter"

    def __init__(self, sender: TransactionSender, address: str) -> None:
        super().__init__(sender, address)
        abi = load_artifact(self.NAME).abi
        if abi not in sender.abis:  # decode PrepaidMeter's custom errors
            sender.abis.append(abi)

    @cached_property
    def domain(self) -> PrepaidDomain:
        """The EIP-712 domain vouchers are signed under."""
        return PrepaidDomain(chain_id=self.sender.chain_id, contract_address=self.address)

    @cached_property
    def market(self) -> EnergyMarketClient:
        return EnergyMarketClient(self.sender, str(self._call("market")))

    @cached_property
    def credit(self) -> EnergyCreditClient:
        return EnergyCreditClient(self.sender, str(self._call("credit")))

    # ---- enrolment and the never-cut list

    def enrol(self, meter_id: str | bytes, holder: str, *, never_cut: bool = False) -> TxReceipt:
        """Run a meter prepaid (GRID_ROLE); it must be registered with this contract as owner."""
        fn = self.contract.functions.enrol(
            _meter_bytes(meter_id), to_checksum_address(holder), never_cut
        )
        return self._transact(fn)

    def set_never_cut(self, meter_id: str | bytes, never_cut: bool) -> TxReceipt:
        """Put a meter on the never-cut list or take it off (GRID_ROLE)."""
        return self._transact(
            self.contract.functions.setNeverCut(_meter_bytes(meter_id), never_cut)
        )

    # ---- top-ups

    def top_up(self, meter_id: str | bytes, amount: int, *, approve: bool = True) -> TxReceipt:
        """Top a meter up from the caller's wallet (approving exactly `amount` first)."""
        if approve:
            self.credit.approve(self.address, amount)
        return self._transact(self.contract.functions.topUp(_meter_bytes(meter_id), amount))

    def top_up_with_permit(
        self, meter_id: str | bytes, amount: int, owner: LocalAccount, deadline: int
    ) -> TxReceipt:
        """Top up with an EIP-2612 permit `owner` signs (the caller must be `owner`)."""
        v, r, s = self.credit.sign_permit(owner, self.address, amount, deadline)
        fn = self.contract.functions.topUpWithPermit(
            _meter_bytes(meter_id), amount, deadline, v, r, s
        )
        return self._transact(fn)

    def redeem_voucher(self, meter_id: str | bytes, voucher: SignedVoucher | bytes) -> TxReceipt:
        """Redeem a voucher for `meter_id` (anyone may send it; it works once, for its meter)."""
        packed = voucher.packed if isinstance(voucher, SignedVoucher) else voucher
        fn = self.contract.functions.redeemVoucher(_meter_bytes(meter_id), packed)
        return self._transact(fn)

    def voucher_used(self, serial: int) -> bool:
        return bool(self._call("voucherUsed", serial))

    # ---- assessment

    def assess(self, meter_id: str | bytes) -> TxReceipt:
        """Apply the rules to one meter now (anyone)."""
        return self._transact(self.contract.functions.assess(_meter_bytes(meter_id)))

    def assess_many(self, meter_ids: Sequence[str | bytes], *, key: str | None = None) -> TxReceipt:
        """Apply the rules to several meters in one transaction (revoked or unknown skipped)."""
        fn = self.contract.functions.assessMany([_meter_bytes(m) for m in meter_ids])
        return self._transact(fn, key=key)

    def cut_off(self, meter_id: str | bytes) -> TxReceipt:
        """Ask for a cut-off now; reverts naming why it may not happen."""
        return self._transact(self.contract.functions.cutOff(_meter_bytes(meter_id)))

    # ---- the holder's credit

    def request_refund(self, meter_id: str | bytes, amount: int) -> TxReceipt:
        """The holder asks to withdraw `amount` of the meter's credit (0 cancels)."""
        return self._transact(self.contract.functions.requestRefund(_meter_bytes(meter_id), amount))

    def refund(self, meter_id: str | bytes, to: str) -> TxReceipt:
        """Pay the holder's requested refund once the market's delay has passed."""
        fn = self.contract.functions.refund(_meter_bytes(meter_id), to_checksum_address(to))
        return self._transact(fn)

    # ---- the grid's settings

    def set_rules(self, rules: CutOffRules) -> TxReceipt:
        return self._transact(self.contract.functions.setRules(rules.as_tuple()))

    def set_holidays(self, days: Iterable[int], holiday: bool = True) -> TxReceipt:
        """Mark local day numbers (rules.day_number) as public holidays, or not."""
        return self._transact(self.contract.functions.setHolidays(list(days), holiday))

    def set_credit_settings(
        self, emergency_credit: int, advance_buffer: int, thresholds: Sequence[int]
    ) -> TxReceipt:
        fn = self.contract.functions.setCreditSettings(
            emergency_credit, advance_buffer, list(thresholds)
        )
        return self._transact(fn)

    def set_vending_key(self, key: str) -> TxReceipt:
        return self._transact(self.contract.functions.setVendingKey(to_checksum_address(key)))

    def fund_float(self, amount: int, *, approve: bool = True) -> TxReceipt:
        """Move credit from the caller into the float that pays advances and vouchers."""
        if approve:
            self.credit.approve(self.address, amount)
        return self._transact(self.contract.functions.fundFloat(amount))

    def withdraw_float(self, amount: int, to: str) -> TxReceipt:
        fn = self.contract.functions.withdrawFloat(amount, to_checksum_address(to))
        return self._transact(fn)

    # ---- views

    def status(self, meter_id: str | bytes) -> PrepaidStatus:
        raw = _meter_bytes(meter_id)
        credit, state, since, reason, debt, never_cut = self._call("status", raw)
        return PrepaidStatus(
            raw, int(credit), SupplyState(state), int(since), Reason(reason), int(debt),
            bool(never_cut),
        )  # fmt: skip

    def statuses(self, meter_ids: Iterable[str | bytes]) -> dict[bytes, PrepaidStatus]:
        """Several meters' status in one JSON-RPC batch, by on-chain meter id."""
        ids = [_meter_bytes(m) for m in meter_ids]
        if not ids:
            return {}
        selector = function_signature_to_4byte_selector("status(bytes32)")
        returned = self.sender.call_many([(self.address, selector + i) for i in ids])
        found = {}
        for raw, data in zip(ids, returned, strict=True):
            words = [data[i : i + 32] for i in range(0, 192, 32)]
            found[raw] = PrepaidStatus(
                raw,
                _signed_word(words[0]),
                SupplyState(int.from_bytes(words[1], "big")),
                int.from_bytes(words[2], "big"),
                Reason(int.from_bytes(words[3], "big")),
                int.from_bytes(words[4], "big"),
                bool(int.from_bytes(words[5], "big")),
            )
        return found

    def market_accounts(self, meter_ids: Iterable[str | bytes]) -> dict[bytes, tuple[int, ...]]:
        """EnergyMarket.meterAccount of several meters in one batch: (last settled interval,
        import Wh, export Wh, balance) as of the last settled reading, by on-chain meter id."""
        ids = [_meter_bytes(m) for m in meter_ids]
        if not ids:
            return {}
        selector = function_signature_to_4byte_selector("meterAccount(bytes32)")
        market = self.market.address
        returned = self.sender.call_many([(market, selector + i) for i in ids])
        return {
            raw: tuple(int.from_bytes(data[i : i + 32], "big") for i in range(0, 128, 32))
            for raw, data in zip(ids, returned, strict=True)
        }

    def holder_of(self, meter_id: str | bytes) -> str:
        return str(self._call("holderOf", _meter_bytes(meter_id)))

    def rules(self) -> CutOffRules:
        offset, start, end, weekdays, eve = self._call("rules")
        return CutOffRules(int(offset), int(start), int(end), int(weekdays), bool(eve))

    def thresholds(self) -> list[int]:
        return [int(t) for t in self._call("thresholds")]

    def emergency_credit(self) -> int:
        return int(self._call("emergencyCredit"))

    def advance_buffer(self) -> int:
        return int(self._call("advanceBuffer"))

    def float_balance(self) -> int:
        return int(self._call("floatBalance"))

    def vending_key(self) -> str:
        return str(self._call("vendingKey"))

    def is_holiday(self, day: int) -> bool:
        return bool(self._call("isHoliday", day))

    def holidays_between(self, first_day: int, last_day: int) -> list[int]:
        """The holidays among local days [first_day, last_day] (one JSON-RPC batch)."""
        days = list(range(first_day, last_day + 1))
        selector = function_signature_to_4byte_selector("isHoliday(uint32)")
        calls = [(self.address, selector + d.to_bytes(32, "big")) for d in days]
        returned = self.sender.call_many(calls) if calls else []
        return [d for d, data in zip(days, returned, strict=True) if int.from_bytes(data, "big")]

    def cut_off_allowed_at(self, unix_s: int) -> tuple[bool, Reason]:
        allowed, reason = self._call("cutOffAllowedAt", unix_s)
        return bool(allowed), Reason(reason)

    def hash_voucher(self, signed: SignedVoucher) -> bytes:
        v = signed.voucher
        return bytes(self._call("hashVoucher", v.meter_id, v.amount, v.serial, v.expiry))

    def domain_separator(self) -> bytes:
        return bytes(self._call("domainSeparator"))


def deploy_prepaid(
    sender: TransactionSender,
    market: str,
    settings: PrepaidSettings | None = None,
    *,
    admin: str | None = None,
    grid: str | None = None,
) -> str:
    """Deploy a PrepaidMeter beside `market` and set its thresholds; return its address.

    Roles default to the sender's account. Meters to run prepaid are registered with the
    returned address as their owner, then enrolled (`PrepaidMeterClient.enrol`).
    """
    settings = settings or PrepaidSettings()
    me = sender.address
    artifact = load_artifact("PrepaidMeter")
    arguments = (
        to_checksum_address(market),
        to_checksum_address(admin or me),
        to_checksum_address(grid or me),
        to_checksum_address(settings.vending_key or "0x" + "00" * 20),
        settings.emergency_credit,
        settings.advance_buffer,
        settings.rules.as_tuple(),
    )
    address, _ = sender.deploy(artifact.abi, artifact.bytecode, arguments)
    if settings.thresholds and (grid is None or grid == me):
        client = PrepaidMeterClient(sender, str(address))
        client.set_credit_settings(
            settings.emergency_credit, settings.advance_buffer, settings.thresholds
        )
    return str(address)
