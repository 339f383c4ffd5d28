"""Initial schema: checkpoints, probe sets, jobs, candidates, results, verdicts.

Revision ID: 0001
Revises:
Create Date: 2026-11-29 03:12:03

Written from `alembic revision --autogenerate` and reviewed by hand. Timestamps are
`DateTime(timezone=True)` (store.tables.UTCDateTime stores UTC through it); JSON is JSONB on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(length=36), nullable=False)


def upgrade() -> None:
    """Create every table with its constraints and indexes."""
    op.create_table(
        "checkpoints",
        _id(),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("architecture", sa.String(length=32), nullable=False),
        sa.Column("config", _json(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("original_name", sa.String(length=512), nullable=True),
        sa.Column("storage_path", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.CheckConstraint("source IN ('upload', 'registered')", name=op.f("ck_checkpoints_source")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
    )
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.create_index(batch_op.f("ix_checkpoints_sha256"), ["sha256"], unique=True)

    op.create_table(
        "probe_sets",
        _id(),
        sa.Column("builder", sa.String(length=32), nullable=True),
        sa.Column("builder_args", _json(), nullable=False),
        sa.Column("dataset_path", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("puzzles", sa.Integer(), nullable=False),
        sa.Column("labels", sa.Boolean(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_sets")),
    )
    with op.batch_alter_table("probe_sets") as batch_op:
        batch_op.create_index(batch_op.f("ix_probe_sets_content_hash"), ["content_hash"], unique=False)

    op.create_table(
        "jobs",
        _id(),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("puzzles_done", sa.Integer(), nullable=False),
        sa.Column("puzzles_total", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", _timestamp(), nullable=True),
        sa.Column("heartbeat_at", _timestamp(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("checkpoint_id", sa.String(length=36), nullable=False),
        sa.Column("probe_set_id", sa.String(length=36), nullable=False),
        sa.Column("policy", _json(), nullable=False),
        sa.Column("options", _json(), nullable=False),
        sa.Column("tags", _json(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f("ck_jobs_status")),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name=op.f("ck_jobs_progress")),
        sa.ForeignKeyConstraint(["checkpoint_id"], ["checkpoints.id"], name=op.f("fk_jobs_checkpoint_id_checkpoints")),
        sa.ForeignKeyConstraint(["probe_set_id"], ["probe_sets.id"], name=op.f("fk_jobs_probe_set_id_probe_sets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_jobs_idempotency_key")),
    )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_checkpoint_id"), ["checkpoint_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_lease_expires_at"), ["lease_expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_status"), ["status"], unique=False)

    op.create_table(
        "candidates",
        _id(),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_candidates_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
        sa.UniqueConstraint("job_id", "position", name=op.f("uq_candidates_job_id_position")),
    )
    with op.batch_alter_table("candidates") as batch_op:
        batch_op.create_index(batch_op.f("ix_candidates_spec_hash"), ["spec_hash"], unique=False)

    op.create_table(
        "results",
        _id(),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("body", _json(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_results_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint("job_id", name=op.f("uq_results_job_id")),
    )

    op.create_table(
        "verdicts",
        _id(),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("candidate_id", sa.String(length=36), nullable=True),
        sa.Column("scope", sa.String(length=36), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("rules", _json(), nullable=False),
        sa.Column("policy", _json(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.CheckConstraint(
            "(candidate_id IS NULL AND scope = 'job') OR (candidate_id IS NOT NULL AND scope = candidate_id)",
            name=op.f("ck_verdicts_scope"),
        ),
        sa.CheckConstraint("decision IN ('go', 'no_go', 'inconclusive')", name=op.f("ck_verdicts_decision")),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_verdicts_candidate_id_candidates"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_verdicts_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdicts")),
        sa.UniqueConstraint("job_id", "scope", name=op.f("uq_verdicts_job_id_scope")),
    )


def downgrade() -> None:
    """Drop every table, children first (indexes go with their tables)."""
    op.drop_table("verdicts")
    op.drop_table("results")
    op.drop_table("candidates")
    op.drop_table("jobs")
    op.drop_table("probe_sets")
    op.drop_table("checkpoints")
