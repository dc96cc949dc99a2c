"""Scheduler schema: schedules on pipelines, data intervals and drivers on runs, jobs
(scheduler and runner heartbeats), import errors, pools.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nbflow.store.orm import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add scheduling columns and tables."""
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("start_date", UTCDateTime()))
        batch.add_column(sa.Column("end_date", UTCDateTime()))
        batch.add_column(sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"))
        batch.add_column(sa.Column("catchup", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("max_active_runs", sa.Integer(), nullable=False, server_default="16"))
        batch.add_column(sa.Column("max_active_tasks", sa.Integer()))
        batch.add_column(sa.Column("next_logical_date", UTCDateTime()))
        batch.add_column(sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("data_interval_start", UTCDateTime()))
        batch.add_column(sa.Column("data_interval_end", UTCDateTime()))
        batch.add_column(sa.Column("driver_id", sa.Integer()))
    with op.batch_alter_table("task_instances") as batch:
        batch.add_column(sa.Column("pool", sa.String(100)))
        batch.add_column(sa.Column("pool_slots", sa.Integer(), nullable=False, server_default="1"))
    op.create_index("ix_task_instances_pool_state", "task_instances", ["pool", "state"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("hostname", sa.String(250), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime()),
    )
    op.create_index("ix_jobs_kind_state", "jobs", ["kind", "state"])
    op.create_table(
        "import_errors",
        sa.Column("filename", sa.String(1000), primary_key=True),
        sa.Column("location", sa.String(1100), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "pools",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    """Remove the scheduling columns and tables."""
    op.drop_table("pools")
    op.drop_table("import_errors")
    op.drop_index("ix_jobs_kind_state", "jobs")
    op.drop_table("jobs")
    op.drop_index("ix_task_instances_pool_state", "task_instances")
    with op.batch_alter_table("task_instances") as batch:
        batch.drop_column("pool_slots")
        batch.drop_column("pool")
    with op.batch_alter_table("runs") as batch:
        for col in ("driver_id", "data_interval_end", "data_interval_start"):
            batch.drop_column(col)
    with op.batch_alter_table("pipelines") as batch:
        for col in (
            "is_active",
            "next_logical_date",
            "max_active_tasks",
            "max_active_runs",
            "catchup",
            "timezone",
            "end_date",
            "start_date",
        ):
            batch.drop_column(col)
