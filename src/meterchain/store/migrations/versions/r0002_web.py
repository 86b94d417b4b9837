"""The web interface: users, tokens, sessions, audit log; the community as the monitor sees it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("meter_id", sa.String(32), nullable=True),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_users_username", "users", ["username"], unique=True)
    op.create_index("ix_users_meter_id", "users", ["meter_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_index("ix_api_tokens_token_sha256", "api_tokens", ["token_sha256"], unique=True)
    op.create_table(
        "web_sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    op.create_table(
        "login_attempts",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_login_attempts_key", "login_attempts", ["key"])
    op.create_index("ix_login_attempts_at", "login_attempts", ["at"])
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    op.create_index("ix_audit_log_target", "audit_log", ["target"])
    op.create_table(
        "meters",
        sa.Column("meter_id", sa.String(32), primary_key=True),
        sa.Column("protocol", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(42), nullable=True),
        sa.Column("signer", sa.String(42), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("pv_kwp", sa.Float(), nullable=False),
        sa.Column("battery_kwh", sa.Float(), nullable=False),
        sa.Column("nominal_voltage_v", sa.Float(), nullable=False),
        sa.Column("last_seen_at", TS, nullable=True),
        sa.Column("board_status", sa.String(16), nullable=False),
        sa.Column("meter_error", sa.Text(), nullable=True),
        sa.Column("last_reading_at", TS, nullable=True),
        sa.Column("last_power_w", sa.Float(), nullable=True),
        sa.Column("last_voltage_v", sa.Float(), nullable=True),
        sa.Column("last_import_wh", sa.Float(), nullable=True),
        sa.Column("last_export_wh", sa.Float(), nullable=True),
        sa.Column("last_soc_fraction", sa.Float(), nullable=True),
        sa.Column("relay", sa.String(8), nullable=True),
        sa.Column("last_settled_interval", sa.BigInteger(), nullable=True),
        sa.Column("balance_units", sa.BigInteger(), nullable=True),
        sa.Column("config_version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "meter_intervals",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("meter_id", sa.String(32), nullable=False),
        sa.Column("interval_start", TS, nullable=False),
        sa.Column("import_wh", sa.Float(), nullable=False),
        sa.Column("export_wh", sa.Float(), nullable=False),
        sa.Column("imported_wh", sa.Float(), nullable=False),
        sa.Column("exported_wh", sa.Float(), nullable=False),
        sa.Column("bought_wh", sa.Float(), nullable=False),
        sa.Column("sold_wh", sa.Float(), nullable=False),
        sa.Column("power_w", sa.Float(), nullable=True),
        sa.Column("voltage_v", sa.Float(), nullable=True),
        sa.Column("soc_fraction", sa.Float(), nullable=True),
        sa.Column("battery_power_w", sa.Float(), nullable=True),
        sa.Column("savings", sa.Float(), nullable=False),
        sa.Column("balance_units", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("meter_id", "interval_start", name="uq_meter_intervals_meter_start"),
    )
    op.create_index("ix_meter_intervals_start", "meter_intervals", ["interval_start"])
    op.create_table(
        "market_intervals",
        sa.Column("interval", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("interval_start", TS, nullable=False),
        sa.Column("price", sa.Float(), nullable=True),
        sa.Column("retail_price", sa.Float(), nullable=False),
        sa.Column("feed_in_price", sa.Float(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("trades", sa.Integer(), nullable=False),
        sa.Column("traded_wh", sa.Float(), nullable=False),
        sa.Column("imported_wh", sa.Float(), nullable=False),
        sa.Column("exported_wh", sa.Float(), nullable=False),
        sa.Column("savings", sa.Float(), nullable=False),
        sa.Column("batch_tx", sa.String(66), nullable=True),
        sa.Column("batch_gas", sa.BigInteger(), nullable=False),
        sa.Column("delivery_tx", sa.String(66), nullable=True),
        sa.Column("delivery_gas", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("missing_readings", sa.Text(), nullable=True),
        sa.Column("cleared_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
    )
    op.create_index("ix_market_intervals_interval_start", "market_intervals", ["interval_start"])
    op.create_table(
        "trades",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("interval", sa.BigInteger(), nullable=False),
        sa.Column("buyer", sa.String(32), nullable=False),
        sa.Column("seller", sa.String(32), nullable=False),
        sa.Column("quantity_wh", sa.BigInteger(), nullable=False),
        sa.Column("price", sa.Float(), nullable=False),
    )
    op.create_index("ix_trades_interval", "trades", ["interval"])
    op.create_index("ix_trades_buyer", "trades", ["buyer"])
    op.create_index("ix_trades_seller", "trades", ["seller"])
    op.create_table(
        "alarms",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("meter_id", sa.String(32), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("acknowledged_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_alarms_kind", "alarms", ["kind"])
    op.create_index("ix_alarms_meter_id", "alarms", ["meter_id"])
    op.create_index("ix_alarms_started_at", "alarms", ["started_at"])
    op.create_table(
        "board_configs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("meter_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("acked_at", TS, nullable=True),
        sa.Column("effective_from", TS, nullable=True),
        sa.Column("applied_at", TS, nullable=True),
        sa.UniqueConstraint("meter_id", "version", name="uq_board_configs_version"),
    )
    op.create_index("ix_board_configs_meter_id", "board_configs", ["meter_id"])


def downgrade() -> None:
    for table in (
        "board_configs",
        "alarms",
        "trades",
        "market_intervals",
        "meter_intervals",
        "meters",
        "audit_log",
        "login_attempts",
        "web_sessions",
        "api_tokens",
        "users",
    ):
        op.drop_table(table)
