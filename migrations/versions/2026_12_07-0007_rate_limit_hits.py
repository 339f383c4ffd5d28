"""rate limit hits: the per-key submission rate limit's sliding log, in the database every API process shares.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 10:00:00

`carrygate serve --api-workers N` serves one port from N processes, so the limit moved out of process
memory (`app/ratelimit.py`). Written by hand after `store/api_tables.py`;
`tests/service/test_migrations.py` checks there is no drift.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_hits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_limit_hits")),
    )
    op.create_index("ix_rate_limit_hits_key_id_at", "rate_limit_hits", ["key_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_rate_limit_hits_key_id_at", table_name="rate_limit_hits")
    op.drop_table("rate_limit_hits")
