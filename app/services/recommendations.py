"""Recommendations: a `recommend` job row (the jobs table's `kind`), its checks at submission, reading it back.

A recommendation is a job of kind "recommend": the same queue, leases, cancellation, progress and webhook
outbox as an evaluation (`workers/recommend.py` runs it). Its budget, tolerance and search size are the
row's `options`, its gate policy the row's `policy`, and its result the `Recommendation` document.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from carrygate.app.errors import Unprocessable, get_or_404
from carrygate.app.schemas import BuilderProbe, RecommendationCreate
from carrygate.app.services.jobs import Submitted, by_key, cancel_job, config_of, get_job, insert_once, list_jobs, probe_row
from carrygate.app.services.pages import Page
from carrygate.app.settings import Settings
from carrygate.models.budget import describe_recommend_cost, recommend_cost
from carrygate.models.recommend.results import Recommendation
from carrygate.store.tables import Checkpoint, Job
from carrygate.store.vocabulary import JobStatus

__all__ = ["Stored", "cancel_recommendation", "create_recommendation", "get_recommendation", "list_recommendations", "stored"]

log = logging.getLogger(__name__)


def _check_budget(body: RecommendationCreate, checkpoint: Checkpoint, settings: Settings) -> None:
    """Refuse (422) a search whose estimated cost exceeds CARRYGATE_MAX_JOB_GFLOP (the worker checks again
    with the real probe size); without `options.limit` a dataset probe counts as `search_puzzles` puzzles."""
    config = config_of(checkpoint)
    if config is None:
        return
    search = body.options.search_puzzles
    if isinstance(body.probe, BuilderProbe):
        puzzles = min(body.probe.size, body.options.limit or body.probe.size)
    else:
        puzzles = body.options.limit or search
    cost = recommend_cost(config, search, puzzles)
    if cost.gflop > settings.max_job_gflop:
        raise Unprocessable(f"compute budget: {describe_recommend_cost(cost, search, settings.max_job_gflop)}")


def create_recommendation(*, session: Session, body: RecommendationCreate, settings: Settings,
                          idempotency_key: str | None = None) -> Submitted:
    """Queue a recommendation search: the checkpoint must exist, the probe's folder lie under the register
    roots, and the estimated search fit the compute budget. The same Idempotency-Key returns what it created."""
    existing = by_key(session, idempotency_key, "recommend")
    if existing is not None:
        return Submitted(existing, created=False)
    checkpoint = get_or_404(session, Checkpoint, body.checkpoint_id, "checkpoint")
    _check_budget(body, checkpoint, settings)
    options = body.options.model_dump(mode="json") | {"budget": body.budget.model_dump(mode="json", exclude_none=True),
                                                      "tolerance": body.tolerance.model_dump(mode="json", exclude_none=True)}
    job = Job(kind="recommend", checkpoint_id=checkpoint.id, probe_set=probe_row(body, settings, checkpoint.storage_path),
              policy=body.policy.model_dump(mode="json"), options=options, tags=body.tags, idempotency_key=idempotency_key,
              candidates=[], stage="queued")
    return insert_once(session, job)


def get_recommendation(*, session: Session, recommendation_id: str) -> Job:
    """The recommendation's job row, or a 404 (an evaluation's id too)."""
    return get_job(session=session, job_id=recommendation_id, kind="recommend")


def cancel_recommendation(*, session: Session, recommendation_id: str) -> Job:
    """As `cancel_job`: queued -> cancelled at once; running -> stops after the search's current evaluation round."""
    return cancel_job(session=session, job_id=recommendation_id, kind="recommend")


def list_recommendations(*, session: Session, status: JobStatus | None, checkpoint_id: str | None, tag: str | None,
                         limit: int, offset: int) -> Page[Job]:
    """Newest first, filtered (results are not loaded)."""
    return list_jobs(session=session, status=status, checkpoint_id=checkpoint_id, tag=tag, limit=limit, offset=offset, kind="recommend")


@dataclass(frozen=True)
class Stored:
    """A finished recommendation's result document, read back."""

    recommendation: Recommendation
    spec_yaml: str | None
    verdict: dict[str, Any] | None
    body: dict[str, Any]


def stored(job: Job) -> Stored | None:
    """The job's stored result as the `Recommendation` it was written from; None without one (or, logged,
    with one this version no longer reads)."""
    if job.result is None:
        return None
    body = job.result.body
    try:
        rec = Recommendation.model_validate(body.get("recommendation"))
    except ValidationError as err:
        log.warning("recommendation %s: stored result is not a Recommendation this version reads: %s", job.id, err)
        return None
    return Stored(rec, body.get("spec_yaml"), body.get("verdict"), body)

