"""The dashboard's reads: the queries behind its pages, and stored results validated into `EvaluationResult`.

The pages (`app/dashboard/`) shape what these return into tables and Plotly traces and run no SQL
themselves. A stored result document is read once, here, into the typed `EvaluationResult` the worker
wrote it from (`models/results.py`), so no page parses it field by field. Nothing here writes.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from carrygate.models.results import EvaluationResult
from carrygate.store.tables import Checkpoint, Job, Verdict
from carrygate.store.vocabulary import JobKind, JobStatus

log = logging.getLogger(__name__)


def load_jobs(*, session: Session, status: JobStatus | None = None, checkpoint_id: str | None = None,
              since: datetime | None = None, until: datetime | None = None, with_result: bool = True,
              limit: int | None = None, kind: JobKind = "evaluate") -> list[Job]:
    """Jobs of one kind (evaluations unless told), newest first, with what the pages read loaded up front;
    `with_result=False` leaves the result documents (curves and per-puzzle arrays, the bulk of the data) unread."""
    options = [selectinload(Job.checkpoint), selectinload(Job.probe_set), selectinload(Job.candidates),
               selectinload(Job.verdicts).selectinload(Verdict.candidate)]
    if with_result:  # otherwise left unloaded (not noload: a later query in the same session must still be able to load it)
        options.append(selectinload(Job.result))
    query = select(Job).options(*options).where(Job.kind == kind)
    if status is not None:
        query = query.where(Job.status == status)
    if checkpoint_id is not None:
        query = query.where(Job.checkpoint_id == checkpoint_id)
    if since is not None:
        query = query.where(Job.created_at >= since)
    if until is not None:
        query = query.where(Job.created_at < until)
    query = query.order_by(Job.created_at.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).scalars())


def recent_jobs(*, session: Session, limit: int = 20) -> list[Job]:
    """The newest jobs of any status, with their checkpoint and verdicts."""
    return list(session.execute(select(Job).options(selectinload(Job.checkpoint), selectinload(Job.verdicts))
                                .order_by(Job.created_at.desc()).limit(limit)).scalars())


def recommendation_job(*, session: Session, job_id: str) -> Job | None:
    """A `POST /recommendations` job with its checkpoint and stored result, or None (also for an evaluation's id)."""
    job = session.get(Job, job_id, options=[selectinload(Job.checkpoint), selectinload(Job.result)])
    return job if job is not None and job.kind == "recommend" else None


def job_with_verdicts(*, session: Session, job_id: str) -> Job | None:
    """The job with its verdicts (and their candidates) loaded, or None."""
    return session.get(Job, job_id, options=[selectinload(Job.verdicts).selectinload(Verdict.candidate)])


def find_checkpoint(*, session: Session, checkpoint_id: str) -> Checkpoint | None:
    return session.get(Checkpoint, checkpoint_id)


def list_checkpoints(*, session: Session, newest_first: bool = True) -> list[Checkpoint]:
    """Every checkpoint, by registration time."""
    order = Checkpoint.created_at.desc() if newest_first else Checkpoint.created_at
    return list(session.execute(select(Checkpoint).order_by(order)).scalars())


def stored_result(job: Job) -> EvaluationResult | None:
    """The job's result document as the `EvaluationResult` it was stored from; None when the job has no
    result, or one this version no longer reads (logged, and the pages show the job without it)."""
    if job.result is None:
        return None
    try:
        return EvaluationResult.model_validate(job.result.body)
    except ValidationError as err:
        log.warning("job %s: stored result is not an EvaluationResult this version reads: %s", job.id, err)
        return None
