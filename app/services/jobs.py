"""Jobs: the checks a submission must pass, its rows, the cancel flag; reading, listing and metrics queries.

POST /jobs is the route a release train bursts on, so a submission does only what depends on the request:
what is fixed for a checkpoint or a spec (the parsed model config, whether a spec fits it, the task of a
shipped probe folder) is computed once per API process (`SubmissionCache`), and the new rows are
inserted with three Core statements instead of the ORM's unit of work.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import ColumnElement, bindparam, exists, func, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from carrygate.app.errors import Conflict, NotFound, Unprocessable, get_or_404
from carrygate.app.schemas import BuilderProbe, JobCreate, RecommendationCreate
from carrygate.app.services.pages import Page, paginate
from carrygate.app.services.paths import confined_checkpoint
from carrygate.app.settings import Settings
from carrygate.models.budget import job_cost
from carrygate.models.compress.fit import spec_problems
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.config import HRMConfig, ModelConfig, TRMConfig
from carrygate.models.files import SMALL_FILE_LIMIT, check_regular
from carrygate.models.tasks.dataset import shipped_data
from carrygate.models.tasks.probes import dataset_task
from carrygate.store.sessions import write_lock
from carrygate.store.tables import FINISHED_STATUSES, JOB_SCOPE, Base, Candidate, Checkpoint, Job, ProbeSet, Verdict
from carrygate.store.vocabulary import JobKind, JobStatus
from carrygate.workers.artifacts import ArtifactStore
from carrygate.workers.pipeline import candidate_rows, probe_hash
from carrygate.workers.queue import now

# Built once: a TypeAdapter costs milliseconds to construct, which showed on POST /jobs under load.
_model_config = TypeAdapter(ModelConfig)


@dataclass(frozen=True)
class Submitted:
    """The job a submission names, and whether this request created it (else: its Idempotency-Key existed)."""

    job: Job
    created: bool


def config_of(checkpoint: Checkpoint) -> TRMConfig | HRMConfig | None:
    """The model config when the checkpoint's metadata fixes it (carrygate format), else None."""
    return _parse_config(checkpoint.config)


def _parse_config(meta: dict[str, Any] | None) -> TRMConfig | HRMConfig | None:
    body = (meta or {}).get("config_json")
    if not body:
        return None
    try:
        return _model_config.validate_python(body)
    except ValidationError:
        return None


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


_MISSING = object()


class SubmissionCache:
    """Per API process (on `app.state.submissions`), what a submission would otherwise recompute each time.

    - a checkpoint's parsed model config, by checkpoint id: a row's config never changes (the same weights
      with another config are refused), and checkpoints are never deleted;
    - whether a spec fits that config (`spec_problems`), by checkpoint id and the spec's content hash;
    - the task of a probe folder (`dataset_task`), by folder and split, kept while the files it reads
      (`build.json`, `<split>/dataset.json`) keep their modification time and size.

    Each map is cleared when it passes `max_entries`, which bounds the memory a stream of distinct specs can take.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._configs: dict[str, TRMConfig | HRMConfig | None] = {}
        self._problems: dict[tuple[str, str], list[str]] = {}
        self._tasks: dict[tuple[str, str], tuple[Any, str | None]] = {}
        self._lock = threading.Lock()

    def _put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        with self._lock:
            if len(table) >= self.max_entries:
                table.clear()
            table[key] = value

    def config(self, session: Session, checkpoint_id: str) -> TRMConfig | HRMConfig | None:
        found = self._configs.get(checkpoint_id, _MISSING)  # one lookup: another thread may clear the map
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        config = _parse_config(session.execute(select(Checkpoint.config).where(Checkpoint.id == checkpoint_id)).scalar_one())
        self._put(self._configs, checkpoint_id, config)
        return config

    def spec_problems(self, checkpoint_id: str, spec: CompressionSpec, config: TRMConfig | HRMConfig) -> list[str]:
        key = (checkpoint_id, spec.content_hash)
        found = self._problems.get(key)
        if found is None:
            found = spec_problems(spec, config)
            self._put(self._problems, key, found)
        return found

    def task(self, folder: Path, split: str) -> str | None:
        signature = (_file_signature(folder / "build.json"), _file_signature(folder / split / "dataset.json"))
        key = (str(folder), split)
        cached = self._tasks.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        task = dataset_task(folder, split)
        self._put(self._tasks, key, (signature, task))
        return task


def _check_budget(body: JobCreate, config: TRMConfig | HRMConfig, settings: Settings) -> None:
    """Refuse (422) a job whose cost exceeds CARRYGATE_MAX_JOB_GFLOP. A dataset probe's size is known only
    to the worker (which checks again); without `options.limit` the cost of one puzzle is the lower bound."""
    if isinstance(body.probe, BuilderProbe):
        puzzles = min(body.probe.size, body.options.limit or body.probe.size)
    else:
        puzzles = body.options.limit or 1
    cost = job_cost(config, body.candidates, puzzles)
    if cost.gflop > settings.max_job_gflop:
        at_least = "" if isinstance(body.probe, BuilderProbe) or body.options.limit else "at least "
        raise Unprocessable(f"compute budget: {at_least}{cost.describe(settings.max_job_gflop)}")


def probe_row(body: JobCreate | RecommendationCreate, settings: Settings, storage_path: str,
              cache: SubmissionCache | None = None) -> ProbeSet:
    """The probe set row a submission names, with its task; a dataset folder outside the register roots is a 422.
    No dataset_path means the shipped `data/` beside the checkpoint at `storage_path` (as the worker reads it)."""
    if isinstance(body.probe, BuilderProbe):
        args = {"size": body.probe.size, "seed": body.probe.seed, **body.probe.args}
        return ProbeSet(builder=body.probe.builder, task=body.probe.builder, builder_args=args, dataset_path=None,
                        content_hash=probe_hash(body.probe.builder, args, None), puzzles=body.probe.size, labels=True)
    if body.probe.dataset_path is not None:
        try:  # the worker checks every file it reads; the folder and its dataset.json are checked now
            folder = settings.readable_path(body.probe.dataset_path)
            meta = folder / body.probe.split / "dataset.json"
            if meta.exists() or meta.is_symlink():
                check_regular(settings.readable_path(meta), limit=SMALL_FILE_LIMIT)
        except ValueError as err:
            raise Unprocessable(f"probe.dataset_path: {err}") from err
    args = {"split": body.probe.split}
    probe_folder = folder if body.probe.dataset_path is not None else shipped_data(storage_path)
    task = cache.task(probe_folder, body.probe.split) if cache is not None else dataset_task(probe_folder, body.probe.split)
    return ProbeSet(builder=None, task=task, builder_args=args, dataset_path=body.probe.dataset_path,
                    content_hash=probe_hash(None, args, body.probe.dataset_path), puzzles=body.options.limit or 0, labels=True)


def by_key(session: Session, idempotency_key: str | None, kind: JobKind) -> Job | None:
    """The job an Idempotency-Key created; a 409 when it created the other kind (an evaluation, a recommendation)."""
    if not idempotency_key:
        return None
    job = session.execute(select(Job).where(Job.idempotency_key == idempotency_key)).scalar_one_or_none()
    if job is not None and job.kind != kind:
        raise Conflict(f"Idempotency-Key {idempotency_key!r} already names {job.kind} job {job.id}")
    return job


def create_job(*, session: Session, body: JobCreate, settings: Settings, idempotency_key: str | None = None,
               cache: SubmissionCache | None = None) -> Submitted:
    """Queue an evaluation: the specs must fit the checkpoint's architecture and the compute budget, every
    path must lie under the register roots. The same Idempotency-Key returns the job it created.
    `cache` (the API process's `SubmissionCache`) saves re-deriving what is fixed per checkpoint and spec."""
    existing = by_key(session, idempotency_key, "evaluate")
    if existing is not None:
        return Submitted(existing, created=False)
    cache = cache or SubmissionCache()
    # One column, not the row: its config document is parsed once per process (`SubmissionCache.config`).
    storage_path = session.execute(_STORAGE_PATH, {"checkpoint_id": body.checkpoint_id}).scalar_one_or_none()
    if storage_path is None:
        raise NotFound(f"checkpoint {body.checkpoint_id} not found")
    config = cache.config(session, body.checkpoint_id)
    if config is not None:
        problems = [f"candidates[{i}].{p}" for i, spec in enumerate(body.candidates)
                    for p in cache.spec_problems(body.checkpoint_id, spec, config)]
        if problems:
            raise Unprocessable("; ".join(problems))
        _check_budget(body, config, settings)
    for i, spec in enumerate(body.candidates):
        if spec.checkpoint is not None:  # the worker loads it: the same roots as a registered checkpoint
            confined_checkpoint(settings, spec.checkpoint, f"candidates[{i}].checkpoint")
    job = Job(kind="evaluate", checkpoint_id=body.checkpoint_id, probe_set=probe_row(body, settings, storage_path, cache),
              policy=body.policy.model_dump(mode="json"),
              options=body.options.model_dump(mode="json"), tags=body.tags, idempotency_key=idempotency_key,
              candidates=candidate_rows(body.candidates))
    return insert_once(session, job)


_STORAGE_PATH = select(Checkpoint.storage_path).where(Checkpoint.id == bindparam("checkpoint_id"))
_INSERTS = {table: insert(table) for table in (ProbeSet.__table__, Job.__table__, Candidate.__table__)}
_COLUMN_PLANS: dict[type[Base], list[tuple[str, str, Any]]] = {}


def _column_plan(kind: type[Base]) -> list[tuple[str, str, Any]]:
    """(attribute, column, Python-side default) for each column of `kind`'s table, worked out once per class."""
    plan = _COLUMN_PLANS.get(kind)
    if plan is None:
        mapper = inspect(kind)
        plan = _COLUMN_PLANS[kind] = [(mapper.get_property_by_column(c).key, c.key, c.default) for c in mapper.local_table.columns]
    return plan


def _row_values(row: Base) -> dict[str, Any]:
    """A new ORM object's column values with the Python-side column defaults applied, on the object too (the
    response reads it)."""
    values: dict[str, Any] = {}
    for attribute, column, default in _column_plan(type(row)):
        value = getattr(row, attribute)
        if value is None and default is not None:
            value = default.arg(None) if default.is_callable else default.arg
            setattr(row, attribute, value)
        values[column] = value
    return values


def insert_once(session: Session, job: Job) -> Submitted:
    """Insert a new job with its probe set and candidates; when a concurrent request with the same
    Idempotency-Key (and kind) won the race, return that one instead.

    Three Core INSERTs in one transaction (the ORM's unit of work cost more than everything else of a
    submission, and holds SQLite's write lock while it runs). The returned job is not attached to the session:
    every column is filled in, and it has no verdicts or result yet."""
    probe_values = _row_values(job.probe_set)
    job.probe_set_id = job.probe_set.id
    job_values = _row_values(job)
    candidate_values = []
    for candidate in job.candidates:
        candidate.job_id = job.id
        candidate_values.append(_row_values(candidate))
    try:
        with write_lock(session.get_bind()):  # SQLite: one writer at a time, handed over without sleeps
            session.execute(_INSERTS[ProbeSet.__table__], probe_values)
            session.execute(_INSERTS[Job.__table__], job_values)
            if candidate_values:
                session.execute(_INSERTS[Candidate.__table__], candidate_values)
            session.commit()
    except IntegrityError:
        session.rollback()
        existing = by_key(session, job.idempotency_key, job.kind)
        if existing is None:
            raise
        return Submitted(existing, created=False)
    set_committed_value(job, "verdicts", [])
    set_committed_value(job, "result", None)
    return Submitted(job, created=True)


def cancel_job(*, session: Session, job_id: str, kind: JobKind = "evaluate") -> Job:
    """A queued job is cancelled at once; a running one is flagged, and its worker stops before its next ACT
    step (the heartbeat reads the flag). 404 for no such job (of this kind), 409 for a finished one."""
    job = get_job(session=session, job_id=job_id, kind=kind)
    if job.status in FINISHED_STATUSES:
        raise Conflict(f"job {job_id} already {job.status}")
    # Conditional updates: a worker may claim or finish the job between our read and our write.
    cancelled = session.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                                .values(status="cancelled", finished_at=now(), error="cancelled by request", cancel_requested=True)
                                .execution_options(synchronize_session=False))
    flagged = session.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True)
                              .execution_options(synchronize_session=False))
    session.commit()
    session.refresh(job)
    if cancelled.rowcount == 0 and flagged.rowcount == 0:
        raise Conflict(f"job {job_id} already {job.status}")
    return job


def get_job(*, session: Session, job_id: str, kind: JobKind = "evaluate") -> Job:
    """The job, or a 404 (also when it is of the other kind: `/jobs` and `/recommendations` name their own)."""
    what = "recommendation" if kind == "recommend" else "job"
    job = get_or_404(session, Job, job_id, what)
    if job.kind != kind:
        raise NotFound(f"{what} {job_id} not found")
    return job


def _has_tag(tag: str, dialect: str) -> ColumnElement[bool]:
    """`tag in jobs.tags`, evaluated by the database (JSONB containment / SQLite json_each)."""
    if dialect == "postgresql":
        return Job.tags.op("@>")(func.jsonb_build_array(tag))
    tags = func.json_each(Job.tags).table_valued("value")
    return exists(select(tags.c.value).where(tags.c.value == tag))


def list_jobs(*, session: Session, status: JobStatus | None, checkpoint_id: str | None, tag: str | None,
              limit: int, offset: int, kind: JobKind = "evaluate") -> Page[Job]:
    """Newest first, filtered, of one kind; candidates and verdicts loaded (results are not)."""
    query = select(Job).where(Job.kind == kind)
    if status is not None:
        query = query.where(Job.status == status)
    if checkpoint_id is not None:
        query = query.where(Job.checkpoint_id == checkpoint_id)
    if tag is not None:
        query = query.where(_has_tag(tag, session.get_bind().dialect.name))
    return paginate(session, query, options=[selectinload(Job.candidates), selectinload(Job.probe_set),
                                              selectinload(Job.verdicts).selectinload(Verdict.candidate)],
                    order_by=[Job.created_at.desc(), Job.id], limit=limit, offset=offset)


def ordered_verdicts(job: Job) -> list[Verdict]:
    """The job-level verdict first, then one per candidate in submission order."""
    return sorted(job.verdicts, key=lambda v: (v.scope != JOB_SCOPE, v.candidate.position if v.candidate else -1))


def job_verdicts(*, session: Session, job_id: str) -> list[Verdict]:
    """`ordered_verdicts` of the job; a 404 for no such job or no verdict yet."""
    job = get_job(session=session, job_id=job_id)
    if not job.verdicts:
        raise NotFound(f"job {job_id} has no verdict yet (status {job.status})")
    return ordered_verdicts(job)


def list_verdicts(*, session: Session, decision: str | None, limit: int, offset: int) -> Page[Verdict]:
    """Job-level verdicts, newest first."""
    query = select(Verdict).where(Verdict.scope == JOB_SCOPE)
    if decision is not None:
        query = query.where(Verdict.decision == decision)
    return paginate(session, query, order_by=[Verdict.created_at.desc()], limit=limit, offset=offset)


def reportable_job(*, session: Session, job_id: str) -> Job:
    """A job with a result and a verdict; a 404 for no such job or none yet."""
    job = get_job(session=session, job_id=job_id)
    if job.result is None or not job.verdicts:
        raise NotFound(f"job {job_id} has no verdict to report yet (status {job.status})")
    return job


@dataclass(frozen=True)
class StoredFile:
    """A candidate's stored artifact: where it lies on this machine, its file name and content hash."""

    path: Path
    filename: str
    sha256: str


def candidate_artifact(*, session: Session, store: ArtifactStore, job_id: str, candidate: str) -> StoredFile:
    """The .onnx file an `onnxruntime` candidate was measured as; a 404 saying which part is missing."""
    job = get_job(session=session, job_id=job_id)
    if job.result is None:
        raise NotFound(f"job {job_id} has no result yet (status {job.status})")
    found = next((c for c in job.result.body.get("candidates", []) if c.get("name") == candidate), None)
    if found is None:
        raise NotFound(f"job {job_id} has no candidate named {candidate!r}")
    artifact = found.get("artifact") or {}
    key = artifact.get("store_key")
    if not key or not store.exists(key):
        raise NotFound(f"candidate {candidate!r} has no stored artifact (only onnxruntime candidates produce one)")
    return StoredFile(store.local_path(key), artifact["filename"], artifact["sha256"])


def status_counts(*, session: Session) -> dict[str, int]:
    """How many jobs hold each status (statuses with none are absent)."""
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())


def finished_durations(*, session: Session) -> list[float]:
    """Wall seconds from start to finish of every job that started and finished."""
    rows = session.execute(select(Job.started_at, Job.finished_at).where(Job.finished_at.is_not(None), Job.started_at.is_not(None))).all()
    return [(f - s).total_seconds() for s, f in rows]
