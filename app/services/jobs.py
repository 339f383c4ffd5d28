"""Submitting and cancelling jobs: the checks a submission must pass, its rows, and the cancel flag."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from carrygate.app.errors import Conflict, Unprocessable, get_or_404
from carrygate.app.schemas import BuilderProbe, JobCreate
from carrygate.app.services.paths import confined_checkpoint
from carrygate.app.settings import Settings
from carrygate.models.budget import job_cost
from carrygate.models.compress.fit import spec_problems
from carrygate.models.config import HRMConfig, ModelConfig, TRMConfig
from carrygate.models.files import SMALL_FILE_LIMIT, check_regular
from carrygate.store.tables import FINISHED_STATUSES, Checkpoint, Job, ProbeSet
from carrygate.workers.pipeline import candidate_rows, probe_hash
from carrygate.workers.queue import now

# Built once: a TypeAdapter costs milliseconds to construct, which showed on POST /jobs under load.
_model_config = TypeAdapter(ModelConfig)


@dataclass(frozen=True)
class Submitted:
    """The job a submission names, and whether this request created it (else: its Idempotency-Key existed)."""

    job: Job
    created: bool


def _config_of(checkpoint: Checkpoint) -> TRMConfig | HRMConfig | None:
    """The model config when the checkpoint's metadata fixes it (carrygate format), else None."""
    body = (checkpoint.config or {}).get("config_json")
    if not body:
        return None
    try:
        return _model_config.validate_python(body)
    except ValidationError:
        return None


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


def _probe_row(body: JobCreate, settings: Settings) -> ProbeSet:
    if isinstance(body.probe, BuilderProbe):
        args = {"size": body.probe.size, "seed": body.probe.seed, **body.probe.args}
        return ProbeSet(builder=body.probe.builder, builder_args=args, dataset_path=None,
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
    return ProbeSet(builder=None, builder_args=args, dataset_path=body.probe.dataset_path,
                    content_hash=probe_hash(None, args, body.probe.dataset_path), puzzles=body.options.limit or 0, labels=True)


def _by_key(session: Session, idempotency_key: str | None) -> Job | None:
    if not idempotency_key:
        return None
    return session.execute(select(Job).where(Job.idempotency_key == idempotency_key)).scalar_one_or_none()


def create_job(*, session: Session, body: JobCreate, settings: Settings, idempotency_key: str | None = None) -> Submitted:
    """Queue an evaluation: the specs must fit the checkpoint's architecture and the compute budget, every
    path must lie under the register roots. The same Idempotency-Key returns the job it created."""
    existing = _by_key(session, idempotency_key)
    if existing is not None:
        return Submitted(existing, created=False)
    checkpoint = get_or_404(session, Checkpoint, body.checkpoint_id, "checkpoint")
    config = _config_of(checkpoint)
    if config is not None:
        problems = [f"candidates[{i}].{p}" for i, spec in enumerate(body.candidates) for p in spec_problems(spec, config)]
        if problems:
            raise Unprocessable("; ".join(problems))
        _check_budget(body, config, settings)
    for i, spec in enumerate(body.candidates):
        if spec.checkpoint is not None:  # the worker loads it: the same roots as a registered checkpoint
            confined_checkpoint(settings, spec.checkpoint, f"candidates[{i}].checkpoint")
    job = Job(checkpoint_id=checkpoint.id, probe_set=_probe_row(body, settings), policy=body.policy.model_dump(mode="json"),
              options=body.options.model_dump(mode="json"), tags=body.tags, idempotency_key=idempotency_key,
              candidates=candidate_rows(body.candidates))
    session.add(job)
    try:
        session.commit()
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won the race
        session.rollback()
        existing = _by_key(session, idempotency_key)
        if existing is None:
            raise
        return Submitted(existing, created=False)
    # A new job has no verdicts or result yet: say so instead of two lazy-load queries per POST.
    set_committed_value(job, "verdicts", [])
    set_committed_value(job, "result", None)
    return Submitted(job, created=True)


def cancel_job(*, session: Session, job_id: str) -> Job:
    """A queued job is cancelled at once; a running one is flagged, and its worker stops before its next ACT
    step (the heartbeat reads the flag). 404 for no such job, 409 for a finished one."""
    job = get_or_404(session, Job, job_id, "job")
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
