"""Monthly statements of a meter, built from the market's events, exact to the smallest unit.

`build_statement` is a pure function of what the chain recorded for the meter in the period:
each interval's batch position and tariffs (BatchSettled), its delivery line (DeliverySettled:
energy measured in the interval and the balance change), what its balance could not pay
(Shortfall), plus certificates and fund revenue. `read_statement_inputs` fetches them.

Money per interval: the batch took a lock from the balance and the delivery paid it back with
the interval's credits less its debits, so the interval moved the balance by
`change − lock`. A shortfall is energy the balance could not pay: the grid absorbed it, and
the statement says it is owed. The lines (local purchases and sales at their prices, grid
import at retail and export at feed-in, unused purchases sold back, undelivered sales bought
back) are exact in thousandths of a unit; each is rounded half up once, and a last line
("other energy at the tariffs, and rounding": energy metered outside its own interval, after
a missing reading, and the per-meter rounding of the contract) makes the total equal, to the
unit, what the chain moved.

The statement's hash is keccak256 of its canonical JSON (sorted keys, no spaces, UTF-8),
without the live `payment` section; Billing records it, so household and utility can prove
which statement was issued.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from web3.types import TxReceipt

from meterchain.chain.batch import (
    MILLI,
    DeliveredMeter,
    Position,
    decode_positions,
    decode_settlements,
    locked_units,
)
from meterchain.chain.client import EnergyMarketClient
from meterchain.chain.ledger_clients import (
    BillingClient,
    CommunityFundClient,
    EnergyCertificatesClient,
)
from meterchain.chain.signing import meter_id_to_bytes32
from meterchain.ledger.certificates import CertificateBook, iso, read_book
from meterchain.ledger.period import Month

HASH_EXCLUDED = ("statement_hash", "payment")
LINE_KEYS = (
    "local_purchases",
    "local_sales",
    "grid_import",
    "grid_export",
    "unused_purchases_sold_back",
    "undelivered_sales_bought_back",
    "other_energy_and_rounding",
)


@dataclass(frozen=True)
class IntervalRecord:
    """What the chain recorded for one meter in one interval."""

    interval: int
    retail_price: int
    feed_in_price: int
    position: Position | None  # its trades in the batch (None: it did not trade)
    delivery: DeliveredMeter | None  # its delivery line (None: not in the delivery)
    delivered: bool  # the interval's delivery settled
    refunded: bool = False  # the batch was voided (its locks went back)
    shortfall: int = 0  # what the balance could not pay, smallest units


@dataclass(frozen=True)
class StatementInputs:
    """Everything a statement is built from (chain units)."""

    meter_id: str
    owner: str
    month: Month
    decimals: int
    symbol: str
    chain_id: int
    market: str
    intervals: Sequence[IntervalRecord]
    certificates_issued_wh: int = 0
    certificates_received_wh: int = 0  # minted to the owner (not retired with local sales)
    certificates_retired_for_wh: int = 0  # retired in the meter's name at issuance
    certificates_retired_by_owner_wh: int = 0
    fund_revenue_units: int = 0  # claimed by the owner in the period
    payment: Mapping[str, Any] = field(default_factory=dict)  # live: Billing's record


@dataclass
class _Sums:
    imported_wh: int = 0
    exported_wh: int = 0
    bought_wh: int = 0
    sold_wh: int = 0
    received_wh: int = 0
    delivered_wh: int = 0
    cost_milli: int = 0
    value_milli: int = 0
    grid_import_wh: int = 0
    grid_export_wh: int = 0
    unused_wh: int = 0
    undelivered_wh: int = 0
    lines_milli: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LINE_KEYS, 0))
    settled_units: int = 0  # Σ (change − lock): what the intervals moved the balance by
    shortfall_units: int = 0
    settled_intervals: int = 0
    pending_intervals: int = 0
    pending_locked_units: int = 0
    refunded_intervals: int = 0


def _add_interval(sums: _Sums, record: IntervalRecord) -> None:
    p = record.position or Position(meter_id=b"")
    locked = locked_units(p, record.retail_price) if record.position else 0
    if record.refunded:
        sums.refunded_intervals += 1
        return
    if not record.delivered:
        sums.pending_intervals += 1
        sums.pending_locked_units += locked
        return
    d = record.delivery
    imported, exported = (d.imported_wh, d.exported_wh) if d else (0, 0)
    change = d.balance_change if d else 0
    sums.settled_intervals += 1
    sums.imported_wh += imported
    sums.exported_wh += exported
    sums.bought_wh += p.bought_wh
    sums.sold_wh += p.sold_wh
    sums.received_wh += min(p.bought_wh, imported)
    sums.delivered_wh += min(p.sold_wh, exported)
    grid_in = max(0, imported - p.bought_wh)
    grid_out = max(0, exported - p.sold_wh)
    unused = max(0, p.bought_wh - imported)
    undelivered = max(0, p.sold_wh - exported)
    sums.grid_import_wh += grid_in
    sums.grid_export_wh += grid_out
    sums.unused_wh += unused
    sums.undelivered_wh += undelivered
    lines = {
        "local_purchases": -p.cost_milli,
        "local_sales": p.value_milli,
        "grid_import": -grid_in * record.retail_price,
        "grid_export": grid_out * record.feed_in_price,
        "unused_purchases_sold_back": unused * record.feed_in_price,
        "undelivered_sales_bought_back": -undelivered * record.retail_price,
    }
    settled = change - locked
    energy_net = settled - record.shortfall  # what the interval cost, paid or not
    lines["other_energy_and_rounding"] = energy_net * MILLI - sum(lines.values())
    for key, milli in lines.items():
        sums.lines_milli[key] += milli
    sums.cost_milli += p.cost_milli
    sums.value_milli += p.value_milli
    sums.settled_units += settled
    sums.shortfall_units += record.shortfall


def _round_units(milli: int) -> int:
    return int((Decimal(milli) / MILLI).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _currency(units: int, decimals: int) -> float:
    return float(Decimal(units).scaleb(-decimals))


def _average_price(milli: int, wh: int, decimals: int) -> float | None:
    """Currency per kWh of `milli` thousandths of a unit for `wh` (None without energy)."""
    if wh == 0:
        return None
    units_per_kwh = Decimal(milli) / wh  # (milli/1000 units) / (wh/1000 kWh)
    return float(
        units_per_kwh.scaleb(-decimals).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    )


def build_statement(inputs: StatementInputs) -> dict[str, Any]:
    """The statement as a JSON-ready document, with its hash."""
    sums = _Sums()
    for record in sorted(inputs.intervals, key=lambda r: r.interval):
        _add_interval(sums, record)
    energy_net_units = sums.settled_units - sums.shortfall_units
    units = {key: _round_units(milli) for key, milli in sums.lines_milli.items()}
    units["other_energy_and_rounding"] = energy_net_units - sum(
        v for k, v in units.items() if k != "other_energy_and_rounding"
    )
    wh = {
        "local_purchases": sums.bought_wh,
        "local_sales": sums.sold_wh,
        "grid_import": sums.grid_import_wh,
        "grid_export": sums.grid_export_wh,
        "unused_purchases_sold_back": sums.unused_wh,
        "undelivered_sales_bought_back": sums.undelivered_wh,
        "other_energy_and_rounding": None,
    }
    d = inputs.decimals
    charges = -energy_net_units
    document: dict[str, Any] = {
        "meter_id": inputs.meter_id,
        "owner": inputs.owner,
        "period": inputs.month.label,
        "timezone": inputs.month.timezone,
        "period_start": iso(inputs.month.start),
        "period_end": iso(inputs.month.end),
        "currency": {"symbol": inputs.symbol, "decimals": d},
        "chain": {"chain_id": inputs.chain_id, "market": inputs.market},
        "intervals": {
            "settled": sums.settled_intervals,
            "pending": sums.pending_intervals,
            "refunded": sums.refunded_intervals,
        },
        "energy": {
            "imported_wh": sums.imported_wh,
            "exported_wh": sums.exported_wh,
            "grid_import_wh": sums.imported_wh - sums.received_wh,
            "grid_export_wh": sums.exported_wh - sums.delivered_wh,
            "local_bought_wh": sums.bought_wh,
            "local_sold_wh": sums.sold_wh,
            "local_received_wh": sums.received_wh,
            "local_delivered_wh": sums.delivered_wh,
        },
        "local_purchases": {
            "wh": sums.bought_wh,
            "amount": _currency(_round_units(sums.cost_milli), d),
            "average_price_per_kwh": _average_price(sums.cost_milli, sums.bought_wh, d),
        },
        "local_sales": {
            "wh": sums.sold_wh,
            "amount": _currency(_round_units(sums.value_milli), d),
            "average_price_per_kwh": _average_price(sums.value_milli, sums.sold_wh, d),
        },
        "lines": [
            {
                "key": key,
                "wh": wh[key],
                "amount_units": units[key],
                "amount": _currency(units[key], d),
            }
            for key in LINE_KEYS
        ],
        "totals": {
            "charges_units": charges,
            "charges": _currency(charges, d),
            "paid_from_balance_units": -sums.settled_units,
            "paid_from_balance": _currency(-sums.settled_units, d),
            "owed_units": sums.shortfall_units,
            "owed": _currency(sums.shortfall_units, d),
            "held_for_pending_intervals_units": sums.pending_locked_units,
        },
        "certificates": {
            "issued_wh": inputs.certificates_issued_wh,
            "received_wh": inputs.certificates_received_wh,
            "retired_for_meter_wh": inputs.certificates_retired_for_wh,
            "retired_by_owner_wh": inputs.certificates_retired_by_owner_wh,
        },
        "fund_revenue_units": inputs.fund_revenue_units,
        "fund_revenue": _currency(inputs.fund_revenue_units, d),
    }
    document["statement_hash"] = "0x" + statement_hash(document).hex()
    if inputs.payment:
        document["payment"] = dict(inputs.payment)
    return document


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8, without the live sections."""
    hashed = {k: v for k, v in document.items() if k not in HASH_EXCLUDED}
    return json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def statement_hash(document: Mapping[str, Any]) -> bytes:
    """keccak256 of the statement's canonical JSON: what Billing records."""
    return bytes(keccak(canonical_json(document)))


# ---- reading the chain


def _intervals_in(events: Iterable[Any], month: Month) -> list[Any]:
    return [e for e in events if month.start <= int(e["args"]["interval"]) < month.end]


def read_intervals(
    market: EnergyMarketClient, meter_id: str, month: Month, *, from_block: int = 0
) -> list[IntervalRecord]:
    """The meter's batch positions, delivery lines and shortfalls of every interval in the
    month, from the market's events."""
    raw = meter_id_to_bytes32(meter_id)
    batches = {
        int(e["args"]["interval"]): e["args"]
        for e in _intervals_in(market.events("BatchSettled", from_block=from_block), month)
    }
    deliveries = {
        int(e["args"]["interval"]): e["args"]
        for e in _intervals_in(market.events("DeliverySettled", from_block=from_block), month)
    }
    refunded = {
        int(e["args"]["interval"])
        for e in _intervals_in(market.events("IntervalRefunded", from_block=from_block), month)
    }
    shortfalls: dict[int, int] = {}
    for e in _intervals_in(market.events("Shortfall", from_block=from_block, meterId=raw), month):
        interval = int(e["args"]["interval"])
        shortfalls[interval] = shortfalls.get(interval, 0) + int(e["args"]["amount"])
    tariffs = market.tariffs()
    records = []
    for interval in sorted(set(batches) | set(deliveries) | refunded):
        batch = batches.get(interval)
        position = None
        retail, feed_in = tariffs
        if batch is not None:
            retail, feed_in = int(batch["retailPrice"]), int(batch["feedInPrice"])
            position = next(
                (p for p in decode_positions(bytes(batch["positions"])) if p.meter_id == raw), None
            )
        delivery = deliveries.get(interval)
        line = None
        if delivery is not None:
            line = next(
                (
                    s
                    for s in decode_settlements(bytes(delivery["settlements"]))
                    if s.meter_id == raw
                ),
                None,
            )
            if batch is None:
                retail, feed_in = _delivery_tariffs(market, interval, retail, feed_in)
        if position is None and line is None:
            continue
        records.append(
            IntervalRecord(
                interval,
                retail,
                feed_in,
                position,
                line,
                delivery is not None,
                interval in refunded,
                shortfalls.get(interval, 0),
            )
        )
    return records


def _delivery_tariffs(
    market: EnergyMarketClient, interval: int, retail: int, feed_in: int
) -> tuple[int, int]:
    """The tariffs an interval without a batch was delivered at: its settleDelivery call's."""
    events = market.events("DeliverySettled", interval=interval)
    if not events:
        return retail, feed_in
    tx = market.w3.eth.get_transaction(events[-1]["transactionHash"])
    _, args = market.contract.decode_function_input(tx["input"])
    return int(args["retailPrice"]), int(args["feedInPrice"])


def certificate_figures(
    book: CertificateBook, meter_id: str, owner: str, month: Month
) -> dict[str, int]:
    """Certificates of the meter in the month: issued for its export, minted to its owner,
    retired in its name at issuance, and retired by its owner."""
    in_month = {
        c.id: c for c in book.certificates.values() if month.start <= c.interval_start < month.end
    }
    mine = [c for c in in_month.values() if c.meter_id == meter_id]
    return {
        "issued": sum(c.issued_wh for c in mine),
        "received": sum(book.minted.get((c.id, owner), 0) for c in mine),
        "retired_for": sum(
            r.wh
            for r in book.retirements
            if r.buyer_meter_id == meter_id and r.certificate_id in in_month
        ),
        "retired_by_owner": sum(
            r.wh
            for r in book.retirements
            if r.buyer_meter_id is None
            and r.holder == owner
            and month.start <= r.period_start < month.end
        ),
    }


def fund_revenue_claimed(funds: Sequence[CommunityFundClient], account: str, month: Month) -> int:
    """Revenue `account` claimed from the funds within the month (by block time)."""
    total = 0
    for fund in funds:
        for event in fund.events("RevenueClaimed", account=account):
            moment = int(fund.w3.eth.get_block(event["blockNumber"])["timestamp"])
            if month.start <= moment < month.end:
                total += int(event["args"]["amount"])
    return total


def read_statement_inputs(
    market: EnergyMarketClient,
    meter_id: str,
    month: Month,
    *,
    certificates: EnergyCertificatesClient | None = None,
    funds: Sequence[CommunityFundClient] = (),
    billing: BillingClient | None = None,
    from_block: int = 0,
) -> StatementInputs:
    """Everything the chain recorded for a meter's statement of `month`."""
    owner = str(market.registry.meter(meter_id).owner)
    credit = market.credit
    figures = dict.fromkeys(("issued", "received", "retired_for", "retired_by_owner"), 0)
    if certificates is not None:
        book = read_book(certificates, from_block=from_block, interval_s=market.interval_seconds)
        figures = certificate_figures(book, meter_id, owner, month)
    payment: dict[str, Any] = {}
    if billing is not None:
        recorded, owed, paid = billing.statement(meter_id, month.number)
        if any(recorded):
            payment = {
                "recorded_hash": "0x" + recorded.hex(),
                "billing": billing.address,
                "owed_units": owed,
                "paid_units": paid,
                "outstanding_units": owed - paid,
            }
    return StatementInputs(
        meter_id=meter_id,
        owner=owner,
        month=month,
        decimals=credit.decimals,
        symbol=str(credit.contract.functions.symbol().call()),
        chain_id=market.sender.chain_id,
        market=market.address,
        intervals=read_intervals(market, meter_id, month, from_block=from_block),
        certificates_issued_wh=figures["issued"],
        certificates_received_wh=figures["received"],
        certificates_retired_for_wh=figures["retired_for"],
        certificates_retired_by_owner_wh=figures["retired_by_owner"],
        fund_revenue_units=fund_revenue_claimed(funds, owner, month),
        payment=payment,
    )


def record_statement(
    billing: BillingClient, statement: Mapping[str, Any], month: Month
) -> TxReceipt:
    """Record the statement's hash and what it says is owed (the biller's role)."""
    digest = bytes.fromhex(str(statement["statement_hash"])[2:])
    owed = int(statement["totals"]["owed_units"])
    return billing.record(str(statement["meter_id"]), month.number, digest, owed)


@dataclass(frozen=True)
class BalancePayment:
    """Where paying a statement from the meter's market balance stands."""

    paid_units: int = 0  # paid now
    requested_units: int = 0  # asked from the market's balance, payable from `available_at`
    available_at: int = 0


def pay_from_meter_balance(
    market: EnergyMarketClient,
    billing: BillingClient,
    meter_id: str,
    month: Month,
    owner: LocalAccount,
) -> BalancePayment:
    """Pay what a statement says is owed from the meter's market balance, in the market's two
    steps (the owner's key; run it again after the withdrawal delay):

    1. no withdrawal of the amount pending: ask the market for it (`requestWithdrawal`);
    2. once it is due: withdraw it to the owner's wallet and pay the statement with a permit.
    """
    _, owed, paid = billing.statement(meter_id, month.number)
    outstanding = owed - paid
    if outstanding <= 0:
        return BalancePayment()
    amount, available_at = market.pending_withdrawal(meter_id)
    now = int(market.w3.eth.get_block("latest")["timestamp"])
    if amount < outstanding:
        market.request_withdrawal(meter_id, outstanding)
        _, available_at = market.pending_withdrawal(meter_id)
        return BalancePayment(requested_units=outstanding, available_at=available_at)
    if now < available_at:
        return BalancePayment(requested_units=amount, available_at=available_at)
    market.withdraw(meter_id, owner.address)
    billing.pay_with_permit(meter_id, month.number, outstanding, owner, now + 3600)
    return BalancePayment(paid_units=outstanding)
