"""Who holds which certificate, and what was retired for whom, from EnergyCertificates' events.

`CertificateBook.build` is a pure function of the contract's events (devices, auto-retirement
settings, certified intervals, ERC-1155 transfers, retirements) in chain order; `read_book`
fetches them. `certificate_rows` gives the `meterchain certificates list --json` rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from web3.types import EventData

from meterchain.chain.ledger_clients import (
    EnergyCertificatesClient,
    decode_auto_retirements,
    decode_certificates,
    split_certificate_id,
)
from meterchain.chain.signing import bytes32_to_meter_id

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
EVENT_NAMES = (
    "DeviceRegistered",
    "AutoRetirementSet",
    "IntervalCertified",
    "TransferSingle",
    "TransferBatch",
    "Retired",
)


@dataclass(frozen=True)
class Device:
    """A generating device as registered, with its index (certificate id >> 64)."""

    index: int
    meter_id: str
    capacity_w: int
    commissioned_at: int
    site: str
    technology: str
    location: str


@dataclass(frozen=True)
class Certificate:
    """One certificate: one device's exported energy in one interval."""

    id: int
    device: Device
    interval_start: int  # Unix seconds
    issued_wh: int
    market: str
    block_number: int

    @property
    def meter_id(self) -> str:
        return self.device.meter_id


@dataclass(frozen=True)
class Retirement:
    """Wh of a certificate retired (claimed) for a beneficiary."""

    certificate_id: int
    wh: int
    holder: str  # who retired it (for auto-retirements: the buyer meter's owner)
    beneficiary: str
    period_start: int
    period_end: int
    purpose: str
    buyer_meter_id: str | None  # set for retirements at issuance for a local buyer
    block_number: int


@dataclass(frozen=True)
class AutoRetirementSetting:
    owner: str
    beneficiary: str
    purpose: str


@dataclass
class CertificateBook:
    """Every certificate, who holds what of it, and every retirement."""

    devices: dict[int, Device] = field(default_factory=dict)
    certificates: dict[int, Certificate] = field(default_factory=dict)
    holdings: dict[tuple[int, str], int] = field(default_factory=dict)  # (id, account) → Wh
    minted: dict[tuple[int, str], int] = field(default_factory=dict)  # issued to accounts
    retirements: list[Retirement] = field(default_factory=list)
    interval_s: dict[str, int] = field(default_factory=dict)  # market → interval length

    @classmethod
    def build(cls, events: Iterable[EventData], *, interval_s: int = 900) -> CertificateBook:
        """Replay the contract's events (in any order; they are sorted by chain position)."""
        book = cls()
        settings: dict[str, AutoRetirementSetting] = {}
        ordered = sorted(events, key=lambda e: (int(e["blockNumber"]), int(e["logIndex"])))
        for event in ordered:
            name, args, block = event["event"], event["args"], int(event["blockNumber"])
            if name == "DeviceRegistered":
                index = int(args["index"])
                book.devices[index] = Device(
                    index, bytes32_to_meter_id(bytes(args["meterId"])), int(args["capacityW"]),
                    int(args["commissionedAt"]), str(args["site"]), str(args["technology"]),
                    str(args["location"]),
                )  # fmt: skip
            elif name == "AutoRetirementSet":
                settings[bytes32_to_meter_id(bytes(args["meterId"]))] = AutoRetirementSetting(
                    str(args["owner"]), str(args["beneficiary"]), str(args["purpose"])
                )
            elif name == "IntervalCertified":
                book._certified(args, block, settings, interval_s)
            elif name == "TransferSingle":
                book._move(str(args["from"]), str(args["to"]), int(args["id"]), int(args["value"]))
            elif name == "TransferBatch":
                for certificate, value in zip(args["ids"], args["values"], strict=True):
                    book._move(str(args["from"]), str(args["to"]), int(certificate), int(value))
            elif name == "Retired":
                book.retirements.append(
                    Retirement(
                        int(args["id"]), int(args["wh"]), str(args["holder"]),
                        str(args["beneficiary"]), int(args["periodStart"]),
                        int(args["periodEnd"]), str(args["purpose"]), None, block,
                    )
                )  # fmt: skip
        return book

    def _certified(
        self,
        args: Any,
        block: int,
        settings: dict[str, AutoRetirementSetting],
        interval_s: int,
    ) -> None:
        market = str(args["market"])
        for issued in decode_certificates(bytes(args["certificates"])):
            device_index, interval = split_certificate_id(issued.id)
            self.certificates[issued.id] = Certificate(
                issued.id, self.devices[device_index], interval, issued.certified_wh, market, block
            )
        for piece in decode_auto_retirements(bytes(args["autoRetirements"])):
            buyer = bytes32_to_meter_id(piece.buyer_meter_id)
            setting = settings.get(buyer, AutoRetirementSetting(ZERO_ADDRESS, buyer, ""))
            interval = piece.id & (2**64 - 1)
            self.retirements.append(
                Retirement(
                    piece.id, piece.wh, setting.owner, setting.beneficiary, interval,
                    interval + interval_s, setting.purpose, buyer, block,
                )
            )  # fmt: skip

    def _move(self, source: str, target: str, certificate: int, wh: int) -> None:
        if source == ZERO_ADDRESS:
            key = (certificate, target)
            self.minted[key] = self.minted.get(key, 0) + wh
        else:
            left = self.holdings.get((certificate, source), 0) - wh
            if left:
                self.holdings[(certificate, source)] = left
            else:
                self.holdings.pop((certificate, source), None)
        if target != ZERO_ADDRESS:
            self.holdings[(certificate, target)] = self.holdings.get((certificate, target), 0) + wh

    # ---- queries

    def retired_for_meter(self, meter_id: str) -> dict[int, int]:
        """Wh retired at issuance in a buyer meter's name, by certificate interval start."""
        found: dict[int, int] = {}
        for retirement in self.retirements:
            if retirement.buyer_meter_id == meter_id:
                start = self.certificates[retirement.certificate_id].interval_start
                found[start] = found.get(start, 0) + retirement.wh
        return found

    def issued_for_meter(self, meter_id: str) -> dict[int, int]:
        """Wh certified for a generating meter, by interval start."""
        return {
            c.interval_start: c.issued_wh
            for c in self.certificates.values()
            if c.meter_id == meter_id
        }


def read_book(
    client: EnergyCertificatesClient, *, from_block: int = 0, interval_s: int = 900
) -> CertificateBook:
    """Fetch the contract's events from `from_block` and build the book."""
    events: list[EventData] = []
    for name in EVENT_NAMES:
        events.extend(client.events(name, from_block=from_block))
    return CertificateBook.build(events, interval_s=interval_s)


def iso(seconds: int) -> str:
    """Unix seconds → ISO 8601 UTC ("2026-11-24T15:00:00+00:00")."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def certificate_rows(
    book: CertificateBook,
    *,
    meter_id: str | None = None,
    start: int | None = None,
    end: int | None = None,
) -> list[dict[str, Any]]:
    """`certificates list` rows: one per holding still held (retired_for null) and one per
    retirement, for certificates of `meter_id` whose interval starts in [start, end)."""

    def wanted(certificate: Certificate) -> bool:
        return (
            (meter_id is None or certificate.meter_id == meter_id)
            and (start is None or certificate.interval_start >= start)
            and (end is None or certificate.interval_start < end)
        )

    rows: list[tuple[tuple[int, int, str], dict[str, Any]]] = []
    for (certificate_id, account), wh in book.holdings.items():
        certificate = book.certificates.get(certificate_id)
        if certificate is not None and wh > 0 and wanted(certificate):
            rows.append(((certificate_id, 0, account), _row(certificate, wh, account, None)))
    for order, retirement in enumerate(book.retirements):
        certificate = book.certificates[retirement.certificate_id]
        if wanted(certificate):
            row = _row(certificate, retirement.wh, retirement.holder, retirement.beneficiary)
            rows.append(((retirement.certificate_id, 1 + order, retirement.holder), row))
    return [row for _, row in sorted(rows, key=lambda item: item[0])]


def _row(certificate: Certificate, wh: int, owner: str, retired_for: str | None) -> dict[str, Any]:
    return {
        "id": certificate.id,
        "meter_id": certificate.meter_id,
        "interval_start": iso(certificate.interval_start),
        "wh": wh,
        "owner": owner,
        "retired_for": retired_for,
        "technology": certificate.device.technology,
    }


def held_by(book: CertificateBook, account: str, certificate_ids: Sequence[int]) -> dict[int, int]:
    """What `account` holds of each certificate."""
    return {c: book.holdings.get((c, account), 0) for c in certificate_ids}
