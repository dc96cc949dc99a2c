"""Incremental runs: a run says whether it reuses what is up to date; each task instance keeps
its fingerprint parts, the content hash of its outputs, the attempt it reused and why it ran;
each artifact keeps the hash of its bytes.

Revision ID: 0005_incremental
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_incremental"
down_revision = "0004"
branch_labels = None
depends_on = None

_TI_COLUMNS = (
    ("cache_key", sa.String(64)),
    ("cache_parts", sa.JSON()),
    ("output_digest", sa.String(64)),
    ("reused_run_id", sa.Integer()),
    ("reused_try", sa.Integer()),
    ("why", sa.Text()),
)


def upgrade() -> None:
    """Add runs.incremental/force, the task instances' fingerprint and reuse columns, artifacts.digest."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("incremental", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("force", sa.JSON()))
    with op.batch_alter_table("task_instances") as batch:
        for name, type_ in _TI_COLUMNS:
            batch.add_column(sa.Column(name, type_))
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("digest", sa.String(64)))
    # the reuse look-up: the newest success of a task in a pipeline's earlier runs
    op.create_index("ix_task_instances_task_state_run", "task_instances", ["task_id", "state", "run_id"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_task_instances_task_state_run", table_name="task_instances")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("digest")
    with op.batch_alter_table("task_instances") as batch:
        for name, _ in reversed(_TI_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("force")
        batch.drop_column("incremental")
