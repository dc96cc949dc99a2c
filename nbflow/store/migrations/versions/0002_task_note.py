"""Task instances get a note: why a queued task is waiting (e.g. no worker serves its queue).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add task_instances.note."""
    with op.batch_alter_table("task_instances") as batch:
        batch.add_column(sa.Column("note", sa.Text()))


def downgrade() -> None:
    """Drop task_instances.note."""
    with op.batch_alter_table("task_instances") as batch:
        batch.drop_column("note")
