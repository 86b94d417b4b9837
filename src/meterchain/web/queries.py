"""What the pages and the API read: plain functions of a database session, JSON-ready values.

Times are returned as aware UTC datetimes (the templates and the API convert them to the
community's zone); energy in Wh, power in W, prices per kWh, balances in smallest units.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from meterchain.agents.prodist import (
    DRC_LIMIT_PERCENT,
    DRP_LIMIT_PERCENT,
    READINGS_PER_WEEK,
    duration_indicators,
)
from meterchain.store.accounts import AuditRow
from meterchain.store.community import (
    AlarmRow,
    BoardConfigRow,
    MarketIntervalRow,
    MeterIntervalRow,
    MeterRow,
    TradeRow,
)

Span = Literal["day", "week", "month"]
SPANS: dict[str, timedelta] = {
    "day": timedelta(days=1),
    "week": timedelta(days=7),
    "month": timedelta(days=30),
}
COMMUNITY_INTERVALS = 96


def utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def iso(moment: datetime | None) -> str | None:
    found = utc(moment)
    return None if found is None else found.isoformat().replace("+00:00", "Z")


def meter_json(row: MeterRow) -> dict[str, Any]:
    return {
        "meter_id": row.meter_id,
        "protocol": row.protocol,
        "kind": row.kind,
        "owner": row.owner,
        "signer": row.signer,
        "revoked": row.revoked,
        "pv_kwp": row.pv_kwp,
        "battery_kwh": row.battery_kwh,
        "nominal_voltage_v": row.nominal_voltage_v,
        "board_status": row.board_status,
        "meter_error": row.meter_error,
        "last_seen_at": iso(row.last_seen_at),
        "last_reading_at": iso(row.last_reading_at),
        "power_w": row.last_power_w,
        "voltage_v": row.last_voltage_v,
        "import_wh": row.last_import_wh,
        "export_wh": row.last_export_wh,
        "soc_fraction": row.last_soc_fraction,
        "relay": row.relay,
        "last_settled_interval": row.last_settled_interval,
        "last_settled_at": iso(
            None
            if row.last_settled_interval is None
            else datetime.fromtimestamp(row.last_settled_interval, UTC)
        ),
        "balance_units": row.balance_units,
        "config_version": row.config_version,
    }


def meters(session: Session, meter_id: str | None = None) -> list[dict[str, Any]]:
    """Every meter (or only `meter_id`'s), by id."""
    query = select(MeterRow).order_by(MeterRow.meter_id)
    if meter_id is not None:
        query = query.where(MeterRow.meter_id == meter_id)
    return [meter_json(row) for row in session.scalars(query)]


def meter(session: Session, meter_id: str) -> dict[str, Any] | None:
    row = session.get(MeterRow, meter_id)
    return None if row is None else meter_json(row)


def interval_json(row: MarketIntervalRow) -> dict[str, Any]:
    return {
        "interval": row.interval,
        "start": iso(row.interval_start),
        "price": row.price,
        "retail_price": row.retail_price,
        "feed_in_price": row.feed_in_price,
        "trades": row.trades,
        "traded_wh": row.traded_wh,
        "imported_wh": row.imported_wh,
        "exported_wh": row.exported_wh,
        "savings": row.savings,
        "batch_tx": row.batch_tx,
        "batch_gas": row.batch_gas,
        "delivery_tx": row.delivery_tx,
        "delivery_gas": row.delivery_gas,
        "error": row.error,
        "void_reason": row.void_reason,
        "missing_readings": json.loads(row.missing_readings) if row.missing_readings else [],
        "cleared_at": iso(row.cleared_at),
        "delivered_at": iso(row.delivered_at),
    }


def intervals(
    session: Session, limit: int = COMMUNITY_INTERVALS, before: int | None = None
) -> list[dict[str, Any]]:
    """The latest intervals (before `before`, a unix start), oldest first."""
    query = select(MarketIntervalRow).order_by(MarketIntervalRow.interval.desc()).limit(limit)
    if before is not None:
        query = query.where(MarketIntervalRow.interval < before)
    rows = list(session.scalars(query))
    return [interval_json(row) for row in reversed(rows)]


def interval_detail(session: Session, interval: int) -> dict[str, Any] | None:
    row = session.get(MarketIntervalRow, interval)
    if row is None:
        return None
    found = interval_json(row)
    found["trade_list"] = [
        trade_json(t)
        for t in session.scalars(
            select(TradeRow).where(TradeRow.interval == interval).order_by(TradeRow.id)
        )
    ]
    return found


def trade_json(row: TradeRow) -> dict[str, Any]:
    return {
        "interval": row.interval,
        "start": iso(datetime.fromtimestamp(row.interval, UTC)),
        "buyer": row.buyer,
        "seller": row.seller,
        "quantity_wh": row.quantity_wh,
        "price": row.price,
    }


def community(session: Session) -> dict[str, Any]:
    """The community at a glance: every meter's power now, the last day's intervals, totals.

    `local_share` is the part of the energy the households imported that they bought from
    neighbours (energy traded over energy imported) over the intervals shown.
    """
    recent = intervals(session)
    imported = sum(i["imported_wh"] for i in recent)
    traded = sum(i["traded_wh"] for i in recent)
    open_alarms = session.scalar(
        select(func.count()).select_from(AlarmRow).where(AlarmRow.ended_at.is_(None))
    )
    power = session.execute(
        select(
            MeterRow.meter_id,
            MeterRow.last_power_w,
            MeterRow.board_status,
            MeterRow.revoked,
            MeterRow.last_soc_fraction,
        ).order_by(MeterRow.meter_id)
    ).all()
    return {
        "meters": [
            {
                "meter_id": m,
                "power_w": p,
                "board_status": status,
                "revoked": revoked,
                "soc_fraction": soc,
            }
            for m, p, status, revoked, soc in power
        ],
        "intervals": recent,
        "totals": {
            "traded_wh": traded,
            "imported_wh": imported,
            "exported_wh": sum(i["exported_wh"] for i in recent),
            "savings": sum(i["savings"] for i in recent),
            "local_share": traded / imported if imported > 0 else None,
            "intervals": len(recent),
        },
        "open_alarms": int(open_alarms or 0),
        "latest": recent[-1] if recent else None,
        "last_price": next((i["price"] for i in reversed(recent) if i["price"] is not None), None),
    }


def meter_series(
    session: Session, meter_id: str, span: Span = "day", end: datetime | None = None
) -> dict[str, Any]:
    """A meter's intervals over a day, a week or a month ending at `end` (default: its latest),
    as columns (one list per quantity) for the charts."""
    if end is None:
        end = utc(
            session.scalar(
                select(func.max(MeterIntervalRow.interval_start)).where(
                    MeterIntervalRow.meter_id == meter_id
                )
            )
        )
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "t",
            "imported_wh",
            "exported_wh",
            "bought_wh",
            "sold_wh",
            "soc_fraction",
            "voltage_v",
            "balance_units",
            "savings",
        )
    }
    if end is None:
        return {"meter_id": meter_id, "span": span, "start": None, "end": None, **columns}
    start = end - SPANS[span]
    rows = session.execute(
        select(
            MeterIntervalRow.interval_start,
            MeterIntervalRow.imported_wh,
            MeterIntervalRow.exported_wh,
            MeterIntervalRow.bought_wh,
            MeterIntervalRow.sold_wh,
            MeterIntervalRow.soc_fraction,
            MeterIntervalRow.voltage_v,
            MeterIntervalRow.balance_units,
            MeterIntervalRow.savings,
        )
        .where(
            MeterIntervalRow.meter_id == meter_id,
            MeterIntervalRow.interval_start > start,
            MeterIntervalRow.interval_start <= end,
        )
        .order_by(MeterIntervalRow.interval_start)
    ).all()
    names = list(columns)
    for row in rows:
        columns["t"].append(iso(row[0]))
        for name, value in zip(names[1:], row[1:], strict=True):
            columns[name].append(value)
    return {"meter_id": meter_id, "span": span, "start": iso(start), "end": iso(end), **columns}


def meter_totals(session: Session, meter_id: str) -> dict[str, Any]:
    """A meter's energy traded and savings against the grid tariffs, all time."""
    bought, sold, savings, imported, exported = session.execute(
        select(
            func.coalesce(func.sum(MeterIntervalRow.bought_wh), 0.0),
            func.coalesce(func.sum(MeterIntervalRow.sold_wh), 0.0),
            func.coalesce(func.sum(MeterIntervalRow.savings), 0.0),
            func.coalesce(func.sum(MeterIntervalRow.imported_wh), 0.0),
            func.coalesce(func.sum(MeterIntervalRow.exported_wh), 0.0),
        ).where(MeterIntervalRow.meter_id == meter_id)
    ).one()
    return {
        "bought_wh": float(bought),
        "sold_wh": float(sold),
        "savings": float(savings),
        "imported_wh": float(imported),
        "exported_wh": float(exported),
    }


def meter_trades(session: Session, meter_id: str, limit: int = 50) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(TradeRow)
        .where(or_(TradeRow.buyer == meter_id, TradeRow.seller == meter_id))
        .order_by(TradeRow.interval.desc(), TradeRow.id.desc())
        .limit(limit)
    )
    return [trade_json(t) for t in rows]


def voltage_quality(session: Session, meter_id: str, nominal_v: float) -> dict[str, Any]:
    """DRP and DRC over the meter's last week of readings (PRODIST Module 8)."""
    voltages = session.scalars(
        select(MeterIntervalRow.voltage_v)
        .where(MeterIntervalRow.meter_id == meter_id, MeterIntervalRow.voltage_v.is_not(None))
        .order_by(MeterIntervalRow.interval_start.desc())
        .limit(READINGS_PER_WEEK)
    ).all()
    try:
        found = duration_indicators([v for v in voltages if v is not None], nominal_v)
    except ValueError:
        return {"readings": 0, "nominal_v": nominal_v, "error": "no PRODIST table"}
    return {
        "nominal_v": nominal_v,
        "readings": found.readings,
        "drp_percent": found.drp_percent,
        "drc_percent": found.drc_percent,
        "drp_limit_percent": DRP_LIMIT_PERCENT,
        "drc_limit_percent": DRC_LIMIT_PERCENT,
        "drp_exceeded": found.drp_exceeded,
        "drc_exceeded": found.drc_exceeded,
    }


def config_json(row: BoardConfigRow) -> dict[str, Any]:
    return {
        "meter_id": row.meter_id,
        "version": row.version,
        "config": json.loads(row.config),
        "status": row.status,
        "reason": row.reason,
        "requested_by": row.requested_by,
        "requested_at": iso(row.requested_at),
        "acked_at": iso(row.acked_at),
        "effective_from": iso(row.effective_from),
        "applied_at": iso(row.applied_at),
    }


def configs(session: Session, meter_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """The meter's configuration versions, newest first."""
    rows = session.scalars(
        select(BoardConfigRow)
        .where(BoardConfigRow.meter_id == meter_id)
        .order_by(BoardConfigRow.version.desc())
        .limit(limit)
    )
    return [config_json(row) for row in rows]


def config_in_force(session: Session, meter_id: str) -> dict[str, Any] | None:
    """The newest version the board accepted (or None: the board runs its defaults)."""
    row = session.scalars(
        select(BoardConfigRow)
        .where(
            BoardConfigRow.meter_id == meter_id,
            BoardConfigRow.status.in_(("accepted", "applied")),
        )
        .order_by(BoardConfigRow.version.desc())
        .limit(1)
    ).first()
    return None if row is None else config_json(row)


def alarm_json(row: AlarmRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "severity": row.severity,
        "meter_id": row.meter_id,
        "message": row.message,
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
        "acknowledged_at": iso(row.acknowledged_at),
        "acknowledged_by": row.acknowledged_by,
        "active": row.ended_at is None,
    }


def alarms(
    session: Session, *, meter_id: str | None = None, only_meter: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    """Alarms, newest first: all, or (`only_meter`) those of one meter."""
    query = select(AlarmRow).order_by(AlarmRow.id.desc()).limit(limit)
    if only_meter:
        query = query.where(AlarmRow.meter_id == meter_id)
    return [alarm_json(row) for row in session.scalars(query)]


def audit(session: Session, limit: int = 200) -> list[dict[str, Any]]:
    rows = session.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(limit))
    return [
        {
            "at": iso(r.at),
            "actor": r.actor,
            "action": r.action,
            "target": r.target,
            "before": json.loads(r.before) if r.before else None,
            "after": json.loads(r.after) if r.after else None,
        }
        for r in rows
    ]


def live_stamp(session: Session) -> str:
    """Changes whenever an interval settles or an alarm starts, ends or is acknowledged."""
    delivered = session.scalar(
        select(func.max(MarketIntervalRow.interval)).where(
            MarketIntervalRow.delivered_at.is_not(None)
        )
    )
    cleared = session.scalar(select(func.max(MarketIntervalRow.interval)))
    alarm_id = session.scalar(select(func.max(AlarmRow.id)))
    ended = session.scalar(
        select(func.count()).select_from(AlarmRow).where(AlarmRow.ended_at.is_not(None))
    )
    acked = session.scalar(
        select(func.count()).select_from(AlarmRow).where(AlarmRow.acknowledged_at.is_not(None))
    )
    configs_seen = session.scalar(
        select(func.count()).select_from(BoardConfigRow).where(BoardConfigRow.acked_at.is_not(None))
    )
    return f"{delivered}:{cleared}:{alarm_id}:{ended}:{acked}:{configs_seen}"


def latest_delivered(session: Session) -> int | None:
    return session.scalar(
        select(func.max(MarketIntervalRow.interval)).where(
            MarketIntervalRow.delivered_at.is_not(None)
        )
    )


def imported_by_interval(session: Session, meter_id: str) -> dict[int, int]:
    """What the meter imported in each recorded interval (Wh, by interval start in Unix
    seconds): the consumption 24/7 matching covers."""
    rows = session.execute(
        select(MeterIntervalRow.interval_start, MeterIntervalRow.imported_wh).where(
            MeterIntervalRow.meter_id == meter_id
        )
    ).all()
    found: dict[int, int] = {}
    for start, imported in rows:
        moment = utc(start)
        if moment is not None and imported:
            found[int(moment.timestamp())] = round(imported)
    return found


def meter_ids(session: Session) -> list[str]:
    return list(session.scalars(select(MeterRow.meter_id).order_by(MeterRow.meter_id)))


def alarms_of_kinds(
    session: Session, meter_id: str, prefix: str, limit: int = 20
) -> list[dict[str, Any]]:
    """A meter's alarms whose kind starts with `prefix`, newest first."""
    rows = session.scalars(
        select(AlarmRow)
        .where(AlarmRow.meter_id == meter_id, AlarmRow.kind.startswith(prefix))
        .order_by(AlarmRow.id.desc())
        .limit(limit)
    )
    return [alarm_json(row) for row in rows]
