"""Recommendations: submit a budgeted search (idempotent), list, read with progress and the result, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status

from carrygate.app.deps import SessionDep, SettingsDep
from carrygate.app.schemas import (
    Progress,
    RecommendationCreate,
    RecommendationList,
    RecommendationRead,
    RecommendationVerdict,
    RecommendedSpec,
)
from carrygate.app.services import recommendations
from carrygate.store.tables import Job
from carrygate.store.vocabulary import JobStatus

router = APIRouter(tags=["recommendations"])


def recommendation_read(job: Job, request: Request, with_result: bool = True) -> RecommendationRead:
    options = dict(job.options or {})
    budget, tolerance = options.pop("budget", {}), options.pop("tolerance", {})
    read = RecommendationRead(
        id=job.id, url=str(request.url_for("get_recommendation", recommendation_id=job.id)), status=job.status,
        progress=Progress(fraction=job.progress, stage=job.stage), attempts=job.attempts, error=job.error, checkpoint_id=job.checkpoint_id,
        budget=budget, tolerance=tolerance, policy=job.policy, options=options, tags=job.tags, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at)
    found = recommendations.stored(job) if with_result else None
    if found is None:
        return read
    rec = found.recommendation
    chosen = rec.chosen
    return read.model_copy(update={
        "recommended": RecommendedSpec(name=chosen.name, spec=chosen.spec, yaml=found.spec_yaml or "", finalist=chosen) if chosen else None,
        "verdict": RecommendationVerdict.model_validate(found.verdict) if found.verdict else None,
        "front": [p for p in rec.points if p.on_front], "sensitivity": rec.sensitivity, "finalists": rec.finalists, "notes": rec.notes,
        "evaluations": rec.evaluations, "result": found.body.get("recommendation")})


@router.post("/recommendations", status_code=status.HTTP_202_ACCEPTED, response_model=RecommendationRead,
             responses={200: {"description": "a recommendation with this Idempotency-Key exists"},
                        404: {"description": "unknown checkpoint"},
                        409: {"description": "the Idempotency-Key names an evaluation job"},
                        422: {"description": "malformed request (a budget needs exactly one bound), a probe path outside the "
                                              "register roots, or a search over the compute budget (CARRYGATE_MAX_JOB_GFLOP)"}})
def create_recommendation(
    body: RecommendationCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> RecommendationRead:
    """Queue a search for the cheapest spec within the budget whose label-free damage stays within the
    tolerance (`carrygate recommend`). Returns 202 with its URL in `Location`."""
    submitted = recommendations.create_recommendation(session=session, body=body, settings=settings, idempotency_key=idempotency_key)
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = str(request.url_for("get_recommendation", recommendation_id=submitted.job.id))
    return recommendation_read(submitted.job, request)


@router.get("/recommendations", response_model=RecommendationList)
def list_recommendations(request: Request, session: SessionDep, status: JobStatus | None = None, checkpoint_id: str | None = None,
                         tag: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                         offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> RecommendationList:
    """Newest first; results are left out of listings (read one recommendation for its result)."""
    page = recommendations.list_recommendations(session=session, status=status, checkpoint_id=checkpoint_id, tag=tag, limit=limit,
                                                offset=offset)
    return RecommendationList(data=[recommendation_read(j, request, with_result=False) for j in page.rows], count=page.count)


@router.get("/recommendations/{recommendation_id}", response_model=RecommendationRead,
            responses={404: {"description": "no such recommendation"}})
def get_recommendation(recommendation_id: str, request: Request, session: SessionDep) -> RecommendationRead:
    """Status and progress while it runs; once succeeded, the front, the sensitivity map, the recommended
    spec (also as YAML) and its verdict."""
    return recommendation_read(recommendations.get_recommendation(session=session, recommendation_id=recommendation_id), request)


@router.post("/recommendations/{recommendation_id}/cancel", response_model=RecommendationRead,
             responses={404: {}, 409: {"description": "already finished"}})
def cancel_recommendation(recommendation_id: str, request: Request, session: SessionDep) -> RecommendationRead:
    """A queued search is cancelled at once; a running one stops after its current round of evaluations."""
    return recommendation_read(recommendations.cancel_recommendation(session=session, recommendation_id=recommendation_id), request)
