"""Attempts record the pid of their notebook kernel (the worker's pid is ``pid``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add task_attempts.kernel_pid."""
    with op.batch_alter_table("task_attempts") as batch:
        batch.add_column(sa.Column("kernel_pid", sa.Integer()))


def downgrade() -> None:
    """Drop task_attempts.kernel_pid."""
    with op.batch_alter_table("task_attempts") as batch:
        batch.drop_column("kernel_pid")
