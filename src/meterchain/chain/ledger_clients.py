"""Typed wrappers over the ledger contracts built beside the market: EnergyCertificates,
CommunityFund and Billing, and the codecs of their packed events.

Like `meterchain.chain.client`, they take on-chain units (Wh, integer smallest credit units,
Unix seconds) and send through one TransactionSender. The ledger package (certificates
listing, matching, exports, statements) builds on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3.types import EventData, TxReceipt

from meterchain.chain.batch import pack_positions
from meterchain.chain.client import EnergyCreditClient, EnergyMarketClient, _ContractClient
from meterchain.chain.errors import ChainError
from meterchain.chain.signing import meter_id_to_bytes32

U64 = 2**64 - 1
CERTIFICATE_BYTES = 28  # IntervalCertified.certificates: id 12 | certifiedWh 8 | retiredWh 8
PIECE_BYTES = 52  # IntervalCertified.autoRetirements: id 12 | buyer meterId 32 | wh 8
MAX_TEXT_BYTES = 200  # site, technology, location, beneficiary, purpose


class LedgerCodecError(ChainError, ValueError):
    """A packed ledger event cannot be decoded."""


def _meter_bytes(meter_id: str | bytes) -> bytes:
    return meter_id if isinstance(meter_id, bytes) else meter_id_to_bytes32(meter_id)


def certificate_id(device_index: int, interval: int) -> int:
    """The certificate id of a device's interval: device index << 64 | interval."""
    return (device_index << 64) | interval


def split_certificate_id(certificate: int) -> tuple[int, int]:
    """(device index, interval) of a certificate id."""
    return certificate >> 64, certificate & U64


@dataclass(frozen=True)
class DeviceOrigin:
    """A generating device's origin data, as the issuer registered it."""

    meter_id: bytes
    capacity_w: int
    commissioned_at: int  # Unix seconds
    site: str
    technology: str
    location: str


@dataclass(frozen=True)
class IssuedCertificate:
    """One certificate of an IntervalCertified event."""

    id: int
    certified_wh: int
    retired_wh: int  # retired at issuance for local buyers

    @property
    def interval(self) -> int:
        return self.id & U64

    @property
    def device_index(self) -> int:
        return self.id >> 64


@dataclass(frozen=True)
class AutoRetirement:
    """Part of a certificate retired at issuance in a local buyer's name."""

    id: int
    buyer_meter_id: bytes
    wh: int


@dataclass(frozen=True)
class CertifiedInterval:
    """An IntervalCertified event."""

    market: str
    interval: int
    certified_wh: int
    auto_retired_wh: int
    certificates: list[IssuedCertificate]
    auto_retirements: list[AutoRetirement]
    block_number: int


def decode_certificates(packed: bytes) -> list[IssuedCertificate]:
    """IntervalCertified.certificates: id 12 | certifiedWh 8 | retiredWh 8 (28 bytes each)."""
    if len(packed) % CERTIFICATE_BYTES:
        raise LedgerCodecError(f"{len(packed)} bytes of certificates: not a multiple of 28")
    return [
        IssuedCertificate(
            id=int.from_bytes(packed[at : at + 12], "big"),
            certified_wh=int.from_bytes(packed[at + 12 : at + 20], "big"),
            retired_wh=int.from_bytes(packed[at + 20 : at + 28], "big"),
        )
        for at in range(0, len(packed), CERTIFICATE_BYTES)
    ]


def decode_auto_retirements(packed: bytes) -> list[AutoRetirement]:
    """IntervalCertified.autoRetirements: id 12 | buyer meterId 32 | wh 8 (52 bytes each)."""
    if len(packed) % PIECE_BYTES:
        raise LedgerCodecError(f"{len(packed)} bytes of auto-retirements: not a multiple of 52")
    return [
        AutoRetirement(
            id=int.from_bytes(packed[at : at + 12], "big"),
            buyer_meter_id=packed[at + 12 : at + 44],
            wh=int.from_bytes(packed[at + 44 : at + 52], "big"),
        )
        for at in range(0, len(packed), PIECE_BYTES)
    ]


def _check_text(name: str, value: str, *, required: bool) -> str:
    size = len(value.encode("utf-8"))
    if required and size == 0:
        raise ValueError(f"{name} is empty; give one")
    if size > MAX_TEXT_BYTES:
        raise ValueError(f"{name} is {size} bytes long; at most {MAX_TEXT_BYTES}: shorten it")
    return value


class EnergyCertificatesClient(_ContractClient):
    """EnergyCertificates: 15-minute certificates with guarantee of origin (ERC-1155, 1 = 1 Wh)."""

    NAME = "EnergyCertificates"

    @cached_property
    def registry_address(self) -> str:
        return str(self._call("registry"))

    # ---- devices

    def register_device(
        self,
        meter_id: str | bytes,
        *,
        capacity_w: int,
        commissioned_at: int,
        site: str,
        technology: str,
        location: str,
    ) -> TxReceipt:
        """Register a generating meter and its origin data (ISSUER_ROLE)."""
        origin = (
            _meter_bytes(meter_id),
            capacity_w,
            commissioned_at,
            _check_text("site", site, required=False),
            _check_text("technology", technology, required=True),
            _check_text("location", location, required=False),
        )
        return self._transact(self.contract.functions.registerDevice(origin))

    def device(self, meter_id: str | bytes) -> DeviceOrigin:
        return _origin(self._call("device", _meter_bytes(meter_id)))

    def device_at(self, index: int) -> DeviceOrigin:
        return _origin(self._call("deviceAt", index))

    def device_count(self) -> int:
        return int(self._call("deviceCount"))

    def devices(self) -> dict[int, DeviceOrigin]:
        """Every registered device by index."""
        return {i: self.device_at(i) for i in range(1, self.device_count() + 1)}

    # ---- issuance

    def issue(
        self,
        market: str,
        interval: int,
        settlements: bytes,
        positions: bytes,
        *,
        key: str | None = None,
    ) -> TxReceipt:
        """Certify a delivered interval from its re-submitted settlements and positions."""
        fn = self.contract.functions.issue(
            to_checksum_address(market), interval, settlements, positions
        )
        return self._transact(fn, key=key)

    def issue_interval(
        self, market: EnergyMarketClient, interval: int, *, key: str | None = None
    ) -> TxReceipt:
        """Certify a delivered interval of `market`, reading its blobs from the market's events."""
        settlements = delivery_settlements_blob(market, interval)
        positions = pack_positions(market.positions(interval))
        return self.issue(market.address, interval, settlements, positions, key=key)

    def interval_issued(self, market: str, interval: int) -> bool:
        return bool(self._call("intervalIssued", to_checksum_address(market), interval))

    def certificate_id(self, meter_id: str | bytes, interval: int) -> int:
        """The id of a meter's certificate for an interval (0 if the meter is no device)."""
        return int(self._call("certificateId", _meter_bytes(meter_id), interval))

    def certificate(self, certificate: int) -> tuple[bytes, int, bool]:
        """(meter id, interval, issued): whose interval the id names and whether it was issued
        (how much: its IntervalCertified event and its mint)."""
        meter_id, interval, issued = self._call("certificate", certificate)
        return bytes(meter_id), int(interval), bool(issued)

    @cached_property
    def interval_seconds(self) -> int:
        return int(self._call("intervalSeconds"))

    def certified_intervals(
        self, *, from_block: int = 0, to_block: int | str = "latest"
    ) -> list[CertifiedInterval]:
        """Every IntervalCertified event, decoded."""
        return [
            _certified(e)
            for e in self.events("IntervalCertified", from_block=from_block, to_block=to_block)
        ]

    # ---- holdings and retirement

    def balance_of(self, account: str, certificate: int) -> int:
        return int(self._call("balanceOf", to_checksum_address(account), certificate))

    def transfer(self, to: str, certificate: int, wh: int) -> TxReceipt:
        """Send `wh` of a certificate the caller holds to `to` (ERC-1155 safeTransferFrom)."""
        fn = self.contract.functions.safeTransferFrom(
            self.sender.address, to_checksum_address(to), certificate, wh, b""
        )
        return self._transact(fn)

    def set_approval_for_all(self, operator: str, approved: bool) -> TxReceipt:
        fn = self.contract.functions.setApprovalForAll(to_checksum_address(operator), approved)
        return self._transact(fn)

    def set_auto_retirement(
        self, meter_id: str | bytes, beneficiary: str, purpose: str = "local renewable supply"
    ) -> TxReceipt:
        """Ask (owner only) that local purchases of the meter be retired in `beneficiary`'s
        name at issuance; an empty beneficiary stops it."""
        fn = self.contract.functions.setAutoRetirement(
            _meter_bytes(meter_id),
            _check_text("beneficiary", beneficiary, required=False),
            _check_text("purpose", purpose, required=False),
        )
        return self._transact(fn)

    def auto_retirement(self, meter_id: str | bytes) -> bool:
        return bool(self._call("autoRetirement", _meter_bytes(meter_id)))

    def retire(
        self,
        certificate: int,
        wh: int,
        *,
        beneficiary: str,
        period_start: int,
        period_end: int,
        purpose: str,
        holder: str | None = None,
    ) -> TxReceipt:
        """Retire `wh` of a certificate the caller (or `holder`, who approved the caller)
        holds, for `beneficiary`'s consumption in [period_start, period_end), for `purpose`."""
        beneficiary = _check_text("beneficiary", beneficiary, required=True)
        purpose = _check_text("purpose", purpose, required=True)
        if holder is None:
            fn = self.contract.functions.retire(
                certificate, wh, beneficiary, period_start, period_end, purpose
            )
        else:
            fn = self.contract.functions.retireFrom(
                to_checksum_address(holder), certificate, wh, beneficiary, period_start,
                period_end, purpose,
            )  # fmt: skip
        return self._transact(fn)


def _origin(raw: tuple[bytes, int, int, str, str, str]) -> DeviceOrigin:
    meter_id, capacity_w, commissioned_at, site, technology, location = raw
    return DeviceOrigin(
        bytes(meter_id), int(capacity_w), int(commissioned_at), str(site), str(technology),
        str(location),
    )  # fmt: skip


def _certified(event: EventData) -> CertifiedInterval:
    args = event["args"]
    return CertifiedInterval(
        market=str(args["market"]),
        interval=int(args["interval"]),
        certified_wh=int(args["certifiedWh"]),
        auto_retired_wh=int(args["autoRetiredWh"]),
        certificates=decode_certificates(bytes(args["certificates"])),
        auto_retirements=decode_auto_retirements(bytes(args["autoRetirements"])),
        block_number=int(event["blockNumber"]),
    )


def delivery_settlements_blob(market: EnergyMarketClient, interval: int) -> bytes:
    """The `settlements` of the interval's DeliverySettled event, as emitted."""
    events = market.events("DeliverySettled", interval=interval)
    if not events:
        raise ChainError(
            f"interval {interval} of market {market.address} is not delivered yet: certificates "
            "are issued after its delivery settles"
        )
    return bytes(events[-1]["args"]["settlements"])


class CommunityFundClient(_ContractClient):
    """CommunityFund: an all-or-nothing campaign for a PV plant, shares as an ERC-20, and the
    plant's market revenue paid to shareholders pro rata."""

    NAME = "CommunityFund"

    @cached_property
    def credit(self) -> EnergyCreditClient:
        return EnergyCreditClient(self.sender, str(self._call("credit")))

    @cached_property
    def plant_meter_id(self) -> bytes:
        return bytes(self._call("plantMeterId"))

    @cached_property
    def price_per_share(self) -> int:
        return int(self._call("pricePerShare"))

    @cached_property
    def goal(self) -> int:
        return int(self._call("goal"))

    @cached_property
    def cap(self) -> int:
        return int(self._call("cap"))

    @cached_property
    def deadline(self) -> int:
        return int(self._call("deadline"))

    def raised(self) -> int:
        return int(self._call("raised"))

    def drawn(self) -> bool:
        return bool(self._call("drawn"))

    def succeeded(self) -> bool:
        return bool(self._call("succeeded"))

    def shares_of(self, account: str) -> int:
        return int(self._call("balanceOf", to_checksum_address(account)))

    def total_shares(self) -> int:
        return int(self._call("totalSupply"))

    def claimable(self, account: str) -> int:
        return int(self._call("claimable", to_checksum_address(account)))

    def earned(self, account: str) -> int:
        return int(self._call("earned", to_checksum_address(account)))

    def claimed(self, account: str) -> int:
        return int(self._call("claimed", to_checksum_address(account)))

    def total_distributed(self) -> int:
        return int(self._call("totalDistributed"))

    def total_claimed(self) -> int:
        return int(self._call("totalClaimed"))

    def undistributed(self) -> int:
        return int(self._call("undistributed"))

    def buy(self, shares: int, *, approve: bool = True) -> TxReceipt:
        """Buy `shares` at the campaign's price (approving exactly the cost first)."""
        if approve:
            self.credit.approve(self.address, shares * self.price_per_share)
        return self._transact(self.contract.functions.buy(shares))

    def buy_with_permit(self, shares: int, owner: LocalAccount, deadline: int) -> TxReceipt:
        """Buy with an EIP-2612 permit signed by `owner` (the caller) instead of an approval."""
        v, r, s = self.credit.sign_permit(
            owner, self.address, shares * self.price_per_share, deadline
        )
        return self._transact(self.contract.functions.buyWithPermit(shares, deadline, v, r, s))

    def transfer_shares(self, to: str, shares: int) -> TxReceipt:
        return self._transact(self.contract.functions.transfer(to_checksum_address(to), shares))

    def refund(self) -> TxReceipt:
        return self._transact(self.contract.functions.refund())

    def draw(self, to: str) -> TxReceipt:
        return self._transact(self.contract.functions.draw(to_checksum_address(to)))

    def collect(self) -> TxReceipt:
        return self._transact(self.contract.functions.collect())

    def distribute(self) -> TxReceipt:
        return self._transact(self.contract.functions.distribute())

    def claim(self) -> TxReceipt:
        return self._transact(self.contract.functions.claim())

    def set_reserve(self, amount: int) -> TxReceipt:
        return self._transact(self.contract.functions.setReserve(amount))


class BillingClient(_ContractClient):
    """Billing: statement hashes per meter and month, and payments of what is owed."""

    NAME = "Billing"

    @cached_property
    def credit(self) -> EnergyCreditClient:
        return EnergyCreditClient(self.sender, str(self._call("credit")))

    def record(
        self, meter_id: str | bytes, period: int, statement_hash: bytes, owed: int
    ) -> TxReceipt:
        """Record a statement's hash and what it says is owed (BILLER_ROLE); period = YYYYMM."""
        fn = self.contract.functions.record(_meter_bytes(meter_id), period, statement_hash, owed)
        return self._transact(fn)

    def statement(self, meter_id: str | bytes, period: int) -> tuple[bytes, int, int]:
        """(hash, owed, paid) of a meter's statement (a zero hash: none recorded)."""
        digest, owed, paid = self._call("statement", _meter_bytes(meter_id), period)
        return bytes(digest), int(owed), int(paid)

    def pay(
        self, meter_id: str | bytes, period: int, amount: int, *, approve: bool = True
    ) -> TxReceipt:
        """Pay `amount` of a statement from the caller's wallet (approving it first)."""
        if approve:
            self.credit.approve(self.address, amount)
        fn = self.contract.functions.pay(_meter_bytes(meter_id), period, amount)
        return self._transact(fn)

    def pay_with_permit(
        self, meter_id: str | bytes, period: int, amount: int, owner: LocalAccount, deadline: int
    ) -> TxReceipt:
        """Pay with an EIP-2612 permit signed by `owner` (the caller)."""
        v, r, s = self.credit.sign_permit(owner, self.address, amount, deadline)
        fn = self.contract.functions.payWithPermit(
            _meter_bytes(meter_id), period, amount, deadline, v, r, s
        )
        return self._transact(fn)
