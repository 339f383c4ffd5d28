"""drop_calibrations: versioned fits of the predicted puzzle-exact drop (workers/calibrations.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:50:00

Written by hand after the tables (now `store/tables.py`, `store/api_tables.py`);
`tests/service/test_migrations.py` checks there is no drift.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drop_calibrations",
        sa.Column("number", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("candidates", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_drop_calibrations")),
        sa.UniqueConstraint("version", name=op.f("uq_drop_calibrations_version")),
    )


def downgrade() -> None:
    op.drop_table("drop_calibrations")
