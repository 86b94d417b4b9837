"""The bus spool: messages an agent sends while the broker is away, and messages it received
but has not handled yet (store/bus_spool.py).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bus_outgoing",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(300), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_bus_outgoing_owner", "bus_outgoing", ["owner"])
    op.create_table(
        "bus_incoming",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("receiver", sa.String(100), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_bus_incoming_owner", "bus_incoming", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_bus_incoming_owner", table_name="bus_incoming")
    op.drop_table("bus_incoming")
    op.drop_index("ix_bus_outgoing_owner", table_name="bus_outgoing")
    op.drop_table("bus_outgoing")
