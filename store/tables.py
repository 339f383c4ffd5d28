"""Job tables (SQLAlchemy 2 typed ORM): checkpoints, probe sets, jobs, candidates, results, verdicts, shards, calibrations.

The API keys and webhooks are in `store/api_tables.py`, on the same `Base.metadata` (`store.metadata`
holds both: Alembic's env and the drift test read it). Vocabularies come from `store/vocabulary.py`
(decisions, shared with the gate, from `models/vocabulary.py`).

The schema changes only through `migrations/`; `tests/service/test_migrations.py` fails when this
module and the migrated schema drift apart. Constraint names come from the naming convention on
`Base.metadata` so that migrations (and SQLite batch mode) can address them by name.

JSON columns hold whole documents (an `EvaluationResult` dump, a `CompressionSpec.to_dict()`, a gate
policy snapshot) and are replaced, not mutated in place: assign a new value to persist a change.
Timestamps are timezone-aware UTC on every backend (SQLite stores them naive; `UTCDateTime` restores
the zone on load and refuses naive values on save).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from carrygate.models.vocabulary import DECISIONS
from carrygate.store.vocabulary import CHECKPOINT_SOURCES, FINISHED_STATUSES, JOB_KINDS, JOB_STATUSES, SHARD_STATUSES

__all__ = ["Base", "Candidate", "DropCalibrationRow", "Checkpoint", "Job", "ProbeSet", "Result", "Verdict", "JOB_STATUSES",
           "FINISHED_STATUSES", "DECISIONS", "JOB_SCOPE", "utcnow", "new_id", "JobShard", "SHARD_STATUSES", "JSONValue",
           "UTCDateTime", "in_values"]

JOB_SCOPE = "job"
"""`verdicts.scope` of the job-level verdict; a candidate's verdict has the candidate id as its scope."""

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    # STYLE.md §6, except that unique constraints name every column: (job_id, scope) -> uq_verdicts_job_id_scope.
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONValue = JSON().with_variant(JSONB(), "postgresql")
"""Generic JSON; JSONB on PostgreSQL (indexable, compact)."""


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that always returns aware UTC datetimes, SQLite included."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def in_values(column: str, values: tuple[str, ...]) -> str:
    """A CHECK constraint's SQL: `column` holds one of `values`."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Checkpoint(Base):
    """A model checkpoint, content-addressed by sha256: uploaded into the artifact store or registered by path/URL."""

    __tablename__ = "checkpoints"
    __table_args__ = (CheckConstraint(in_values("source", CHECKPOINT_SOURCES), name="source"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    architecture: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSONValue, default=dict)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    original_name: Mapped[str | None] = mapped_column(String(512))
    storage_path: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProbeSet(Base):
    """The puzzles a job evaluates on: a builder with its arguments, or a dataset folder."""

    __tablename__ = "probe_sets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    builder: Mapped[str | None] = mapped_column(String(32))
    task: Mapped[str | None] = mapped_column(String(16))
    """sudoku / maze / arc: the builder, or what the dataset folder says it holds (`dataset_task`); None = unknown."""
    builder_args: Mapped[dict[str, Any]] = mapped_column(JSONValue, default=dict)
    dataset_path: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    puzzles: Mapped[int] = mapped_column(Integer)
    labels: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """One evaluation request: a reference checkpoint, K candidate specs, a probe set and a gate policy.

    `kind` "recommend" is a budgeted search instead (`POST /recommendations`): no candidates; its budget,
    tolerance and search size are in `options`, its `Recommendation` is the result, and `stage` says
    which search stage ran last. Leases, cancellation, progress and webhooks are the same for both kinds.

    The embedded executor claims a queued job by setting `lease_owner` / `lease_expires_at` and renews
    the lease with each heartbeat; a running job whose lease expired is re-queued (`attempts` counts runs).
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(in_values("status", JOB_STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        CheckConstraint(in_values("kind", JOB_KINDS), name="kind"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), default="evaluate", server_default="evaluate", index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(200))
    """What the worker is doing, in words (a recommendation's search stage); null for evaluations."""
    puzzles_done: Mapped[int] = mapped_column(Integer, default=0)
    puzzles_total: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    probe_set_id: Mapped[str] = mapped_column(ForeignKey("probe_sets.id"))
    policy: Mapped[dict[str, Any]] = mapped_column(JSONValue, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSONValue, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSONValue, default=list)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the Celery executor last sent this job to the broker (null: never; the embedded executor polls)."""

    checkpoint: Mapped[Checkpoint] = relationship()
    probe_set: Mapped[ProbeSet] = relationship()
    candidates: Mapped[list[Candidate]] = relationship(
        back_populates="job", order_by="Candidate.position", cascade="all, delete-orphan", passive_deletes=True
    )
    result: Mapped[Result | None] = relationship(back_populates="job", cascade="all, delete-orphan", passive_deletes=True)
    verdicts: Mapped[list[Verdict]] = relationship(back_populates="job", cascade="all, delete-orphan", passive_deletes=True)


class Candidate(Base):
    """One compression candidate of a job: the `CompressionSpec.to_dict()` and its content hash."""

    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("job_id", "position"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)

    job: Mapped[Job] = relationship(back_populates="candidates")


class Result(Base):
    """The whole `EvaluationResult` of a job (curves and per-puzzle arrays included); one per job."""

    __tablename__ = "results"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="result")


class DropCalibrationRow(Base):
    """One fitted predicted-drop calibration (`models.drop_model.DropCalibration`), stored by
    `carrygate calibrate --store`. Rows are never updated: a refit is a new row, and the newest one is
    what the workers predict with (`workers/calibrations.py`). `number` is the human-facing version."""

    __tablename__ = "drop_calibrations"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    candidates: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)



class JobShard(Base):
    """A contiguous range of a job's probe puzzles (on batch boundaries) run by one worker under a lease,
    like a job. `partial` holds the engine's `Partial` (JSON) once done; whoever stores the last one
    reduces them into the job's one result. See `workers/shards.py`."""

    __tablename__ = "job_shards"
    __table_args__ = (
        CheckConstraint(in_values("status", SHARD_STATUSES), name="status"),
        UniqueConstraint("job_id", "index"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    puzzle_start: Mapped[int] = mapped_column(Integer)
    puzzle_stop: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    puzzles_done: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    partial: Mapped[dict[str, Any] | None] = mapped_column(JSONValue)
    error: Mapped[str | None] = mapped_column(Text)


def _default_scope(context: Any) -> str:
    candidate_id: str | None = context.get_current_parameters().get("candidate_id")
    return candidate_id or JOB_SCOPE


class Verdict(Base):
    """A gate decision with every rule's observed value, threshold and outcome, and the policy it applied.

    `candidate_id` is null for the job-level verdict. Uniqueness is on (job_id, scope), where `scope`
    is `"job"` or the candidate id (filled in automatically), because NULLs never collide in a unique constraint.
    """

    __tablename__ = "verdicts"
    __table_args__ = (
        UniqueConstraint("job_id", "scope"),
        CheckConstraint(in_values("decision", DECISIONS), name="decision"),
        CheckConstraint(
            f"(candidate_id IS NULL AND scope = '{JOB_SCOPE}') OR (candidate_id IS NOT NULL AND scope = candidate_id)",
            name="scope",
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    candidate_id: Mapped[str | None] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(36), default=_default_scope)
    decision: Mapped[str] = mapped_column(String(16))
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONValue, default=list)
    policy: Mapped[dict[str, Any]] = mapped_column(JSONValue, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="verdicts")
    candidate: Mapped[Candidate | None] = relationship()
