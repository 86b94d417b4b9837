"""Baseline: the outbox and the agents' records, as `create_all` made them before Alembic.

A database written before migrations existed has some or all of these tables and no
`alembic_version`: each table is created only where it is missing, so upgrading such a
database keeps its rows.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _exists(name: str) -> bool:
    return name in sa.inspect(op.get_bind()).get_table_names()


def upgrade() -> None:
    if not _exists("outbox"):
        op.create_table(
            "outbox",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("key", sa.String(200), nullable=False),
            sa.Column("sender", sa.String(42), nullable=False),
            sa.Column("chain_id", sa.BigInteger(), nullable=False),
            sa.Column("nonce", sa.BigInteger(), nullable=False),
            sa.Column("tx_hash", sa.String(66), nullable=False),
            sa.Column("raw_tx", sa.LargeBinary(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("block_number", sa.BigInteger(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
        )
        op.create_index("ix_outbox_key", "outbox", ["key"], unique=True)
        op.create_index("ix_outbox_sender", "outbox", ["sender"])
        op.create_index("ix_outbox_tx_hash", "outbox", ["tx_hash"])
    if not _exists("agent_records"):
        op.create_table(
            "agent_records",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("agent", sa.String(100), nullable=False),
            sa.Column("kind", sa.String(40), nullable=False),
            sa.Column("key", sa.String(200), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.UniqueConstraint("agent", "kind", "key"),
        )
        op.create_index("ix_agent_records_agent", "agent_records", ["agent"])


def downgrade() -> None:
    op.drop_table("agent_records")
    op.drop_table("outbox")
