"""Every chain call the web interface makes, in one place, through the typed chain clients.

The market's (registering, rotating and revoking meters with the registrar role, setting the
tariffs with the grid role, reading balances), and, when the deployment has them, the ledger's
applications (certificates, the community plant's funds, monthly statements) and prepaid supply
(status, top-ups, vouchers). A part the deployment lacks is None, and asking for it raises
`NotDeployed`, which the pages turn into "not deployed here".

Households act through the wallets this server keeps for them (`Wallets`, by meter id): a
certificate retired, fund shares bought and claimed, a statement paid, a prepaid top-up. The
utility's own powers (recording statements, issuing vouchers with the vending key, relaying a
voucher) use the operator's account. The calls block (web3), so the app runs them in a
thread. When the contracts' API changes, this is the one module of the web to adapt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from meterchain.agents.monitor import PrepaidStateChange
from meterchain.chain.artifacts import all_abis
from meterchain.chain.client import EnergyMarketClient, MeterKind
from meterchain.chain.ledger_clients import (
    BillingClient,
    CommunityFundClient,
    EnergyCertificatesClient,
)
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import bytes32_to_meter_id, meter_id_to_bytes32
from meterchain.chain.units import from_units, price_to_units
from meterchain.ledger.certificates import CertificateBook, read_book
from meterchain.ledger.community import collect
from meterchain.ledger.exports import ExportContext, energytag_bundles, irec_csv
from meterchain.ledger.fund import fund_status
from meterchain.ledger.period import Month
from meterchain.ledger.statements import (
    build_statement,
    read_statement_inputs,
    record_statement,
)
from meterchain.prepaid.client import PrepaidMeterClient, PrepaidStatus, SupplyState
from meterchain.prepaid.rules import Reason
from meterchain.prepaid.service import IssuedVoucher, PrepaidService, TopUpResult

KINDS = {kind.name.lower().replace("_", "-"): kind for kind in MeterKind}
PERMIT_LIFETIME_S = 3600


class NotDeployed(Exception):
    """The deployment has no contract for what was asked (or this server lacks a key for it)."""


class NoWallet(Exception):
    """This server keeps no wallet for the household that would have to sign."""


@dataclass(frozen=True)
class ChainResult:
    """What a transaction did: its hash and block, for the audit log and the page."""

    tx_hash: str
    block: int


def _result(receipt: TxReceipt) -> ChainResult:
    return ChainResult("0x" + bytes(receipt["transactionHash"]).hex(), int(receipt["blockNumber"]))


@dataclass
class LedgerContracts:
    """The optional contracts beside the market (None or empty: not deployed)."""

    certificates: EnergyCertificatesClient | None = None
    billing: BillingClient | None = None
    funds: Sequence[CommunityFundClient] = ()
    prepaid: PrepaidMeterClient | None = None
    vending_key: LocalAccount | None = None  # the utility's key that signs vouchers
    from_block: int = 0  # the first block that can hold their events


def ledger_contracts(
    contracts: Mapping[str, str],
    sender: TransactionSender,
    *,
    from_block: int = 0,
    vending_key: LocalAccount | None = None,
) -> LedgerContracts:
    """The ledger and prepaid contracts a deployment names (by contract name), called by
    `sender` (the operator); the community funds are every `CommunityFund…` entry."""
    return LedgerContracts(
        certificates=(
            EnergyCertificatesClient(sender, contracts["EnergyCertificates"])
            if "EnergyCertificates" in contracts
            else None
        ),
        billing=BillingClient(sender, contracts["Billing"]) if "Billing" in contracts else None,
        funds=[
            CommunityFundClient(sender, address)
            for name, address in sorted(contracts.items())
            if name.startswith("CommunityFund")
        ],
        prepaid=(
            PrepaidMeterClient(sender, contracts["PrepaidMeter"])
            if "PrepaidMeter" in contracts
            else None
        ),
        vending_key=vending_key,
        from_block=from_block,
    )


def load_wallets(directory: Path, password: str) -> dict[str, LocalAccount]:
    """The households' wallets this server may sign with: every `METER_ID.json` keystore in
    `directory` (one password for all of them)."""
    from meterchain.chain.keystore import load_keystore

    if not directory.is_dir():
        raise NotADirectoryError(f"--wallets {directory} is not a directory of keystores")
    return {path.stem: load_keystore(path, password) for path in sorted(directory.glob("*.json"))}


@dataclass
class _BookCache:
    block: int = -1
    book: CertificateBook = field(default_factory=CertificateBook)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ChainActions:
    """The operator's chain powers and the households' wallets, through the typed clients."""

    def __init__(
        self,
        market: EnergyMarketClient,
        ledger: LedgerContracts | None = None,
        wallets: Mapping[str, LocalAccount] | None = None,
    ) -> None:
        self.market = market
        self.ledger = ledger or LedgerContracts()
        self.wallets = dict(wallets or {})  # meter id -> the household's account
        self._senders: dict[str, TransactionSender] = {}
        self._senders_lock = threading.Lock()
        self._book = _BookCache()

    @property
    def decimals(self) -> int:
        return self.market.credit.decimals

    def to_currency(self, units: int) -> Decimal:
        return from_units(units, self.decimals)

    # ---- meters and tariffs (the registrar and the grid) ----------------------------------

    def register_meter(
        self,
        meter_id: str,
        signer: str,
        owner: str,
        kind: str,
        *,
        max_power_w: int = 15_000,
        import_wh: int = 0,
        export_wh: int = 0,
    ) -> ChainResult:
        """Register the meter, put it in this market and record its registers at
        installation as its baseline (the end of the interval before now)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        registry = self.market.registry
        receipt = registry.register_meter(meter_id, signer, owner, KINDS[kind], max_power_w)
        registry.assign_market(meter_id, self.market.address)
        step = self.market.interval_seconds
        baseline = int(time.time()) // step * step - step
        self.market.set_baseline(meter_id, baseline, import_wh, export_wh, "enrolled")
        return _result(receipt)

    def rotate_signer(self, meter_id: str, new_signer: str) -> ChainResult:
        return _result(self.market.registry.rotate_signer(meter_id, new_signer))

    def revoke_meter(self, meter_id: str) -> ChainResult:
        return _result(self.market.registry.revoke_meter(meter_id))

    def signer_of(self, meter_id: str) -> tuple[str, bool]:
        return self.market.registry.signer_of(meter_id)

    def owner_of(self, meter_id: str) -> str:
        """The meter's owner in the registry (where its certificates are minted)."""
        return str(self.market.registry.meter(meter_id).owner)

    def set_tariffs(self, retail_price: float, feed_in_price: float) -> ChainResult:
        """Tariffs in currency units per kWh, converted to the token's smallest units."""
        retail = price_to_units(retail_price, self.decimals)
        feed_in = price_to_units(feed_in_price, self.decimals)
        return _result(self.market.set_tariffs(retail, feed_in))

    def tariffs(self) -> tuple[Decimal, Decimal]:
        retail, feed_in = self.market.tariffs()
        return from_units(retail, self.decimals), from_units(feed_in, self.decimals)

    def balances(self, meter_ids: list[str]) -> dict[str, int]:
        """Internal balances in the market, in smallest units, by meter id."""
        raw = self.market.balances(meter_ids)
        return {m: raw[meter_id_to_bytes32(m)] for m in meter_ids}

    # ---- households' wallets --------------------------------------------------------------

    def has_wallet(self, meter_id: str) -> bool:
        return meter_id in self.wallets

    def wallet_address(self, meter_id: str) -> str | None:
        wallet = self.wallets.get(meter_id)
        return None if wallet is None else str(wallet.address)

    def _wallet(self, meter_id: str) -> tuple[LocalAccount, TransactionSender]:
        wallet = self.wallets.get(meter_id)
        if wallet is None:
            raise NoWallet(
                f"this server keeps no wallet for meter {meter_id}: sign it with your own key "
                "from the command line (see docs/ledger.md and docs/prepaid.md)"
            )
        with self._senders_lock:
            sender = self._senders.get(meter_id)
            if sender is None:
                sender = TransactionSender(self.market.w3, wallet, abis=all_abis())
                self._senders[meter_id] = sender
        return wallet, sender

    def chain_time(self) -> int:
        """The latest block's time (Unix seconds): what permits and vouchers are checked by."""
        return int(self.market.w3.eth.get_block("latest")["timestamp"])

    def _deadline(self) -> int:
        return self.chain_time() + PERMIT_LIFETIME_S

    def wallet_credit(self, meter_id: str) -> Decimal | None:
        """What the household's wallet holds (None: no wallet here)."""
        address = self.wallet_address(meter_id)
        if address is None:
            return None
        return from_units(self.market.credit.balance_of(address), self.decimals)

    # ---- certificates ---------------------------------------------------------------------

    def _certificates(self) -> EnergyCertificatesClient:
        if self.ledger.certificates is None:
            raise NotDeployed("no EnergyCertificates contract is deployed beside this market")
        return self.ledger.certificates

    @property
    def has_certificates(self) -> bool:
        return self.ledger.certificates is not None

    def certificate_book(self) -> CertificateBook:
        """Every certificate, holding and retirement, rebuilt from the events when a block
        has been added since the last time."""
        client = self._certificates()
        latest = int(self.market.w3.eth.block_number)
        with self._book.lock:
            if self._book.block != latest:
                self._book.book = read_book(
                    client,
                    from_block=self.ledger.from_block,
                    interval_s=self.market.interval_seconds,
                )
                self._book.block = latest
            return self._book.book

    def interval_seconds(self) -> int:
        return int(self.market.interval_seconds)

    def retire_certificate(
        self,
        meter_id: str,
        certificate_id: int,
        wh: int | None,
        *,
        beneficiary: str,
        purpose: str,
        period_start: int,
        period_end: int,
    ) -> tuple[ChainResult, int, int]:
        """Retire `wh` (None: all) of a certificate the household's wallet holds, for
        `beneficiary`: (the transaction, Wh held before, Wh retired)."""
        client = self._certificates()
        wallet, sender = self._wallet(meter_id)
        held = client.balance_of(wallet.address, certificate_id)
        amount = held if wh is None else wh
        if held == 0 or amount > held:
            raise ValueError(
                f"the wallet of meter {meter_id} holds {held} Wh of certificate "
                f"{certificate_id}, not {amount or 'any'}: only what it holds can be retired"
            )
        receipt = client.with_sender(sender).retire(
            certificate_id, amount, beneficiary=beneficiary, period_start=period_start,
            period_end=period_end, purpose=purpose,
        )  # fmt: skip
        self._book.block = -1
        return _result(receipt), held, amount

    def export_certificates(self, month: Month, export_format: str) -> str:
        """The month's certificates as EnergyTag bundles (JSON text) or I-REC style CSV."""
        import json

        client = self._certificates()
        context = ExportContext(
            self.market.sender.chain_id, client.address, month.start, month.end, month.timezone
        )
        book = self.certificate_book()
        if export_format == "energytag":
            return json.dumps(energytag_bundles(book, context), indent=2, ensure_ascii=False)
        return irec_csv(book, context)

    # ---- the community plant's funds ------------------------------------------------------

    @property
    def funds(self) -> Sequence[CommunityFundClient]:
        return self.ledger.funds

    def _fund(self, address: str) -> CommunityFundClient:
        for fund in self.ledger.funds:
            if fund.address.lower() == address.lower():
                return fund
        raise NotDeployed(f"no community fund at {address} in this deployment")

    def fund_statuses(self, account: str | None) -> list[dict[str, Any]]:
        """Each fund's campaign and revenue (smallest units), and `account`'s part of it."""
        found = []
        now = self.chain_time() if self.ledger.funds else 0
        for fund in self.ledger.funds:
            status = fund_status(fund, account)
            status["symbol"] = str(fund.contract.functions.symbol().call())
            status["name"] = str(fund.contract.functions.name().call())
            status["open"] = now < fund.deadline and status["raised_units"] < fund.cap
            status["goal_reached"] = status["raised_units"] >= fund.goal
            found.append(status)
        return found

    def fund_buy(self, address: str, meter_id: str, shares: int) -> ChainResult:
        """Buy shares from the household's wallet with a permit of its credit."""
        fund = self._fund(address)
        wallet, sender = self._wallet(meter_id)
        cost = shares * fund.price_per_share
        held = fund.credit.balance_of(wallet.address)
        if held < cost:
            raise ValueError(
                f"{shares} shares cost {self.to_currency(cost)}; the wallet of meter {meter_id} "
                f"holds {self.to_currency(held)}"
            )
        receipt = fund.with_sender(sender).buy_with_permit(shares, wallet, self._deadline())
        return _result(receipt)

    def fund_claim(self, address: str, meter_id: str) -> tuple[int, ChainResult | None]:
        """Claim what the wallet's shares earned: (units received, the transaction)."""
        fund = self._fund(address)
        wallet, sender = self._wallet(meter_id)
        due = fund.claimable(wallet.address)
        if due == 0:
            return 0, None
        return due, _result(fund.with_sender(sender).claim())

    def fund_collect(self, address: str) -> bool:
        """One collection step for the plant (the operator's account; anyone may)."""
        return collect(self._fund(address))

    # ---- statements -----------------------------------------------------------------------

    def _billing(self) -> BillingClient:
        if self.ledger.billing is None:
            raise NotDeployed("no Billing contract is deployed beside this market")
        return self.ledger.billing

    @property
    def has_billing(self) -> bool:
        return self.ledger.billing is not None

    def statement(self, meter_id: str, month: Month) -> dict[str, Any]:
        """The meter's statement for `month`, from the chain's events (with what Billing
        recorded and what was paid)."""
        billing = self._billing()
        inputs = read_statement_inputs(
            self.market,
            meter_id,
            month,
            certificates=self.ledger.certificates,
            funds=self.ledger.funds,
            billing=billing,
            from_block=self.ledger.from_block,
        )
        return build_statement(inputs)

    def record_statement(self, meter_id: str, month: Month) -> tuple[ChainResult, dict[str, Any]]:
        """Record the statement's hash and what it says is owed (the biller's role)."""
        billing = self._billing()
        document = self.statement(meter_id, month)
        receipt = record_statement(billing, document, month)
        return _result(receipt), document

    def pay_statement(self, meter_id: str, month: Month) -> tuple[int, ChainResult]:
        """Pay what the recorded statement says is outstanding, from the household's wallet
        with a permit: (units paid, the transaction)."""
        billing = self._billing()
        recorded, owed, paid = billing.statement(meter_id, month.number)
        if not any(recorded):
            raise ValueError(
                f"the statement of meter {meter_id} for {month.label} is not recorded on chain "
                "yet: the utility records it before it can be paid"
            )
        outstanding = owed - paid
        if outstanding <= 0:
            raise ValueError(f"nothing is owed on the statement of {meter_id} for {month.label}")
        wallet, sender = self._wallet(meter_id)
        held = billing.credit.balance_of(wallet.address)
        if held < outstanding:
            raise ValueError(
                f"{self.to_currency(outstanding)} is owed; the wallet of meter {meter_id} holds "
                f"{self.to_currency(held)}"
            )
        receipt = billing.with_sender(sender).pay_with_permit(
            meter_id, month.number, outstanding, wallet, self._deadline()
        )
        return outstanding, _result(receipt)

    # ---- prepaid supply -------------------------------------------------------------------

    def _prepaid(self) -> PrepaidMeterClient:
        if self.ledger.prepaid is None:
            raise NotDeployed("no PrepaidMeter contract is deployed beside this market")
        return self.ledger.prepaid

    @property
    def has_prepaid(self) -> bool:
        return self.ledger.prepaid is not None

    @property
    def can_issue_vouchers(self) -> bool:
        return self.ledger.prepaid is not None and self.ledger.vending_key is not None

    def _status_json(self, status: PrepaidStatus) -> dict[str, Any]:
        return {
            "meter_id": status.meter,
            "enrolled": status.state is not SupplyState.NOT_ENROLLED,
            "credit": float(from_units(status.credit, self.decimals)),
            "state": status.state.label,
            "since": datetime.fromtimestamp(status.since, UTC),
            "reason": status.reason.name.lower(),
            "debt": float(from_units(status.debt, self.decimals)),
            "never_cut": status.never_cut,
        }

    def prepaid_status(self, meter_id: str) -> dict[str, Any]:
        """A meter's prepaid account (enrolled False: the meter is not prepaid), with the
        contract's emergency credit and low-credit thresholds."""
        client = self._prepaid()
        found = self._status_json(client.status(meter_id))
        found["emergency_credit"] = float(from_units(client.emergency_credit(), self.decimals))
        found["thresholds"] = [
            float(Decimal(t) / (Decimal(10) ** self.decimals)) for t in client.thresholds()
        ]
        return found

    def prepaid_statuses(self, meter_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The enrolled meters among `meter_ids`, in one batch."""
        found = self._prepaid().statuses(meter_ids)
        return [
            self._status_json(status)
            for status in found.values()
            if status.state is not SupplyState.NOT_ENROLLED
        ]

    def redeem_voucher(self, meter_id: str, code: str) -> TopUpResult:
        """Relay a printed voucher for `meter_id` (the operator's account sends it)."""
        return PrepaidService(self._prepaid()).redeem_voucher(meter_id, code)

    def top_up(self, meter_id: str, amount: Decimal) -> TopUpResult:
        """Top up from the household's wallet with a permit."""
        client = self._prepaid()
        wallet, sender = self._wallet(meter_id)
        return PrepaidService(client.with_sender(sender)).top_up(meter_id, amount, wallet)

    def issue_voucher(self, meter_id: str, amount: Decimal, expiry: int = 0) -> IssuedVoucher:
        """Sign a voucher with the utility's vending key (nothing is sent)."""
        client = self._prepaid()
        if self.ledger.vending_key is None:
            raise NotDeployed(
                "this server holds no vending key: start it with --vending-keystore to issue "
                "vouchers"
            )
        status = client.status(meter_id)
        if status.state is SupplyState.NOT_ENROLLED:
            raise ValueError(f"meter {meter_id} is not prepaid: vouchers are for prepaid meters")
        return PrepaidService(client).issue_voucher(
            meter_id, amount, self.ledger.vending_key, expiry=expiry
        )

    def prepaid_state_changes(self, from_block: int) -> tuple[list[PrepaidStateChange], int]:
        """StateChanged events from `from_block` on; and the block to read from next time."""
        client = self._prepaid()
        latest = int(client.w3.eth.block_number)
        start = max(from_block, self.ledger.from_block)
        if latest < start:
            return [], start
        changes = [
            PrepaidStateChange(
                meter_id=bytes32_to_meter_id(bytes(e["args"]["meterId"])),
                previous=SupplyState(int(e["args"]["previous"])).label,
                state=SupplyState(int(e["args"]["state"])).label,
                reason=Reason(int(e["args"]["reason"])).name.lower(),
                credit=from_units(int(e["args"]["credit"]), self.decimals),
                block=int(e["blockNumber"]),
            )
            for e in client.events("StateChanged", from_block=start, to_block=latest)
        ]
        return changes, latest + 1
