"""Metrics of attempts (``nbflow.metric``, saved scalars) and sweeps (``nbflow run --sweep``):
the ``metrics`` and ``sweeps`` tables and ``runs.sweep_id``.

Revision ID: 0007_metrics
Revises: 0006_lab
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nbflow.store.orm import UTCDateTime

revision = "0007_metrics"
down_revision = "0006_lab"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create sweeps and metrics; add runs.sweep_id."""
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(250), sa.ForeignKey("pipelines.name", ondelete="CASCADE"), nullable=False),
        sa.Column("grid", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("map_index", sa.Integer),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value_num", sa.Float),
        sa.Column("value_text", sa.String(200)),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_metrics_run", "metrics", ["run_id"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.Integer))
        batch.create_foreign_key("fk_runs_sweep_id", "sweeps", ["sweep_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    """Drop runs.sweep_id, metrics and sweeps."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("fk_runs_sweep_id", type_="foreignkey")
        batch.drop_column("sweep_id")
    op.drop_index("ix_metrics_run", table_name="metrics")
    op.drop_table("metrics")
    op.drop_table("sweeps")
