"""Runs remember the Idempotency-Key of the trigger that made them (a second POST with the
same key answers with the same run instead of making another).

Revision ID: 0006_lab
Revises: 0005_incremental
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_lab"
down_revision = "0005_incremental"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add runs.idempotency_key, unique per pipeline (NULLs never collide)."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200)))
        batch.create_unique_constraint("uq_runs_idempotency_key", ["pipeline", "idempotency_key"])


def downgrade() -> None:
    """Drop runs.idempotency_key."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_idempotency_key", type_="unique")
        batch.drop_column("idempotency_key")
