"""What the certificates pages show, as plain functions of the certificate book (and, for
24/7 matching, the consumption the monitor recorded): JSON-ready rows and hourly series.

A household sees the certificates its owner account holds, the retirements it made, and
those retired in its meter's name at issuance (its local purchases); the issuance of its own
device hour by hour; and its consumption matched hour by hour with what was retired for it.
The operator sees every row (`meterchain certificates list` rows, the same fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterchain.ledger.certificates import Certificate, CertificateBook, Retirement, iso
from meterchain.ledger.certificates import _row as list_row
from meterchain.ledger.matching import by_hour, hourly_match

MAX_ROWS = 500  # rows a page lists (newest first); the API and exports give everything


def _row(
    certificate: Certificate,
    wh: int,
    owner: str,
    retirement: Retirement | None,
) -> dict[str, Any]:
    """A `certificates list` row (the CLI's fields, made by the same function), with the
    retirement's purpose and period when it is one."""
    beneficiary = None if retirement is None else retirement.beneficiary
    return {
        **list_row(certificate, wh, owner, beneficiary),
        "purpose": None if retirement is None else retirement.purpose,
        "period_start": None if retirement is None else iso(retirement.period_start),
        "period_end": None if retirement is None else iso(retirement.period_end),
        "at_issuance": retirement is not None and retirement.buyer_meter_id is not None,
    }


def household_rows(book: CertificateBook, meter_id: str, owner: str) -> list[dict[str, Any]]:
    """What the household's owner account holds, what it retired, and what was retired in
    its meter's name at issuance; newest interval first."""
    account = owner.lower()
    rows: list[tuple[int, int, dict[str, Any]]] = []
    for (certificate_id, holder), wh in book.holdings.items():
        certificate = book.certificates.get(certificate_id)
        if certificate is not None and wh > 0 and holder.lower() == account:
            rows.append((certificate.interval_start, 0, _row(certificate, wh, holder, None)))
    for order, retirement in enumerate(book.retirements):
        mine = retirement.buyer_meter_id == meter_id or (
            retirement.buyer_meter_id is None and retirement.holder.lower() == account
        )
        certificate = book.certificates.get(retirement.certificate_id)
        if mine and certificate is not None:
            row = _row(certificate, retirement.wh, retirement.holder, retirement)
            rows.append((certificate.interval_start, 1 + order, row))
    rows.sort(key=lambda item: (-item[0], item[1]))
    return [row for _, _, row in rows]


def all_rows(book: CertificateBook, meter_id: str | None = None) -> list[dict[str, Any]]:
    """Every holding and retirement (of `meter_id`'s certificates), newest interval first."""
    rows: list[tuple[int, int, dict[str, Any]]] = []
    for (certificate_id, holder), wh in book.holdings.items():
        certificate = book.certificates.get(certificate_id)
        if certificate is not None and wh > 0 and meter_id in (None, certificate.meter_id):
            rows.append((certificate.interval_start, 0, _row(certificate, wh, holder, None)))
    for order, retirement in enumerate(book.retirements):
        certificate = book.certificates.get(retirement.certificate_id)
        if certificate is not None and meter_id in (None, certificate.meter_id):
            row = _row(certificate, retirement.wh, retirement.holder, retirement)
            rows.append((certificate.interval_start, 1 + order, row))
    rows.sort(key=lambda item: (-item[0], item[1]))
    return [row for _, _, row in rows]


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Wh held and retired among `rows`, and how much of it was retired at issuance."""
    return {
        "held_wh": sum(r["wh"] for r in rows if r["retired_for"] is None),
        "retired_wh": sum(r["wh"] for r in rows if r["retired_for"] is not None),
        "retired_at_issuance_wh": sum(r["wh"] for r in rows if r["at_issuance"]),
    }


def _hours(series: Mapping[int, int]) -> list[dict[str, Any]]:
    return [{"hour": iso(hour), "wh": wh} for hour, wh in sorted(by_hour(series).items())]


def device_hours(book: CertificateBook, meter_id: str) -> list[dict[str, Any]]:
    """The Wh certified for a device's export, hour by hour."""
    return _hours(book.issued_for_meter(meter_id))


def devices(book: CertificateBook) -> list[dict[str, Any]]:
    """Every registered device with its origin and what it was certified in all."""
    issued: dict[str, int] = {}
    for certificate in book.certificates.values():
        issued[certificate.meter_id] = issued.get(certificate.meter_id, 0) + certificate.issued_wh
    return [
        {
            "index": d.index,
            "meter_id": d.meter_id,
            "capacity_w": d.capacity_w,
            "commissioned_at": iso(d.commissioned_at),
            "site": d.site,
            "technology": d.technology,
            "location": d.location,
            "issued_wh": issued.get(d.meter_id, 0),
        }
        for d in sorted(book.devices.values(), key=lambda d: d.index)
    ]


def community_hours(book: CertificateBook) -> dict[str, list[dict[str, Any]]]:
    """Each device's certified Wh hour by hour, by meter id (the operator's chart)."""
    series: dict[str, dict[int, int]] = {}
    for certificate in book.certificates.values():
        found = series.setdefault(certificate.meter_id, {})
        found[certificate.interval_start] = certificate.issued_wh
    return {meter: _hours(values) for meter, values in sorted(series.items())}


def matching(
    book: CertificateBook, meter_id: str, consumed_wh: Mapping[int, int]
) -> dict[str, Any]:
    """The household's 24/7 score: consumption (metered import by interval start) matched hour
    by hour with the certificates retired in its name; and both series, by hour."""
    retired = book.retired_for_meter(meter_id)
    match = hourly_match(consumed_wh, retired)
    consumed_hours, retired_hours = by_hour(consumed_wh), by_hour(retired)
    hours = sorted(set(consumed_hours) | set(retired_hours))
    return {
        "consumption_wh": match.consumption_wh,
        "matched_wh": match.matched_wh,
        "hourly_matched_fraction": match.fraction,
        "hours": [
            {
                "hour": iso(hour),
                "consumption_wh": consumed_hours.get(hour, 0),
                "certificates_wh": retired_hours.get(hour, 0),
                "matched_wh": min(consumed_hours.get(hour, 0), retired_hours.get(hour, 0)),
            }
            for hour in hours
        ],
    }
