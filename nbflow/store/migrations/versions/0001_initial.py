"""Initial schema: pipelines, versions, runs, task instances, attempts, artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nbflow.store.orm import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the first tables."""
    op.create_table(
        "pipelines",
        sa.Column("name", sa.String(250), primary_key=True),
        sa.Column("file", sa.Text()),
        sa.Column("schedule", sa.String(250)),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
        sa.Column("latest_version_id", sa.Integer()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "pipeline_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(250), sa.ForeignKey("pipelines.name", ondelete="CASCADE"), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("pipeline", "fingerprint", name="uq_pipeline_versions_fingerprint"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(250), sa.ForeignKey("pipelines.name", ondelete="CASCADE"), nullable=False),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("pipeline_versions.id", ondelete="SET NULL")),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("logical_date", UTCDateTime()),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("executor", sa.String(50)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("note", sa.Text()),
        sa.UniqueConstraint("pipeline", "logical_date", name="uq_runs_logical_date"),
    )
    op.create_index("ix_runs_pipeline_id", "runs", ["pipeline", "id"])
    op.create_index("ix_runs_state", "runs", ["state"])
    op.create_table(
        "task_instances",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("max_tries", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("hostname", sa.String(250)),
        sa.Column("pid", sa.Integer()),
        sa.Column("executor_key", sa.String(500)),
        sa.Column("start_date", UTCDateTime()),
        sa.Column("end_date", UTCDateTime()),
        sa.Column("duration", sa.Float()),
        sa.Column("next_retry_at", UTCDateTime()),
        sa.Column("log_uri", sa.Text()),
        sa.Column("output_uri", sa.Text()),
        sa.Column("reason", sa.String(50)),
        sa.Column("error", sa.Text()),
        sa.Column("updated_at", UTCDateTime()),
        sa.UniqueConstraint("run_id", "task_id", name="uq_task_instances_run_task"),
    )
    op.create_index("ix_task_instances_state", "task_instances", ["state"])
    op.create_table(
        "task_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("executor_key", sa.String(500)),
        sa.Column("hostname", sa.String(250)),
        sa.Column("pid", sa.Integer()),
        sa.Column("queued_at", UTCDateTime()),
        sa.Column("start_date", UTCDateTime()),
        sa.Column("end_date", UTCDateTime()),
        sa.Column("reason", sa.String(50)),
        sa.Column("message", sa.Text()),
        sa.Column("ename", sa.String(250)),
        sa.Column("evalue", sa.Text()),
        sa.Column("traceback", sa.Text()),
        sa.Column("cell_index", sa.Integer()),
        sa.Column("exec_count", sa.Integer()),
        sa.Column("log_uri", sa.Text()),
        sa.Column("output_uri", sa.Text()),
        sa.UniqueConstraint("run_id", "task_id", "try_number", name="uq_task_attempts_try"),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_artifacts_run_task", "artifacts", ["run_id", "task_id"])


def downgrade() -> None:
    """Drop everything (there is nothing before this revision)."""
    for table in ("artifacts", "task_attempts", "task_instances", "runs", "pipeline_versions", "pipelines"):
        op.drop_table(table)
