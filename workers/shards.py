"""Puzzle shards: one job's probe puzzles run on several Celery workers and reduced exactly.

A job with `options.shards` > 1 under the Celery executor:
1. The task that claimed the job (`fan_out`) loads the probe, cuts it into contiguous ranges on batch
   boundaries, inserts one `job_shards` row per range (idempotent: unique (job_id, index)), hands the
   job's lease to the shards (owner `SHARDS_OWNER`) and sends one message per shard.
2. A shard task (`run_shard`) claims its row under a lease, exactly like a job. It builds the candidates
   from the whole probe (calibration sees the puzzles an unsharded run sees), runs `run_partial` on its
   range and stores the partial. Its heartbeat renews its own lease and the job's, writes the job's
   progress (puzzles done over all shards) and reads cancellation.
3. Whoever stores the last partial merges the partials in shard order, finishes, judges, and stores
   the one result + verdicts + webhook events with `pipeline.judge_and_store`; the job's unique
   constraints keep it one however many workers race to it. `models/trajectory.py` says why the merged
   result equals the single run's bit for bit.

A lost worker: its shard's lease expires and the shard is claimable again. A worker that completes a
shard re-sends expired siblings; once no shard beats any more, the job's own lease expires, the API's
dispatcher re-sends the job and `fan_out` re-sends the unfinished shards (or reduces, when all are done).
Cancellation: shards stop at their next batch and the first to notice marks the job cancelled. A
deterministic failure in any shard fails the job. The embedded executor's worker processes do the same
without a broker: `send` does nothing and they poll for shards (`next_shard`) before jobs.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from carrygate.models.evaluate import Probe, build_candidates, decide_compile, measure
from carrygate.models.trajectory import Candidate, Partial, finish, merge, run_partial
from carrygate.models.vocabulary import Numerics
from carrygate.store.leases import JOBS, MAX_ATTEMPTS, SHARDS, now
from carrygate.store.tables import Job, JobShard
from carrygate.store.vocabulary import ShardStatus
from carrygate.workers.calibrations import active_calibration
from carrygate.workers.context import Deadline, Heartbeat, JobFailed, WorkerContext
from carrygate.workers.pipeline import (
    JobInputs,
    attach_artifacts,
    fail_crashed,
    finish_job,
    judge_and_store,
    load_job,
    load_model_and_probe,
    run_job,
)
from carrygate.workers.queue import JobOutcome

log = logging.getLogger(__name__)

SHARDS_OWNER = "shards"
"""The job's lease owner while its shards run: whichever shard worker settles the job acts under this name."""

SendShard = Callable[[str], None]
ShardOutcome = Literal[JobOutcome, "done"]
"""What running a shard returns: `done` (stored its partial), `skipped` / `lost` as for a job, or the job's
outcome when this shard's worker settled the job (reduced it, failed it, saw it cancelled)."""


def shard_ranges(total: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) puzzle ranges on batch boundaries, as even as whole batches allow."""
    n_batches = -(-total // batch_size)
    n = min(shards, n_batches)
    if n == 0:
        return []
    cuts = [i * n_batches // n * batch_size for i in range(n)] + [total]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def is_sharded(session: Session, job_id: str) -> bool:
    options = session.execute(select(Job.options).where(Job.id == job_id)).scalar_one_or_none() or {}
    return int(options.get("shards", 1)) > 1


def claim_shard(session: Session, shard_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Claim a shard of a running, not cancelled job, if it is queued or its worker's lease expired."""
    at = now()
    live_jobs = select(Job.id).where(Job.status == "running", Job.cancel_requested.is_(False))
    claimed = SHARDS.claim(session, shard_id, worker_id, lease_seconds, at=at, values={"puzzles_done": 0},
                           where=(JobShard.attempts < MAX_ATTEMPTS, JobShard.job_id.in_(live_jobs)))
    session.commit()
    return claimed


def next_shard(session: Session) -> str | None:
    """A claimable shard of a running job, if any: the embedded executor polls for shards (Celery sends them)."""
    live_jobs = select(Job.id).where(Job.status == "running", Job.cancel_requested.is_(False))
    query = (select(JobShard.id).where(SHARDS.claimable(now()), JobShard.attempts < MAX_ATTEMPTS, JobShard.job_id.in_(live_jobs))
             .order_by(JobShard.index).limit(1))
    return session.execute(query).scalar_one_or_none()


def _settle_shard(ctx: WorkerContext, shard_id: str, status: ShardStatus, **values: Any) -> bool:
    """Set a shard's end state if this worker still holds it."""
    with ctx.session_factory() as session:
        done = SHARDS.settle(session, shard_id, ctx.worker_id, status, **values)
        session.commit()
    return done


def _release_shard(ctx: WorkerContext, shard_id: str) -> bool:
    """Give the shard back to the queue (an infrastructure error: the task retries)."""
    with ctx.session_factory() as session:
        released = SHARDS.release(session, shard_id, ctx.worker_id)
        session.commit()
    return released


def _shards_of(ctx: WorkerContext, job_id: str) -> list[JobShard]:
    with ctx.session_factory() as session:
        rows = list(session.execute(select(JobShard).where(JobShard.job_id == job_id).order_by(JobShard.index)).scalars())
        session.expunge_all()
    return rows


class _ShardHeartbeat(Heartbeat):
    """Renews the shard's lease and the job's, adds the shard's progress to the job's, reads cancellation."""

    def __init__(self, ctx: WorkerContext, shard_id: str, job_id: str) -> None:
        super().__init__(ctx, job_id)
        self.shard_id = shard_id
        self.done: int | None = None

    def beat(self) -> None:
        with self.ctx.session_factory() as session:
            mine = SHARDS.renew(session, self.shard_id, self.ctx.worker_id, self.ctx.lease_seconds,
                                {} if self.done is None else {"puzzles_done": self.done})
            all_done = select(func.coalesce(func.sum(JobShard.puzzles_done), 0)).where(JobShard.job_id == self.job_id)
            done = session.execute(all_done).scalar_one()
            status, cancel, total = session.execute(select(Job.status, Job.cancel_requested, Job.puzzles_total)
                                                    .where(Job.id == self.job_id)).one()
            JOBS.renew(session, self.job_id, SHARDS_OWNER, self.ctx.lease_seconds,
                       {"puzzles_done": done, "progress": min(1.0, done / total) if total else 0.0})
            session.commit()
        if cancel:
            self.cancelled.set()
        if not mine or status != "running":
            self.lost.set()


def fan_out(job_id: str, ctx: WorkerContext, send: SendShard) -> JobOutcome:
    """Called by the worker that claimed a sharded job: create its shards (once), hand the job's lease to
    them and send every unfinished one. Returns "sharded", or the job's status when it ended here."""
    inputs = load_job(ctx, job_id)
    if not _shards_of(ctx, job_id):
        try:
            with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as workdir:
                probe = load_model_and_probe(inputs, ctx, Path(workdir))[1]
        except JobFailed as err:
            return finish_job(ctx, job_id, "failed", str(err))
        ranges = shard_ranges(len(probe), inputs.batch_size, int(inputs.options.get("shards", 1)))
        if len(ranges) < 2:
            return run_job(job_id, ctx)
        with ctx.session_factory() as session:
            session.add_all(JobShard(job_id=job_id, index=i, puzzle_start=a, puzzle_stop=b) for i, (a, b) in enumerate(ranges))
            session.execute(update(Job).where(Job.id == job_id).values(puzzles_total=len(probe), puzzles_done=0)
                            .execution_options(synchronize_session=False))
            try:
                session.commit()
            except IntegrityError:  # a duplicate message's fan-out created them first
                session.rollback()
    with ctx.session_factory() as session:
        handed = JOBS.renew(session, job_id, ctx.worker_id, ctx.lease_seconds, {"lease_owner": SHARDS_OWNER})
        session.commit()
    if not handed:
        return "lost"
    shards = _shards_of(ctx, job_id)
    if all(s.status == "done" for s in shards):  # the last shard's worker died before it reduced
        return _reduce_fresh(job_id, ctx, inputs)
    at = now()
    for shard in shards:
        if shard.status == "queued" or SHARDS.expired(shard, at):
            send(shard.id)
    return "sharded"


def run_shard(shard_id: str, ctx: WorkerContext, send: SendShard) -> ShardOutcome:
    """Claim and run one shard; the worker that stores the last partial reduces. Returns the shard's outcome."""
    with ctx.session_factory() as session:
        if not claim_shard(session, shard_id, ctx.worker_id, ctx.lease_seconds):
            return "skipped"
        shard = session.get_one(JobShard, shard_id)
        job_id, index, start, stop = shard.job_id, shard.index, shard.puzzle_start, shard.puzzle_stop
    owner = replace(ctx, worker_id=SHARDS_OWNER)  # settles the job on behalf of all its shards
    beat = _ShardHeartbeat(ctx, shard_id, job_id)
    beat.start()
    deadline = Deadline(ctx.limits.max_seconds)  # CARRYGATE_MAX_JOB_SECONDS, per shard run as per job run
    try:
        inputs = load_job(ctx, job_id)
        with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as workdir:
            ckpt, probe = load_model_and_probe(inputs, ctx, Path(workdir))
            candidates = _build(inputs, ckpt.model, probe, Path(workdir))

            def progress(k: int) -> None:
                beat.done = (beat.done or 0) + k

            numerics, compiled = _engine(inputs, ckpt.model, candidates, probe)
            partial = run_partial(ckpt.model, candidates, probe.batches(inputs.batch_size, start, stop), on_batch=progress,
                                  should_stop=lambda: beat.cancelled.is_set() or beat.lost.is_set() or deadline.passed(),
                                  halting=inputs.options.get("halting"), numerics=numerics, compile_steps=compiled)
            beat.beat()
            if deadline.passed():  # stopped early: a partial of part of the shard must not be merged
                raise JobFailed(deadline.reason())
            if beat.lost.is_set():
                return "lost"
            if beat.cancelled.is_set():
                _settle_shard(ctx, shard_id, "cancelled")
                return finish_job(owner, job_id, "cancelled", "cancelled by request")
            if not _settle_shard(ctx, shard_id, "done", partial=partial.to_json(), puzzles_done=partial.puzzles):
                return "lost"
            shards = _shards_of(ctx, job_id)
            if all(s.status == "done" for s in shards):
                return _reduce(owner, job_id, inputs, shards, ckpt.model, candidates, probe, Path(workdir))
        at = now()
        for sibling in shards:  # a sibling whose worker died need not wait for the job's lease to run out
            if SHARDS.expired(sibling, at):
                send(sibling.id)
        return "done"
    except JobFailed as err:
        _settle_shard(ctx, shard_id, "failed", error=str(err))
        return finish_job(owner, job_id, "failed", f"shard {index}: {err}")
    except DBAPIError:  # infrastructure: give the shard back, the task retries
        try:
            _release_shard(ctx, shard_id)
        except DBAPIError:
            pass  # its lease runs out instead
        raise
    except Exception as err:  # a bug or resource failure: the job fails (not retried), the worker lives on
        log.exception("shard %s of job %s crashed", index, job_id)
        _settle_shard(ctx, shard_id, "failed", error=f"{type(err).__name__}: {err}"[:1000])
        return fail_crashed(owner, job_id, err)
    finally:
        beat.stop()


def _build(inputs: JobInputs, reference: Any, probe: Probe, workdir: Path) -> list[Candidate]:
    try:
        return build_candidates(reference, [spec for _, _, spec in inputs.candidates], probe, inputs.batch_size, workdir / "artifacts")
    except ValueError as err:  # a spec that does not fit the architecture
        raise JobFailed(str(err)) from err


def _engine(inputs: JobInputs, reference: Any, candidates: list[Candidate], probe: Probe) -> tuple[Numerics, bool]:
    """The job's numerics and whether its steps compile, decided from the whole probe, so every shard rounds alike."""
    numerics: Numerics = inputs.options.get("numerics", "fast")
    return numerics, decide_compile(reference, len(candidates), len(probe), numerics, None)


def _reduce(owner: WorkerContext, job_id: str, inputs: JobInputs, shards: list[JobShard], reference: Any, candidates: list[Candidate],
            probe: Probe, workdir: Path) -> JobOutcome:
    """Merge the shards' partials in puzzle order, finish, measure, judge and store the job's one result."""
    partials = [Partial.from_json(s.partial or {}) for s in shards]
    result = finish(merge(partials), candidates)
    result.numerics, result.compiled = _engine(inputs, reference, candidates, probe)
    measure(result, reference, candidates, probe, calibration=active_calibration(owner.session_factory))
    attach_artifacts(owner, result, reference, probe, inputs.options, workdir)
    return judge_and_store(owner, job_id, result, inputs)


def _reduce_fresh(job_id: str, ctx: WorkerContext, inputs: JobInputs) -> JobOutcome:
    owner = replace(ctx, worker_id=SHARDS_OWNER)
    try:
        with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as workdir:
            ckpt, probe = load_model_and_probe(inputs, ctx, Path(workdir))
            candidates = _build(inputs, ckpt.model, probe, Path(workdir))
            return _reduce(owner, job_id, inputs, _shards_of(ctx, job_id), ckpt.model, candidates, probe, Path(workdir))
    except JobFailed as err:
        return finish_job(owner, job_id, "failed", str(err))
