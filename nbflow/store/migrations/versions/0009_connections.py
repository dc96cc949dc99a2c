"""Connections and variables: ``connections`` (password and extra Fernet-encrypted) and
``variables`` (JSON values, encrypted when a key is configured); ``runs.sla_missed_at`` (when
a run was found past its pipeline's ``sla``, so it is reported once).

Revision ID: 0009_connections
Revises: 0008_mapping
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nbflow.store.orm import UTCDateTime

revision = "0009_connections"
down_revision = "0008_mapping"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the two tables, add the column."""
    op.create_table(
        "connections",
        sa.Column("name", sa.String(250), primary_key=True),
        sa.Column("conn_type", sa.String(50), nullable=False),
        sa.Column("host", sa.Text),
        sa.Column("port", sa.Integer),
        sa.Column("login", sa.Text),
        sa.Column("password", sa.Text),
        sa.Column("schema", sa.Text),
        sa.Column("extra", sa.Text),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "variables",
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("is_encrypted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("sla_missed_at", UTCDateTime()))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("sla_missed_at")
    op.drop_table("variables")
    op.drop_table("connections")
