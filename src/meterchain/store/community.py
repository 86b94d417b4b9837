"""The operator's view of the community, as the monitor agent records it for the web.

Meters and their last state, one row per meter and interval (registers, energy, voltage,
state of charge, balance after settlement), each interval's clearing and settlement with its
chain transactions, trades, alarms, and the trading-device configurations with their round
trip to the boards. Times are UTC; energy in Wh, power in W, prices in currency per kWh,
balances in integer smallest credit units.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from meterchain.store.db import Base

BIG_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER only


class MeterRow(Base):
    """A meter of the community and what was last heard from its board."""

    __tablename__ = "meters"

    meter_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    protocol: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16), default="prosumer")
    owner: Mapped[str | None] = mapped_column(String(42), nullable=True)
    signer: Mapped[str | None] = mapped_column(String(42), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    pv_kwp: Mapped[float] = mapped_column(Float, default=0.0)
    battery_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    nominal_voltage_v: Mapped[float] = mapped_column(Float, default=220.0)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    board_status: Mapped[str] = mapped_column(String(16), default="unknown")
    meter_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_reading_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_voltage_v: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_import_wh: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_export_wh: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_soc_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    relay: Mapped[str | None] = mapped_column(String(8), nullable=True)
    last_settled_interval: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    balance_units: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    config_version: Mapped[int] = mapped_column(Integer, default=0)


class MeterIntervalRow(Base):
    """One meter in one interval: registers at its end, energy in it, voltage, SoC, balance."""

    __tablename__ = "meter_intervals"
    __table_args__ = (
        UniqueConstraint("meter_id", "interval_start", name="uq_meter_intervals_meter_start"),
        Index("ix_meter_intervals_start", "interval_start"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(String(32))
    interval_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    import_wh: Mapped[float] = mapped_column(Float)
    export_wh: Mapped[float] = mapped_column(Float)
    imported_wh: Mapped[float] = mapped_column(Float, default=0.0)
    exported_wh: Mapped[float] = mapped_column(Float, default=0.0)
    bought_wh: Mapped[float] = mapped_column(Float, default=0.0)
    sold_wh: Mapped[float] = mapped_column(Float, default=0.0)
    power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    voltage_v: Mapped[float | None] = mapped_column(Float, nullable=True)
    soc_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    battery_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    savings: Mapped[float] = mapped_column(Float, default=0.0)
    balance_units: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class MarketIntervalRow(Base):
    """An interval's clearing and settlement, with the community's totals in it."""

    __tablename__ = "market_intervals"

    interval: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix start
    interval_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    price: Mapped[float | None] = mapped_column(Float, nullable=True)
    retail_price: Mapped[float] = mapped_column(Float)
    feed_in_price: Mapped[float] = mapped_column(Float)
    orders: Mapped[int] = mapped_column(Integer, default=0)
    trades: Mapped[int] = mapped_column(Integer, default=0)
    traded_wh: Mapped[float] = mapped_column(Float, default=0.0)
    imported_wh: Mapped[float] = mapped_column(Float, default=0.0)
    exported_wh: Mapped[float] = mapped_column(Float, default=0.0)
    savings: Mapped[float] = mapped_column(Float, default=0.0)
    batch_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    batch_gas: Mapped[int] = mapped_column(BigInteger, default=0)
    delivery_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    delivery_gas: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    void_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # announced void
    missing_readings: Mapped[str | None] = mapped_column(Text, nullable=True)
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TradeRow(Base):
    """A matched quantity between two meters in one interval."""

    __tablename__ = "trades"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    interval: Mapped[int] = mapped_column(BigInteger, index=True)
    buyer: Mapped[str] = mapped_column(String(32), index=True)
    seller: Mapped[str] = mapped_column(String(32), index=True)
    quantity_wh: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[float] = mapped_column(Float)


class AlarmRow(Base):
    """Something wrong: a start, an end (None while it lasts) and an acknowledgement."""

    __tablename__ = "alarms"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    meter_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    message: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class BoardConfigRow(Base):
    """One version of a meter's trading-device configuration and its round trip to the board."""

    __tablename__ = "board_configs"
    __table_args__ = (UniqueConstraint("meter_id", "version", name="uq_board_configs_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)
    config: Mapped[str] = mapped_column(Text)  # JSON of agents.board_config.TradingConfig
    status: Mapped[str] = mapped_column(String(16))  # sent, accepted, refused, applied
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    effective_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def open_alarm(session: Session, kind: str, meter_id: str | None) -> AlarmRow | None:
    """The alarm of `kind` for `meter_id` that has not ended, if any."""
    return session.scalars(
        select(AlarmRow)
        .where(AlarmRow.kind == kind, AlarmRow.meter_id == meter_id, AlarmRow.ended_at.is_(None))
        .order_by(AlarmRow.id.desc())
        .limit(1)
    ).first()


def raise_alarm(
    session: Session,
    *,
    kind: str,
    meter_id: str | None,
    severity: str,
    message: str,
    at: datetime,
    instant: bool = False,
) -> AlarmRow | None:
    """Start an alarm unless one of its kind is under way (then update its severity and text).

    Returns the new alarm, or None when it was already raised. An `instant` alarm (a refused
    reading, a failed settlement) ends as it starts and waits only for an acknowledgement.
    """
    if not instant:
        existing = open_alarm(session, kind, meter_id)
        if existing is not None:
            existing.severity, existing.message = severity, message
            return None
    row = AlarmRow(
        kind=kind,
        severity=severity,
        meter_id=meter_id,
        message=message,
        started_at=at,
        ended_at=at if instant else None,
    )
    session.add(row)
    session.flush()
    return row


def end_alarm(
    session: Session, *, kind: str, meter_id: str | None, at: datetime
) -> AlarmRow | None:
    """End the alarm of `kind` under way for `meter_id`; returns it (None if there was none)."""
    existing = open_alarm(session, kind, meter_id)
    if existing is not None:
        existing.ended_at = at
    return existing
