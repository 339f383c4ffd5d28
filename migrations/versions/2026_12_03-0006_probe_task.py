"""probe task: a probe set stores the task it holds (sudoku / maze / arc), so the dashboard need not guess it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:10:00

Builder probes are backfilled with their builder's name. Dataset probes written before this revision
keep NULL (shown as "unknown"): the migration does not read dataset folders from disk. New rows get
the task from `models.tasks.probes.dataset_task`. Written by hand after `store/tables.py`;
`tests/service/test_migrations.py` checks there is no drift.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not batch mode: a batch copy drops and recreates probe_sets, which SQLite refuses
# while jobs reference it (foreign keys are on). SQLite has had ADD / DROP COLUMN since 3.35.
def upgrade() -> None:
    op.add_column("probe_sets", sa.Column("task", sa.String(length=16), nullable=True))
    op.execute("UPDATE probe_sets SET task = builder WHERE builder IS NOT NULL")


def downgrade() -> None:
    op.drop_column("probe_sets", "task")
