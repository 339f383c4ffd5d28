"""job_shards: puzzle ranges of one job run on several workers and reduced exactly (workers/shards.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 06:45:00

Written by hand after the tables (now `store/tables.py`, `store/api_tables.py`);
`tests/service/test_migrations.py` checks there is no drift.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_shards",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("puzzle_start", sa.Integer(), nullable=False),
        sa.Column("puzzle_stop", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("puzzles_done", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("partial", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name=op.f("ck_job_shards_status")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_shards_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_shards")),
        sa.UniqueConstraint("job_id", "index", name=op.f("uq_job_shards_job_id_index")),
    )
    with op.batch_alter_table("job_shards") as batch_op:
        batch_op.create_index(batch_op.f("ix_job_shards_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_table("job_shards")
