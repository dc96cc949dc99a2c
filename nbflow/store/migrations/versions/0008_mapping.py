"""Dynamic task mapping: ``task_instances.map_count`` (a mapped task's instances) and
``map_parent``, ``map_index``, ``map_values`` (an instance's mapped task, index and values).

Revision ID: 0008_mapping
Revises: 0007_metrics
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_mapping"
down_revision = "0007_metrics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the mapping columns."""
    with op.batch_alter_table("task_instances") as batch:
        batch.add_column(sa.Column("map_count", sa.Integer))
        batch.add_column(sa.Column("map_parent", sa.String(250)))
        batch.add_column(sa.Column("map_index", sa.Integer))
        batch.add_column(sa.Column("map_values", sa.JSON))


def downgrade() -> None:
    """Drop the mapping columns."""
    with op.batch_alter_table("task_instances") as batch:
        for column in ("map_values", "map_index", "map_parent", "map_count"):
            batch.drop_column(column)
