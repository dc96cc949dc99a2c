"""Assets (runs triggered by data): ``assets`` (declared names with their uri and description),
``asset_refs`` (which pipeline's task produces an asset, which pipeline is scheduled on it and
since when), ``asset_events`` (one per successful attempt that updated an asset) and
``asset_consumed`` (which events each asset-triggered run consumed: its lineage; one row per
consumer pipeline and event, the guard that makes such a run exactly once).

Revision ID: 0010_assets
Revises: 0009_connections
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nbflow.store.orm import UTCDateTime

revision = "0010_assets"
down_revision = "0009_connections"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "assets",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("uri", sa.Text, nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "asset_refs",
        sa.Column("asset", sa.String(200), primary_key=True),
        sa.Column("pipeline", sa.String(250), primary_key=True),
        sa.Column("role", sa.String(20), primary_key=True),
        sa.Column("task_id", sa.String(250), primary_key=True),
        sa.Column("since", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_asset_refs_pipeline", "asset_refs", ["pipeline"])
    op.create_table(
        "asset_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("asset", sa.String(200), nullable=False),
        sa.Column("pipeline", sa.String(250), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("run_id", "task_id", "try_number", "asset", name="uq_asset_events_attempt"),
    )
    op.create_index("ix_asset_events_asset", "asset_events", ["asset", "id"])
    op.create_table(
        "asset_consumed",
        sa.Column("pipeline", sa.String(250), primary_key=True),
        sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("asset", sa.String(200), nullable=False),
    )
    op.create_index("ix_asset_consumed_run", "asset_consumed", ["run_id"])
    op.create_index("ix_asset_consumed_event", "asset_consumed", ["event_id"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_asset_consumed_event", table_name="asset_consumed")
    op.drop_index("ix_asset_consumed_run", table_name="asset_consumed")
    op.drop_table("asset_consumed")
    op.drop_index("ix_asset_events_asset", table_name="asset_events")
    op.drop_table("asset_events")
    op.drop_index("ix_asset_refs_pipeline", table_name="asset_refs")
    op.drop_table("asset_refs")
    op.drop_table("assets")
