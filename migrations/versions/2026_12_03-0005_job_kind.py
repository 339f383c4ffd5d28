"""job kind: a jobs row is an evaluation or a recommendation search (POST /recommendations), with a stage text.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:30:00

Existing rows become `evaluate`. Written by hand after `store/tables.py`; `tests/service/test_migrations.py`
checks there is no drift.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="evaluate", nullable=False))
        batch_op.add_column(sa.Column("stage", sa.String(length=200), nullable=True))
        batch_op.create_check_constraint(op.f("ck_jobs_kind"), "kind IN ('evaluate', 'recommend')")
        batch_op.create_index(batch_op.f("ix_jobs_kind"), ["kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_kind"))
        batch_op.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch_op.drop_column("stage")
        batch_op.drop_column("kind")
