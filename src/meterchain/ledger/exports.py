"""The certificates of a period, exported for registries outside the chain.

- **EnergyTag** granular certificates (JSON): hourly bundles, as the EnergyTag GC Scheme
  Standard asks (a production period of at most one hour, face value 1 Wh, ids in ranges).
  Field names follow the EnergyTag GC Registry API specification v2 (`issuance_id`,
  `certificate_bundle_status`, `certificate_bundle_id_range_start`/`_end`, `bundle_quantity`,
  `energy_carrier`, `energy_source`, `face_value`, `device_*`, `production_starting_interval`,
  `production_ending_interval`, `beneficiary`, `is_storage`, `country_of_issuance`,
  `issuing_body`). Each hourly bundle of one device is split by holder (Active) and by
  beneficiary (Cancelled, i.e. retired); `meterchain_certificates` lists the 15-minute
  certificates inside it.
- **I-REC** style CSV: one issue row per device and period (I-REC's issue request: device
  code, fuel, start and end date, production in MWh, recipient account) and one redemption row
  per device, beneficiary and purpose (I-REC's redemption: beneficiary, consumption period,
  purpose), with the chain evidence. I-RECs are whole MWh: the CSV states MWh with six
  decimals (exact Wh) and the Wh beside them; a registry importing it issues whole MWh from
  the period's total.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from meterchain.ledger.certificates import Certificate, CertificateBook, Device, iso
from meterchain.ledger.matching import HOUR_S

IREC_COLUMNS = (
    "record_type",
    "device_code",
    "device_name",
    "fuel",
    "technology",
    "country",
    "location",
    "capacity_mw",
    "commissioning_date",
    "start_date",
    "end_date",
    "volume_mwh",
    "volume_wh",
    "certificates",
    "account",
    "beneficiary",
    "purpose",
    "period_start",
    "period_end",
    "evidence",
)


@dataclass(frozen=True)
class ExportContext:
    """Where the certificates come from, and the period exported (Unix seconds, [start, end))."""

    chain_id: int
    contract: str
    start: int
    end: int
    timezone: str = "UTC"

    @property
    def issuing_body(self) -> str:
        return f"meterchain EnergyCertificates {self.contract} on chain {self.chain_id}"


def energy_source(technology: str) -> str:
    """The energy source of an I-REC/Origin style technology path ("Solar;Photovoltaic;…")."""
    return technology.split(";", 1)[0].strip() or technology


def country(location: str) -> str:
    """The country code a location ends with ("… Fortaleza CE BR" → "BR"), or ""."""
    last = location.strip().rsplit(" ", 1)[-1]
    return last if len(last) == 2 and last.isalpha() and last.isupper() else ""


def _in_period(book: CertificateBook, context: ExportContext) -> list[Certificate]:
    return sorted(
        (c for c in book.certificates.values() if context.start <= c.interval_start < context.end),
        key=lambda c: (c.device.index, c.interval_start),
    )


@dataclass(frozen=True)
class _Part:
    """Wh of one certificate in one status, for one account or beneficiary."""

    certificate: Certificate
    wh: int
    status: str  # Active or Cancelled
    account: str
    beneficiary: str | None
    purpose: str | None


def _parts(book: CertificateBook, certificates: Iterable[Certificate]) -> list[_Part]:
    wanted = {c.id: c for c in certificates}
    parts = []
    for retirement in book.retirements:
        certificate = wanted.get(retirement.certificate_id)
        if certificate is not None:
            parts.append(
                _Part(certificate, retirement.wh, "Cancelled", retirement.holder,
                      retirement.beneficiary, retirement.purpose)
            )  # fmt: skip
    for (certificate_id, account), wh in sorted(book.holdings.items()):
        certificate = wanted.get(certificate_id)
        if certificate is not None and wh > 0:
            parts.append(_Part(certificate, wh, "Active", account, None, None))
    return parts


def energytag_bundles(book: CertificateBook, context: ExportContext) -> dict[str, Any]:
    """The period's certificates as EnergyTag-style hourly GC bundles (a JSON document)."""
    certificates = _in_period(book, context)
    hours: dict[tuple[int, int], list[Certificate]] = {}
    for certificate in certificates:
        hour = certificate.interval_start - certificate.interval_start % HOUR_S
        hours.setdefault((certificate.device.index, hour), []).append(certificate)
    bundles = []
    for (_, hour), members in sorted(hours.items()):
        bundles.extend(_hour_bundles(book, context, hour, members))
    return {
        "format": "EnergyTag granular certificate bundles (GC Registry API v2 field names)",
        "issuing_body": context.issuing_body,
        "period_start": iso(context.start),
        "period_end": iso(context.end),
        "timezone": context.timezone,
        "face_value_wh": 1,
        "certificates": len(certificates),
        "issued_wh": sum(c.issued_wh for c in certificates),
        "bundles": bundles,
    }


def _hour_bundles(
    book: CertificateBook, context: ExportContext, hour: int, members: list[Certificate]
) -> list[dict[str, Any]]:
    device = members[0].device
    groups: dict[tuple[str, str, str | None, str | None], list[_Part]] = {}
    for part in _parts(book, members):
        groups.setdefault((part.status, part.account, part.beneficiary, part.purpose), []).append(
            part
        )
    bundles = []
    cursor = 1
    for (status, account, beneficiary, purpose), parts in groups.items():
        quantity = sum(p.wh for p in parts)
        bundles.append(
            {
                "issuance_id": f"{context.chain_id}:{context.contract}:{device.index}:{hour}",
                "certificate_bundle_status": status,
                "account_id": account,
                "certificate_bundle_id_range_start": cursor,
                "certificate_bundle_id_range_end": cursor + quantity - 1,
                "bundle_quantity": quantity,
                "beneficiary": beneficiary,
                "cancellation_purpose": purpose,
                "energy_carrier": "Electricity",
                "energy_source": energy_source(device.technology),
                "face_value": 1,
                "issuance_post_energy_carrier_conversion": False,
                "is_storage": False,
                "device_id": device.meter_id,
                "device_name": device.site,
                "device_technology_type": device.technology,
                "device_production_start_date": iso(device.commissioned_at),
                "device_capacity": device.capacity_w,
                "device_location": device.location,
                "production_starting_interval": iso(hour),
                "production_ending_interval": iso(hour + HOUR_S),
                "country_of_issuance": country(device.location),
                "issuing_body": context.issuing_body,
                "meterchain_certificates": [
                    {
                        "id": p.certificate.id,
                        "interval_start": iso(p.certificate.interval_start),
                        "wh": p.wh,
                    }
                    for p in parts
                ],
            }
        )
        cursor += quantity
    return bundles


def _mwh(wh: int) -> str:
    return f"{Decimal(wh) / Decimal(1_000_000):.6f}"


def _date(seconds: int, zone: ZoneInfo) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(seconds, zone).date().isoformat()


def irec_csv(book: CertificateBook, context: ExportContext) -> str:
    """The period's certificates as I-REC style issue and redemption rows (CSV text)."""
    zone = ZoneInfo(context.timezone)
    certificates = _in_period(book, context)
    by_device: dict[int, list[Certificate]] = {}
    for certificate in certificates:
        by_device.setdefault(certificate.device.index, []).append(certificate)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=IREC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    evidence = f"{context.issuing_body}: IntervalCertified events"
    last_day = _date(context.end - 1, zone)
    for members in (by_device[i] for i in sorted(by_device)):
        device = members[0].device
        ids = {c.id for c in members}
        accounts = sorted({a for (c, a), wh in book.minted.items() if c in ids and wh > 0})
        issued = sum(c.issued_wh for c in members)
        writer.writerow(
            _irec_row(device, "issue", context, zone, last_day, issued, len(members), evidence)
            | {"account": ";".join(accounts)}
        )
        redemptions: dict[tuple[str, str, str], list[tuple[int, int, int]]] = {}
        for retirement in book.retirements:
            if retirement.certificate_id in ids:
                key = (retirement.beneficiary, retirement.purpose, retirement.holder)
                redemptions.setdefault(key, []).append(
                    (retirement.wh, retirement.period_start, retirement.period_end)
                )
        for (beneficiary, purpose, holder), items in sorted(redemptions.items()):
            row = _irec_row(
                device, "redemption", context, zone, last_day, sum(i[0] for i in items),
                len(items), evidence,
            )  # fmt: skip
            writer.writerow(
                row
                | {
                    "account": holder,
                    "beneficiary": beneficiary,
                    "purpose": purpose,
                    "period_start": iso(min(i[1] for i in items)),
                    "period_end": iso(max(i[2] for i in items)),
                }
            )
    return out.getvalue()


def _irec_row(
    device: Device,
    record_type: str,
    context: ExportContext,
    zone: ZoneInfo,
    last_day: str,
    wh: int,
    count: int,
    evidence: str,
) -> dict[str, Any]:
    return {
        "record_type": record_type,
        "device_code": device.meter_id,
        "device_name": device.site,
        "fuel": energy_source(device.technology),
        "technology": device.technology,
        "country": country(device.location),
        "location": device.location,
        "capacity_mw": f"{Decimal(device.capacity_w) / Decimal(1_000_000):.6f}",
        "commissioning_date": _date(device.commissioned_at, zone),
        "start_date": _date(context.start, zone),
        "end_date": last_day,
        "volume_mwh": _mwh(wh),
        "volume_wh": wh,
        "certificates": count,
        "account": "",
        "beneficiary": "",
        "purpose": "",
        "period_start": "",
        "period_end": "",
        "evidence": evidence,
    }
